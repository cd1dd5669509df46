/**
 * restore_command: hand PostgreSQL exactly the bytes that were archived under a name, or
 * nothing. The destination appears only by an atomic rename of a verified, fsynced temp file
 * in the same directory, so PostgreSQL never sees a partial, corrupt or foreign file.
 */
import { createWriteStream } from 'node:fs';
import { open, rename, unlink, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { CodecUnavailableError } from '../../codec/compression.js';
import { describeContent, unseal } from '../../codec/envelope.js';
import { DecryptionError } from '../../codec/encryption.js';
import { FrameFormatError } from '../../codec/frames.js';
import type { KeyRing } from '../../codec/keys.js';
import { WalbridgeError } from '../../errors.js';
import { fsyncDir } from '../../util/durable.js';
import { trackTempFile, untrackTempFile } from '../../util/temp-files.js';
import { formatBytes, type Logger } from '../../log.js';
import { retryTransient, type RetryPolicy } from '../../storage/retry.js';
import { StoreError, type Store } from '../../storage/store.js';
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import { checkRestoredSegment, loadIdentity, type ClusterIdentity } from '../repo/identity.js';
import { historyPrefix, streamSegmentPrefix, walFileKey } from '../repo/layout.js';
import { chainEnd, chunkName, listChunks, longestPrefixChain, type ChunkRange } from '../repo/stream-chunks.js';
import type { SpoolJobs } from './prefetch.js';

export interface FetchContext {
  readonly store: Store;
  /** The repository's name for local caches (see cli/repository.ts repositoryId). */
  readonly repository: string;
  readonly namespace: string;
  readonly log: Logger;
  readonly retry: RetryPolicy;
  /** Segments to download ahead into the spool (see prefetch.ts); 0 = none. */
  readonly prefetch: number;
  /** Set in the background fetcher: segments go to the spool, for the call to publish (see prefetch.ts). */
  readonly background?: SpoolJobs;
  /**
   * Kept by the background fetcher across calls: a namespace's identity is written once
   * (create-if-absent) and never changes, so it is read from the store only until found.
   */
  readonly identityCache?: { value?: ClusterIdentity };
  /** Keys for encrypted objects. */
  readonly keys: KeyRing | undefined;
}

/** The namespace's identity (undefined while nothing is archived), from the cache when there is one. */
export async function namespaceIdentity(ctx: FetchContext): Promise<ClusterIdentity | undefined> {
  if (ctx.identityCache?.value) return ctx.identityCache.value;
  const identity = await loadIdentity(ctx.store, ctx.namespace);
  if (identity && ctx.identityCache) ctx.identityCache.value = identity;
  return identity;
}

/** One attempt at restoring `file` (transient failures retried): 'absent' if it is not archived. */
export async function restoreIfPresent(
  ctx: FetchContext,
  file: WalFileName,
  destination: string,
  identity: ClusterIdentity | undefined,
  verb = 'restored',
): Promise<'restored' | 'absent'> {
  const started = Date.now();
  const key = walFileKey(ctx.namespace, file);
  // A stream that breaks midway is retried whole.
  const restored = await retryTransient(ctx.retry, `download ${file.name}`, async () => {
    const opened = await openIfPresent(ctx.store, key);
    return opened && downloadVerified(ctx, file, opened, destination, identity);
  });
  if (!restored) return 'absent';
  ctx.log.info(`${verb} ${file.name} (${formatBytes(restored.size)}, stored ${formatBytes(restored.storedSize)}) in ${Date.now() - started} ms`);
  return 'restored';
}

async function openIfPresent(store: Store, key: string) {
  try {
    return await store.get(key);
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'not-found') return undefined;
    throw err;
  }
}

