/**
 * Prefetch for restore_command. The startup process asks for one segment at a time and waits
 * for each, so catching up from the archive costs one download per process start. When a
 * segment has to be downloaded we also download the next few of its timeline, in parallel,
 * into a spool (`pg_wal/walbridge/prefetch/<namespace>-<repo hash>/`); the next calls are
 * answered from it by a rename, without waiting for any download.
 *
 * Safety: a spooled file gets there only through the same verified download as `%p` (content
 * hash, size, page header, cluster identity, atomic rename), and its page header is checked
 * again when served, against the identity it was verified with (kept beside it), so serving
 * needs no request and, without waiting, no SDK at all. Wrong guesses cost only disk and bandwidth: the
 * spool holds only the window after the segment being restored (a timeline switch, a moved
 * `%r` or pg_rewind's calls just leave files that the next call removes), and at most
 * SPOOL_BYTES of segments.
 */
import path from 'node:path';
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import type { Delivery } from './delivery.js';
import { restoreIfPresent, type FetchContext } from './download.js';
import { affordableSegments, diskFull, emptySpool, prefetchWindow, prepareSpool, serveSpooled, spoolDir } from './spool.js';
import { recordRestored } from './standby-state.js';
import { restoreStreamed } from './streamed.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { walFileKey, walPrefix } from '../repo/layout.js';

/** A call's delivery: to `%p`, the spool filled after it. */
export const toDestination: Delivery = {
  restore: restoreWithPrefetch,
  restoreStreamed,
  delivered: async (file, dataDir) => {
    if (file.kind === 'segment' && file.position) await recordRestored(dataDir, file.position);
  },
};

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
  // While the spool holds the segment, answer at once: no download to wait for. When it runs
  // dry, the segment and the whole window after it are fetched together, in parallel.
  if (await serveSpooled(ctx, file, destination)) return 'restored';

  const window = prefetchWindow(file, identity.segmentSize, Math.min(ctx.prefetch, await affordableSegments(path.dirname(destination), identity.segmentSize)));
  let spooled: Set<string>;
  try {
    spooled = await prepareSpool(spool, window, identity, 'create-home');
  } catch (err) {
    // The spool is an optimisation: a full disk or a permission problem there must not stop the restore.
    ctx.log.warn(`prefetch disabled for this call: cannot prepare ${spool}: ${(err as Error).message}`);
    return restoreIfPresent(ctx, file, destination, identity);
  }
  const wanted = window.slice(1).filter((name) => !spooled.has(name));
  const archived = await archivedAmong(ctx, file, wanted);
  const ahead = wanted
    .filter((name) => archived.has(name))
    .map((name) => restoreIfPresent(ctx, parseWalFileName(name)!, path.join(spool, name), identity, 'prefetched').catch(() => 'absent' as const));
  try {
    return await restoreIfPresent(ctx, file, destination, identity).catch(async (err: unknown) => {
      if (!diskFull(err)) throw err;
      // The segment asked for comes first: give it the spool's space and try once more.
      await Promise.all(ahead);
      await emptySpool(spool);
      ctx.log.warn(`the disk of ${path.dirname(destination)} is full: emptied the prefetch spool to make room for ${file.name}`);
      return restoreIfPresent(ctx, file, destination, identity);
    });
  } finally {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(ahead), new Promise((resolve) => (timer = setTimeout(resolve, PREFETCH_GRACE_MS)))]);
    clearTimeout(timer);
  }
}

/**
 * Which of `names` (segments after `file`, on its timeline) are archived: one listing instead
 * of a GET per name, which matters once the standby has caught up and most are not there yet.
 */
export async function archivedAmong(ctx: FetchContext, file: WalFileName, names: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  if (names.length === 0) return found;
  const wanted = new Set(names);
  const last = names[names.length - 1]!;
  try {
    for await (const object of ctx.store.list(walPrefix(ctx.namespace) + file.name.slice(0, 8), walFileKey(ctx.namespace, file))) {
      const name = object.key.slice(object.key.lastIndexOf('/') + 1);
      if (name > last && !name.startsWith(last)) break;
      if (wanted.has(name)) found.add(name);
    }
  } catch (err) {
    ctx.log.warn(`prefetch skipped: cannot list what follows ${file.name}: ${(err as Error).message}`);
  }
  return found;
}
