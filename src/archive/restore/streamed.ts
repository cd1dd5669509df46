/**
 * Smart failover's last step with `walbridge stream`: the verified prefix of a segment that was
 * never archived whole, from the chunks the streamer shipped (repo/stream-chunks.ts).
 */
import { unlink, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { describeContent, unseal } from '../../codec/envelope.js';
import { WalbridgeError } from '../../errors.js';
import { retryTransient } from '../../storage/retry.js';
import { StoreError } from '../../storage/store.js';
import { untrackTempFile } from '../../util/temp-files.js';
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { historyPrefix, streamSegmentPrefix, walFileKey } from '../repo/layout.js';
import { chainEnd, chunkName, listChunks, longestPrefixChain, type ChunkRange } from '../repo/stream-chunks.js';
import { classifyStreamError, publish, tempFileFor, type FetchContext } from './download.js';

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
  ctx.log.warn(
    `restored the streamed part of ${file.name}: ${chainEnd(chain)} bytes in ${chain.length} chunk${chain.length === 1 ? '' : 's'} (it was never archived whole)`,
  );
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
    throw new WalbridgeError(
      'corrupt',
      `refusing to restore ${name}: ${where} cannot be verified: ${typeof promised === 'string' ? promised : `it holds ${promised.size} bytes, its name says ${chunk.end - chunk.start}`}`,
    );
  }
  const parts: Buffer[] = [];
  let seen;
  try {
    seen = await unseal(
      opened.body,
      promised,
      () =>
        new Writable({
          write: (c: Buffer, _e, cb) => {
            parts.push(c);
            cb();
          },
        }),
      { fileName: chunk.key, keys: ctx.keys, requireEncryption: true },
    );
  } catch (err) {
    opened.body.destroy();
    throw classifyStreamError(err, file, where);
  }
  if (seen.size !== promised.size || seen.sha256 !== promised.sha256) throw new WalbridgeError('corrupt', `refusing to restore ${name}: ${where} is corrupt`);
  return Buffer.concat(parts, seen.size);
}