async function downloadVerified(
  ctx: FetchContext,
  file: WalFileName,
  opened: Awaited<ReturnType<Store['get']>>,
  destination: string,
  identity: ClusterIdentity | undefined,
): Promise<{ size: number; storedSize: number }> {
  const where = `${ctx.store.location}/${opened.info.key}`;
  const promised = describeContent(opened.info.metadata);
  if (typeof promised === 'string') {
    opened.body.destroy();
    throw new WalbridgeError('corrupt', `refusing to restore ${file.name}: ${where} cannot be verified: ${promised}`);
  }
  const temp = tempFileFor(file, destination);
  try {
    let seen;
    try {
      seen = await unseal(opened.body, promised, () => createWriteStream(temp, { flags: 'wx', mode: 0o600 }), { fileName: file.name, keys: ctx.keys });
    } catch (err) {
      opened.body.destroy();
      // A driver's body fails with StoreErrors (EIO reading a file:// repository is the store's, not %p's).
      throw classifyStreamError(err, file, where);
    }
    if (seen.size !== promised.size || seen.sha256 !== promised.sha256) {
      throw new WalbridgeError(
        'corrupt',
        `refusing to restore ${file.name}: ${where} is corrupt (got ${seen.size} bytes with sha256 ${seen.sha256.slice(0, 12)}…, metadata promises ${promised.size} bytes with ${promised.sha256.slice(0, 12)}…)`,
      );
    }
    await publish(ctx, file, temp, destination, identity, where);
    return { size: seen.size, storedSize: opened.info.size };
  } finally {
    await unlink(temp).catch(() => undefined);
    untrackTempFile(temp);
  }
}

/** A temp file in the destination's directory, named so that a dead process's can be swept. */
function tempFileFor(file: WalFileName, destination: string): string {
  const temp = path.join(path.dirname(path.resolve(destination)), `.${file.name}.walbridge-${process.pid}-${randomBytes(4).toString('hex')}`);
  trackTempFile(temp);
  return temp;
}

/** Checks a complete temp file (a segment's header and cluster), makes it durable and renames it to `destination`. */
async function publish(ctx: FetchContext, file: WalFileName, temp: string, destination: string, identity: ClusterIdentity | undefined, where: string): Promise<void> {
  const fh = await open(temp, 'r');
  try {
    if (file.kind === 'segment' || file.kind === 'partial') await checkRestoredSegment(ctx, fh, file, identity, where);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(temp, destination);
    await fsyncDir(path.dirname(path.resolve(destination)));
  } catch (err) {
    throw new WalbridgeError('localIo', `cannot publish ${destination}: ${(err as Error).message}`, { cause: err });
  }
}

/** The verified-to-be-contiguous chunks `walbridge stream` left of a segment never archived whole (empty: none). */
export async function streamedChain(ctx: FetchContext, file: WalFileName, identity: ClusterIdentity | undefined): Promise<(ChunkRange & { key: string })[]> {
  if (file.kind !== 'segment' || !identity) return [];
  const chain = longestPrefixChain((await listChunks(ctx.store, ctx.namespace, file.name)).filter((c) => c.end <= identity.segmentSize));
  if (chain.length === 0) return chain;
  // A newer timeline may have forked off inside the streamed part: PostgreSQL, asking for this
  // timeline's segment after the newer one's, would replay records the fork left behind.
  for await (const object of ctx.store.list(historyPrefix(ctx.namespace))) {
    const history = parseWalFileName(object.key.slice(object.key.lastIndexOf('/') + 1));
    if (history?.kind === 'history' && history.timeline > file.timeline) {
      ctx.log.warn(`not using the streamed part of ${file.name}: timeline ${history.timeline} exists, and may have forked off inside it`);
      return [];
    }
  }
  return chain;
}

/**
 * Smart failover's last step with `walbridge stream`: the streamed prefix of a segment that was
 * never archived whole (the chain from streamedChain), every chunk verified, zero-padded to the
 * segment size as PostgreSQL expects of a partial segment (replay ends at its first invalid record).
 */
