/**
 * What identifies a file on disk without reading it: any rewrite, replacement or rename changes
 * it. Times are kept to the nanosecond, as the kernel has them, and written the way GNU
 * `stat -c '%d %i %s %.9Y %.9Z'` prints them, so that the sh front-ends in bin/ compare the very
 * same identity without starting Node.
 */
import type { BigIntStats } from 'node:fs';

export interface FileIdentity {
  readonly dev: string;
  readonly ino: string;
  readonly size: number;
  /** Seconds since the epoch with nine decimals. */
  readonly mtime: string;
  readonly ctime: string;
}

export function fileIdentity(stat: BigIntStats): FileIdentity {
  return { dev: String(stat.dev), ino: String(stat.ino), size: Number(stat.size), mtime: seconds(stat.mtimeNs), ctime: seconds(stat.ctimeNs) };
}

function seconds(ns: bigint): string {
  return `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`;
}

export function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtime === b.mtime && a.ctime === b.ctime;
}

/** The identity as `stat -c '%d %i %s %.9Y %.9Z'` prints it. */
export function statLine(id: FileIdentity): string {
  return `${id.dev} ${id.ino} ${id.size} ${id.mtime} ${id.ctime}`;
}
