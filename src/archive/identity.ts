/**
 * A namespace belongs to one cluster. The first segment pushed into it records the cluster's
 * identity (from the segment's long page header); every later file is checked against it, so
 * WAL of two clusters can never mix under one namespace.
 */
import { seal, describeContent } from '../codec/envelope.js';
import { sha256Hex } from '../codec/hash.js';
import { WalbridgeError } from '../errors.js';
import { describeMagic, type LongPageHeader } from '../wal/header.js';
import { StoreError, type Store } from '../storage/store.js';
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
  const key = identityKey(namespace);
  let opened;
  try {
    opened = await store.get(key);
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'not-found') return undefined;
    throw err;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of opened.body) chunks.push(chunk as Buffer);
  const data = Buffer.concat(chunks);
  const promised = describeContent(opened.info.metadata);
  if (typeof promised === 'string' || promised.sha256 !== sha256Hex(data)) {
    throw new WalbridgeError('corrupt', `namespace identity ${key} in ${store.location} is corrupt; inspect it before going on`);
  }
  return parseIdentity(data, `${store.location}/${key}`);
}

/**
 * Records `candidate` as the namespace's identity unless one exists already; returns the
 * identity that is in force afterwards (ours, or the one another writer recorded first).
 */
export async function establishIdentity(store: Store, namespace: string, candidate: ClusterIdentity): Promise<ClusterIdentity> {
  const sealed = await seal(Buffer.from(JSON.stringify(candidate, null, 2) + '\n'), 'none', undefined);
  const outcome = await store.putIfAbsent(identityKey(namespace), sealed);
  if (outcome === 'created') return candidate;
  const existing = await loadIdentity(store, namespace);
  if (!existing) throw new WalbridgeError('storeError', `${store.location} reported the namespace identity as present, then absent`);
  return existing;
}

function parseIdentity(data: Buffer, where: string): ClusterIdentity {
  let value: Partial<ClusterIdentity>;
  try {
    value = JSON.parse(data.toString('utf8')) as Partial<ClusterIdentity>;
  } catch {
    throw new WalbridgeError('corrupt', `namespace identity ${where} is not valid JSON`);
  }
  if (
    value.format !== 1 ||
    typeof value.systemIdentifier !== 'string' ||
    !/^\d+$/.test(value.systemIdentifier) ||
    !Number.isInteger(value.segmentSize) ||
    !Number.isInteger(value.blockSize) ||
    !Number.isInteger(value.walPageMagic)
  ) {
    throw new WalbridgeError('corrupt', `namespace identity ${where} lacks required fields`);
  }
  return value as ClusterIdentity;
}
