/**
 * Prefetch for restore_command. The startup process asks for one segment at a time and waits
 * for each, so catching up from the archive costs one download per process start. When a
 * segment is restored we also download the next few of its timeline, in parallel, into a
 * spool (`pg_wal/walbridge/prefetch/<namespace>-<repo hash>/`); the next calls are answered
 * from it by a rename.
 *
 * Safety: a spooled file gets there only through the same verified download as `%p` (content
 * hash, size, page header, cluster identity, atomic rename), and is checked against the
 * namespace's identity again when served. Wrong guesses cost only disk and bandwidth: the
 * spool holds only the window after the segment being restored (a timeline switch, a moved
 * `%r` or pg_rewind's calls just leave files that the next call removes), and at most
 * SPOOL_BYTES of segments.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../errors.js';
import { fsyncDir } from '../util/durable.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { nextSegmentName, parseWalFileName, type WalFileName } from '../wal/names.js';
import { checkRestoredSegment, restoreIfPresent, type FetchContext } from './fetch.js';
import type { ClusterIdentity } from './identity.js';

/** Disk the spool may use, whatever the segment size. */
const SPOOL_BYTES = 1024 * 1024 * 1024;
/** After the requested file is restored, how long prefetches may still hold up the answer. */
const PREFETCH_GRACE_MS = 10_000;

/**
 * Restores `file` to `destination` (from the spool when it is there), and fills the spool
 * with the segments that follow it. The answer is about `file` alone.
 */
export async function restoreWithPrefetch(
  ctx: FetchContext,
  file: WalFileName,
  destination: string,
  identity: ClusterIdentity | undefined,
): Promise<'restored' | 'absent'> {
  const spool = spoolDir(ctx, destination);
  if (!spool || file.kind !== 'segment' || !identity || ctx.prefetch < 1) return restoreIfPresent(ctx, file, destination, identity);

  const window = prefetchWindow(file, identity.segmentSize, ctx.prefetch);
  await mkdir(spool, { recursive: true });
  const spooled = await tidySpool(spool, window);
  const ahead = window
    .slice(1)
    .filter((name) => !spooled.has(name))
    .map((name) => restoreIfPresent(ctx, parseWalFileName(name)!, path.join(spool, name), identity, 'prefetched').catch(() => 'absent' as const));
  try {
    if (spooled.has(file.name)) return await serveFromSpool(ctx, file, path.join(spool, file.name), destination, identity);
    return await restoreIfPresent(ctx, file, destination, identity);
  } finally {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(ahead), new Promise((resolve) => (timer = setTimeout(resolve, PREFETCH_GRACE_MS)))]);
    clearTimeout(timer);
  }
}

/** `pg_wal/walbridge/prefetch/<namespace>-<hash of the repository>`, or undefined outside pg_wal. */
function spoolDir(ctx: FetchContext, destination: string): string | undefined {
  if (!dataDirOfWalPath(destination)) return undefined;
  const repo = createHash('sha256').update(ctx.store.location).digest('hex').slice(0, 12);
  return path.join(path.dirname(path.resolve(destination)), 'walbridge', 'prefetch', `${ctx.namespace}-${repo}`);
}

/** The segments to hold after `file`: the next ones on its timeline, within the disk budget. */
export function prefetchWindow(file: WalFileName, segmentSize: number, prefetch: number): string[] {
  const count = Math.min(prefetch, Math.max(1, Math.floor(SPOOL_BYTES / segmentSize)));
  const names = [file.name];
  for (let i = 0; i < count; i++) names.push(nextSegmentName(names[names.length - 1]!, segmentSize)!);
  return names;
}

/** Removes everything outside `window` (and temp files of killed processes); returns what is spooled. */
async function tidySpool(spool: string, window: readonly string[]): Promise<Set<string>> {
  const keep = new Set(window);
  const spooled = new Set<string>();
  for (const entry of await readdir(spool)) {
    if (keep.has(entry)) spooled.add(entry);
    else await unlink(path.join(spool, entry)).catch(() => undefined);
  }
  return spooled;
}

async function serveFromSpool(
  ctx: FetchContext,
  file: WalFileName,
  spooled: string,
  destination: string,
  identity: ClusterIdentity,
): Promise<'restored'> {
  const fh = await open(spooled, 'r');
  try {
    // Verified when it arrived; the namespace's identity could have been replaced since.
    await checkRestoredSegment(ctx, fh, file, identity, spooled);
  } finally {
    await fh.close();
  }
  try {
    await rename(spooled, destination);
    await fsyncDir(path.dirname(path.resolve(destination)));
  } catch (err) {
    throw new WalbridgeError('localIo', `cannot publish ${destination}: ${(err as Error).message}`);
  }
  ctx.log.info(`restored ${file.name} from the prefetch spool`);
  return 'restored';
}
