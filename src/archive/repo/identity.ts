/**
 * A namespace belongs to one cluster. The first segment pushed into it records the cluster's
 * identity (from the segment's long page header); every later file is checked against it, so
 * WAL of two clusters can never mix under one namespace.
 */
import type { FileHandle } from 'node:fs/promises';
import { WalbridgeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { LONG_HEADER_SIZE, describeMagic, headerMismatch, parseLongPageHeader, type LongPageHeader } from '../../wal/header.js';
import type { WalFileName } from '../../wal/names.js';
import type { Store } from '../../storage/store.js';
import { identityKey } from './layout.js';

export interface ClusterIdentity {
  readonly format: 1;
  readonly systemIdentifier: string;
  readonly segmentSize: number;
  readonly blockSize: number;
  /** The WAL page magic, which names the PostgreSQL major version. */
  readonly walPageMagic: number;
  readonly pgVersion: string | null;
  readonly createdAt: string;
  /** The file whose header the identity was taken from. */
  readonly recordedFrom: string;
}

export function identityFromHeader(header: LongPageHeader, fileName: string): ClusterIdentity {
  return {
    format: 1,
    systemIdentifier: header.systemIdentifier,
    segmentSize: header.segmentSize,
    blockSize: header.blockSize,
    walPageMagic: header.magic,
    pgVersion: header.pgVersion ?? null,
    createdAt: new Date().toISOString(),
    recordedFrom: fileName,
  };
}

/** Why `header` does not belong to the namespace's cluster, or undefined if it does. */
export function clusterMismatch(identity: ClusterIdentity, header: LongPageHeader, namespace: string): string | undefined {
  if (header.systemIdentifier !== identity.systemIdentifier) {
    return `it belongs to the cluster with system identifier ${header.systemIdentifier}, but namespace "${namespace}" belongs to system identifier ${identity.systemIdentifier}`;
  }
  if (header.magic !== identity.walPageMagic) {
    return `it is ${describeMagic(header.magic)} WAL, but namespace "${namespace}" holds ${describeMagic(identity.walPageMagic)} WAL`;
  }
  if (header.segmentSize !== identity.segmentSize || header.blockSize !== identity.blockSize) {
    return `its segment size ${header.segmentSize} (block ${header.blockSize}) differs from namespace "${namespace}"'s ${identity.segmentSize} (block ${identity.blockSize})`;
  }
  return undefined;
}

/** The namespace's identity, or undefined if nothing was pushed into it yet. */
export async function loadIdentity(store: Store, namespace: string): Promise<ClusterIdentity | undefined> {
  // Loaded when used: checking a spooled segment against an identity must stay light.
  const { readJsonObject } = await import('./json-object.js');
  const value = await readJsonObject(store, identityKey(namespace));
  return value === undefined ? undefined : checkIdentity(value, `${store.location}/${identityKey(namespace)}`);
}

/**
 * Records `candidate` as the namespace's identity unless one exists already; returns the
 * identity that is in force afterwards (ours, or the one another writer recorded first).
 */
export async function establishIdentity(store: Store, namespace: string, candidate: ClusterIdentity): Promise<ClusterIdentity> {
  const { createJsonObject } = await import('./json-object.js');
  if ((await createJsonObject(store, identityKey(namespace), candidate)) === 'created') return candidate;
  const existing = await loadIdentity(store, namespace);
  if (!existing) throw new WalbridgeError('storeError', `${store.location} reported the namespace identity as present, then absent`);
  return existing;
}

function checkIdentity(value: unknown, where: string): ClusterIdentity {
  const v = value as Partial<ClusterIdentity>;
  if (
    v === null ||
    typeof v !== 'object' ||
    v.format !== 1 ||
    typeof v.systemIdentifier !== 'string' ||
    !/^\d+$/.test(v.systemIdentifier) ||
    !Number.isInteger(v.segmentSize) ||
    !Number.isInteger(v.blockSize) ||
    !Number.isInteger(v.walPageMagic)
  ) {
    throw new WalbridgeError('corrupt', `namespace identity ${where} lacks required fields`);
  }
  return v as ClusterIdentity;
}

/** Even a correctly hashed object must be the segment its name says, of the namespace's cluster. */
export async function checkRestoredSegment(
  ctx: { readonly log: Logger; readonly namespace: string },
  fh: FileHandle,
  file: WalFileName,
  identity: ClusterIdentity | undefined,
  where: string,
): Promise<void> {
  const buf = Buffer.alloc(LONG_HEADER_SIZE);
  const { bytesRead } = await fh.read(buf, 0, LONG_HEADER_SIZE, 0);
  const header = parseLongPageHeader(buf.subarray(0, bytesRead));
  if (typeof header === 'string') throw new WalbridgeError('corrupt', `refusing to restore ${file.name}: ${where} is not a WAL segment (${header})`);
  const mismatch = headerMismatch(header, file);
  if (mismatch) throw new WalbridgeError('corrupt', `refusing to restore ${file.name}: ${where}: ${mismatch}`);
  if (!identity) {
    ctx.log.warn(`namespace "${ctx.namespace}" has no identity record; ${file.name} was checked against its own header only`);
    return;
  }
  const foreign = clusterMismatch(identity, header, ctx.namespace);
  if (foreign) throw new WalbridgeError('foreignCluster', `refusing to restore ${file.name}: ${foreign}`);
}
