/**
 * What the unit tests over the in-memory driver share: segments synthesized as PostgreSQL writes
 * them (a first page's long header, then zeros; 1 MiB, the smallest size PostgreSQL allows), and
 * a logger that keeps its lines.
 */
import type { Logger } from '../../src/log.js';

export const SEGMENT = 1024 * 1024;

/** The segment `name` of the cluster `systemId`. */
export function segmentBytes(name: string, systemId: bigint): Buffer {
  const buf = Buffer.alloc(SEGMENT);
  const segno = BigInt(parseInt(name.slice(8, 16), 16)) * (0x1_0000_0000n / BigInt(SEGMENT)) + BigInt(parseInt(name.slice(16, 24), 16));
  buf.writeUInt16LE(0xd110, 0); // PostgreSQL 15's page magic
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(parseInt(name.slice(0, 8), 16), 4); // timeline
  buf.writeBigUInt64LE(segno * BigInt(SEGMENT), 8); // page address
  buf.writeBigUInt64LE(systemId, 24);
  buf.writeUInt32LE(SEGMENT, 32);
  buf.writeUInt32LE(8192, 36); // WAL block size
  return buf;
}

/** A logger that keeps every line as `level: message`. */
export function keptLines(): Logger & { all: string[] } {
  const all: string[] = [];
  const add = (level: string) => (message: string) => void all.push(`${level}: ${message}`);
  return { all, info: add('info'), warn: add('warn'), error: add('error') };
}
