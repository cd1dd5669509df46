/**
 * restore_command: hand PostgreSQL exactly the bytes that were archived under a name, or
 * nothing. The destination appears only by an atomic rename of a verified, fsynced temp file
 * in the same directory, so PostgreSQL never sees a partial, corrupt or foreign file.
 */
import { createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { CodecUnavailableError } from '../../codec/compression.js';
import { describeContent, unseal } from '../../codec/envelope.js';
import { DecryptionError } from '../../codec/encryption.js';
import { FrameFormatError } from '../../codec/frames.js';
import type { KeyRing } from '../../codec/keys.js';
import { WalbridgeError } from '../../errors.js';
import { publishFile } from '../../util/durable.js';
import type { TakeTurn } from '../../util/slots.js';
import { trackTempFile, untrackTempFile } from '../../util/temp-files.js';
import { formatBytes, type Logger } from '../../log.js';
import { deadlineCheck, retryTransient, type RetryPolicy } from '../../storage/retry.js';
import { getIfPresent, StoreError, type Store } from '../../storage/store.js';
import type { WalFileName } from '../../wal/names.js';
import { checkRestoredSegment, loadIdentity, type ClusterIdentity } from '../repo/identity.js';
import { walFileKey } from '../repo/layout.js';

export interface FetchContext {
  readonly store: Store;
  /** The repository's name for local caches (see repo/open.ts repositoryId). */
  readonly repository: string;
  readonly namespace: string;
  readonly log: Logger;
  readonly retry: RetryPolicy;
  /** Segments to download ahead into the spool (see prefetch.ts); 0 = none. */
  readonly prefetch: number;
  /**
   * Kept by the background fetcher across calls: a namespace's identity is written once
   * (create-if-absent) and never changes, so it is read from the store only until found.
   */
  readonly identityCache?: { value?: ClusterIdentity };
  /** Keys for encrypted objects. */
  readonly keys: KeyRing | undefined;
  /**
   * Set by the background fetcher, whose downloads run several at once: a downloaded body is
   * decoded and written when this lets it (one at a time there), so that only one decoded
   * segment is in memory however many downloads are under way. Without it (a call restoring by
   * itself), the body is decoded as it arrives.
   */
  readonly unpacking?: TakeTurn;
  /**
   * Set by the background fetcher with `unpacking`: what ends each turn (a collection,
   * util/memory.ts) also ends each body too big to be held for a turn, which streams instead.
   */
  readonly afterStreamed?: () => void;
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
    const opened = await getIfPresent(ctx.store, key);
    return opened && downloadVerified(ctx, file, opened, destination, identity);
  });
  if (!restored) return 'absent';
  ctx.log.info(`${verb} ${file.name} (${formatBytes(restored.size)}, stored ${formatBytes(restored.storedSize)}) in ${Date.now() - started} ms`);
  return 'restored';
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
      const unpack = (body: Readable) => () =>
        unseal(body, promised, () => createWriteStream(temp, { flags: 'wx', mode: 0o600 }), { fileName: file.name, keys: ctx.keys });
      const turn = opened.info.size <= WHOLE_BODY_BYTES ? ctx.unpacking : undefined;
      const held = turn && (await readUpTo(opened.body, WHOLE_BODY_BYTES));
      if (!turn || !held || held.rest) {
        // Bigger bodies stream, in frames of bounded size, without waiting for a turn with their connection open.
        try {
          seen = await unpack(held?.rest ? Readable.from(heldThenRest(held.chunks, held.rest)) : opened.body)();
        } finally {
          ctx.afterStreamed?.();
        }
      } else {
        const expired = deadlineCheck();
        const body = Readable.from(held.chunks);
        // An attempt whose time ran out while it waited gives its turn up: its call has been answered.
        seen = await turn(file.name, () => {
          const late = expired();
          return late ? Promise.reject(late) : unpack(body)();
        });
      }
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

/**
 * Stored bodies up to this size are read whole before their turn to be decoded (`unpacking`), so
 * that the download is over and its connection free meanwhile: a pgbench segment is ~1.3 MB.
 */
const WHOLE_BODY_BYTES = 4 * 1024 * 1024;

/**
 * `body`'s chunks up to `limit` bytes; `rest`, the rest of it still to read, if it goes on past
 * them (a size the store misreported). An iterator, not a `for await`, whose end would destroy it.
 */
export async function readUpTo(body: Readable, limit: number): Promise<{ chunks: Buffer[]; rest?: AsyncIterator<Buffer> }> {
  const reading = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let bytes = 0;
  for (;;) {
    const next = await reading.next();
    if (next.done) return { chunks };
    chunks.push(next.value);
    bytes += next.value.length;
    if (bytes > limit) return { chunks, rest: reading };
  }
}

/** `chunks`, then what `rest` has left. */
export async function* heldThenRest(chunks: Buffer[], rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  yield* chunks;
  for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
}

/** A temp file in the destination's directory, named so that a dead process's can be swept. */
export function tempFileFor(file: WalFileName, destination: string): string {
  const temp = path.join(path.dirname(path.resolve(destination)), `.${file.name}.walbridge-${process.pid}-${randomBytes(4).toString('hex')}`);
  trackTempFile(temp);
  return temp;
}

/** Checks a complete temp file (a segment's header and cluster), makes it durable and renames it to `destination`. */
export async function publish(
  ctx: FetchContext,
  file: WalFileName,
  temp: string,
  destination: string,
  identity: ClusterIdentity | undefined,
  where: string,
): Promise<void> {
  const fh = await open(temp, 'r');
  try {
    if (file.kind === 'segment' || file.kind === 'partial') await checkRestoredSegment(ctx, fh, file, identity, where);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await publishFile(temp, destination);
}

/** errno codes that come from writing the destination, never from the download. */
const LOCAL_ERRORS = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'EEXIST', 'EACCES', 'EPERM', 'ENOSPC', 'EDQUOT', 'EIO', 'EROFS']);

export function classifyStreamError(err: unknown, file: WalFileName, where: string): Error {
  if (err instanceof StoreError || err instanceof WalbridgeError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (err instanceof CodecUnavailableError) {
    // An install may be under way (npm ci removes node_modules first): mended from outside.
    return new WalbridgeError('config', `cannot restore ${file.name}: ${err.message}; install walbridge with its optional codec packages on this machine`, {
      mendableOutside: true,
    });
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
