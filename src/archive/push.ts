/**
 * archive_command: store one finished WAL file, and succeed only when the store holds exactly
 * these bytes under its name. PostgreSQL deletes or recycles the file once we exit 0, so a
 * false success loses WAL; a false failure only makes the archiver try again.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describeContent, seal } from '../codec/envelope.js';
import { sha256Hex } from '../codec/hash.js';
import type { CodecName } from '../codec/compression.js';
import { WalbridgeError } from '../errors.js';
import { formatBytes, type Logger } from '../log.js';
import type { ObjectInfo, Store } from '../storage/store.js';
import { dataDirOfWalPath, readControlSystemIdentifier } from '../wal/datadir.js';
import { headerMismatch, parseLongPageHeader, type LongPageHeader } from '../wal/header.js';
import { parseWalFileName, type WalFileName } from '../wal/names.js';
import { clusterMismatch, establishIdentity, identityFromHeader, loadIdentity, type ClusterIdentity } from './identity.js';
import { walFileKey } from './layout.js';

export interface PushContext {
  readonly store: Store;
  readonly namespace: string;
  readonly codec: CodecName;
  readonly level: number | undefined;
  readonly log: Logger;
}

export type PushOutcome = 'archived' | 'already-archived';

export async function pushWalFile(ctx: PushContext, sourcePath: string): Promise<PushOutcome> {
  const started = Date.now();
  const name = path.basename(sourcePath);
  const file = parseWalFileName(name);
  if (!file) {
    throw new WalbridgeError(
      'badName',
      `refusing ${JSON.stringify(name)}: not a WAL file name (a segment, .partial, .history or .backup file)`,
    );
  }
  const data = await readSource(sourcePath);
  const header = file.kind === 'segment' || file.kind === 'partial' ? checkSegment(data, file) : undefined;

  const key = walFileKey(ctx.namespace, file);
  const [identity, existing] = await Promise.all([loadIdentity(ctx.store, ctx.namespace), ctx.store.head(key)]);
  await checkCluster(ctx, identity, header, file, sourcePath);

  if (existing) return confirmDuplicate(ctx, existing, sha256Hex(data), data.length, file);

  const sealed = await seal(data, ctx.codec, ctx.level);
  if (!identity && header) {
    // First segment of this namespace: record whose it is (or learn another writer beat us to it).
    const recorded = await establishIdentity(ctx.store, ctx.namespace, identityFromHeader(header, name));
    await checkCluster(ctx, recorded, header, file, sourcePath);
  }
  const outcome = await ctx.store.putIfAbsent(key, sealed);
  // Do not trust the precondition alone: read back what the store now holds under the name.
  const stored = await ctx.store.head(key);
  const promised = stored ? describeContent(stored.metadata) : 'it is absent';
  if (typeof promised === 'string' || promised.sha256 !== sealed.sha256 || promised.size !== data.length) {
    if (outcome === 'exists' && stored) return confirmDuplicate(ctx, stored, sealed.sha256, data.length, file);
    throw new WalbridgeError(
      'storeError',
      `${name}: after storing, ${ctx.store.location} does not hold the object we wrote (${typeof promised === 'string' ? promised : 'different content hash'})`,
    );
  }
  if (outcome === 'exists') return confirmDuplicate(ctx, stored!, sealed.sha256, data.length, file);
  ctx.log.info(
    `archived ${name} (${formatBytes(data.length)}, stored ${formatBytes(sealed.body.length)} ${ctx.codec}) in ${Date.now() - started} ms`,
  );
  return 'archived';
}

async function readSource(sourcePath: string): Promise<Buffer> {
  try {
    return await readFile(sourcePath);
  } catch (err) {
    throw new WalbridgeError('localIo', `cannot read ${sourcePath}: ${(err as Error).message}`);
  }
}

/** A segment must carry a long page header that matches its name, and be exactly one segment long. */
function checkSegment(data: Buffer, file: WalFileName): LongPageHeader {
  const header = parseLongPageHeader(data);
  if (typeof header === 'string') throw new WalbridgeError('notWal', `refusing ${file.name}: not a WAL segment (${header})`);
  if (data.length !== header.segmentSize) {
    throw new WalbridgeError(
      'notWal',
      `refusing ${file.name}: it is ${data.length} bytes, but its cluster's segments are ${header.segmentSize} bytes (a truncated or padded copy?)`,
    );
  }
  const mismatch = headerMismatch(header, file);
  if (mismatch) throw new WalbridgeError('notWal', `refusing ${file.name}: ${mismatch} (a renamed file?)`);
  return header;
}

async function checkCluster(
  ctx: PushContext,
  identity: ClusterIdentity | undefined,
  header: LongPageHeader | undefined,
  file: WalFileName,
  sourcePath: string,
): Promise<void> {
  if (!identity) return;
  if (header) {
    const mismatch = clusterMismatch(identity, header, ctx.namespace);
    if (mismatch) throw new WalbridgeError('foreignCluster', `refusing ${file.name}: ${mismatch}`);
    return;
  }
  // .history and .backup files carry no header; pg_control next to pg_wal says whose they are.
  const dataDir = dataDirOfWalPath(sourcePath);
  const systemIdentifier = dataDir && (await readControlSystemIdentifier(dataDir));
  if (systemIdentifier && systemIdentifier !== identity.systemIdentifier) {
    throw new WalbridgeError(
      'foreignCluster',
      `refusing ${file.name}: it comes from the cluster with system identifier ${systemIdentifier} (${dataDir}), but namespace "${ctx.namespace}" belongs to system identifier ${identity.systemIdentifier}`,
    );
  }
}

/** PostgreSQL may push a file again after a crash: identical content is success, anything else is not. */
function confirmDuplicate(ctx: PushContext, existing: ObjectInfo, sha256: string, size: number, file: WalFileName): PushOutcome {
  const promised = describeContent(existing.metadata);
  if (typeof promised === 'string') {
    throw new WalbridgeError('conflict', `refusing ${file.name}: ${ctx.store.location} already holds an object under this name and ${promised}; it was left untouched`);
  }
  if (promised.size !== size || promised.sha256 !== sha256) {
    throw new WalbridgeError(
      'conflict',
      `refusing ${file.name}: different content is already archived under this name (stored ${promised.size} bytes sha256 ${promised.sha256.slice(0, 12)}…); the stored object was left untouched. Two primaries writing to namespace "${ctx.namespace}"?`,
    );
  }
  ctx.log.info(`${file.name} is already archived with identical content; nothing to do`);
  return 'already-archived';
}