export async function restoreStreamed(
  ctx: FetchContext,
  file: WalFileName,
  destination: string,
  identity: ClusterIdentity,
  chain: readonly (ChunkRange & { key: string })[],
): Promise<'restored' | 'archived'> {
  const content = Buffer.alloc(identity.segmentSize);
  // A few at once: a failover waits for this, and a segment may be hundreds of small chunks.
  let next = 0;
  const worker = async () => {
    while (next < chain.length) {
      const chunk = chain[next++]!;
      const part = await retryTransient(ctx.retry, `download ${chunk.key}`, () => downloadChunk(ctx, file, chunk));
      part.copy(content, chunk.start);
    }
  };
  const archived = async () => (await ctx.store.head(walFileKey(ctx.namespace, file))) !== undefined;
  try {
    await Promise.all(Array.from({ length: Math.min(8, chain.length) }, worker));
  } catch (err) {
    if (!(err instanceof StoreError && err.kind === 'not-found')) throw err;
    // The streamer removes a segment's chunks once archive-push stored it whole.
    if (await archived()) return 'archived';
    throw new WalbridgeError('corrupt', `the streamed part of ${file.name} is incomplete: a chunk of it vanished while it was read (${err.message})`);
  }
  // archive-push may have stored the whole segment meanwhile: then that is what recovery gets.
  if (await archived()) return 'archived';
  const temp = tempFileFor(file, destination);
  try {
    await writeFile(temp, content, { flag: 'wx', mode: 0o600 });
    await publish(ctx, file, temp, destination, identity, `${ctx.store.location}/${streamSegmentPrefix(ctx.namespace, file.name)}`);
  } finally {
    await unlink(temp).catch(() => undefined);
    untrackTempFile(temp);
  }
  ctx.log.warn(`restored the streamed part of ${file.name}: ${chainEnd(chain)} bytes in ${chain.length} chunk${chain.length === 1 ? '' : 's'} (it was never archived whole)`);
  return 'restored';
}

/** One streamed chunk's bytes, verified against its metadata. */
async function downloadChunk(ctx: FetchContext, file: WalFileName, chunk: ChunkRange & { key: string }): Promise<Buffer> {
  const opened = await ctx.store.get(chunk.key);
  const where = `${ctx.store.location}/${chunk.key}`;
  const name = chunkName(file.name, chunk);
  const promised = describeContent(opened.info.metadata);
  if (typeof promised === 'string' || promised.size !== chunk.end - chunk.start) {
    opened.body.destroy();
    throw new WalbridgeError('corrupt', `refusing to restore ${name}: ${where} cannot be verified: ${typeof promised === 'string' ? promised : `it holds ${promised.size} bytes, its name says ${chunk.end - chunk.start}`}`);
  }
  const parts: Buffer[] = [];
  let seen;
  try {
    seen = await unseal(opened.body, promised, () => new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) }), { fileName: chunk.key, keys: ctx.keys, requireEncryption: true });
  } catch (err) {
    opened.body.destroy();
    throw classifyStreamError(err, file, where);
  }
  if (seen.size !== promised.size || seen.sha256 !== promised.sha256) throw new WalbridgeError('corrupt', `refusing to restore ${name}: ${where} is corrupt`);
  return Buffer.concat(parts, seen.size);
}

/** errno codes that come from writing the destination, never from the download. */
const LOCAL_ERRORS = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'EEXIST', 'EACCES', 'EPERM', 'ENOSPC', 'EDQUOT', 'EIO', 'EROFS']);

function classifyStreamError(err: unknown, file: WalFileName, where: string): Error {
  if (err instanceof StoreError || err instanceof WalbridgeError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (err instanceof CodecUnavailableError) {
    // An install may be under way (npm ci removes node_modules first): mended from outside.
    return new WalbridgeError('config', `cannot restore ${file.name}: ${err.message}; install walbridge with its optional codec packages on this machine`, { mendableOutside: true });
  }
  if (err instanceof DecryptionError) {
    return new WalbridgeError('corrupt', `refusing to restore ${file.name}: ${where} does not decrypt: ${err.message}`);
  }
  if (code.startsWith('Z_') || code.startsWith('ERR_ZLIB') || err instanceof FrameFormatError) {
    return new WalbridgeError('corrupt', `refusing to restore ${file.name}: ${where} does not decompress: ${(err as Error).message}`);
  }
  if (LOCAL_ERRORS.has(code)) {
    return new WalbridgeError('localIo', `cannot write ${file.name}: ${(err as Error).message}`, { cause: err });
  }
  // Anything else broke the download itself (reset, timeout, truncated body): try again.
  return new StoreError('transient', `download of ${where} broke off: ${(err as Error).message}`, { cause: err });
}
