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
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { outsideDeadline } from '../../storage/deadline.js';
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import { restoreIfPresent, type FetchContext } from './download.js';
import { affordableSegments, diskFull, emptySpool, prefetchWindow, prepareSpool, serveSpooled, spoolDir } from './spool.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { walFileKey, walPrefix } from '../repo/layout.js';

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
  if (ctx.background) {
    if (!spool || file.kind !== 'segment' || !identity) throw new NotForBackground(`${file.name} cannot go through the prefetch spool`);
    return spoolForCall(ctx, ctx.background, spool, file, identity);
  }
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
async function archivedAmong(ctx: FetchContext, file: WalFileName, names: readonly string[]): Promise<Set<string>> {
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

/** Thrown in the background fetcher for a request the spool cannot serve: the call does its own work. */
export class NotForBackground extends Error {}

/** The background fetcher's state: downloads into the spool, shared by every call it serves. */
export interface SpoolJobs {
  /** The fetcher's own log: downloads ahead outlive the call that started them. */
  readonly log: Logger;
  readonly downloads: Map<string, Promise<'restored' | 'absent'>>;
  /** A refill of the window is under way (one at a time). */
  refilling: boolean;
}

/**
 * In the background fetcher: make `file` present in the spool (the call publishes it from
 * there, so only the call ever writes `%p`), and refill the window after it without waiting.
 */
async function spoolForCall(ctx: FetchContext, jobs: SpoolJobs, spool: string, file: WalFileName, identity: ClusterIdentity): Promise<'restored' | 'absent'> {
  // The window holds at least the segment asked for: the call publishes it from here.
  const window = prefetchWindow(file, identity.segmentSize, Math.max(1, Math.min(ctx.prefetch, await affordableSegments(path.dirname(path.dirname(path.dirname(spool))), identity.segmentSize))));
  let spooled: Set<string>;
  try {
    spooled = await prepareSpool(spool, window, identity, 'home-exists');
  } catch (err) {
    throw new NotForBackground(`cannot prepare ${spool}: ${(err as Error).message}`);
  }
  // Downloads ahead serve later calls: operations of their own, not bounded by this call's --timeout.
  void outsideDeadline(() => refillSpool({ ...ctx, log: jobs.log }, jobs, spool, file, window, identity));
  if (spooled.has(file.name)) return 'restored';
  return download(ctx, jobs, spool, file, identity, 'fetched').catch(async (err: unknown) => {
    if (!diskFull(err)) throw err;
    // Full: the segment asked for comes first. Without room even then, the call restores it by itself into pg_wal.
    await Promise.allSettled(jobs.downloads.values());
    await emptySpool(spool);
    throw new NotForBackground(`the disk is full: emptied the prefetch spool; the call restores ${file.name} itself`);
  });
}

/** Downloads the archived segments of `window` (after `file`) that the spool lacks, in the background. */
export async function refillSpool(
  ctx: FetchContext,
  jobs: SpoolJobs,
  spool: string,
  file: WalFileName,
  window: readonly string[],
  identity: ClusterIdentity,
): Promise<void> {
  if (jobs.refilling) return;
  jobs.refilling = true;
  try {
    const present = new Set(await readdir(spool).catch(() => [] as string[]));
    const wanted = window.slice(1).filter((name) => !present.has(name) && !jobs.downloads.has(name));
    const archived = await archivedAmong(ctx, file, wanted);
    for (const name of wanted.filter((n) => archived.has(n))) void download(ctx, jobs, spool, parseWalFileName(name)!, identity, 'prefetched').catch(() => undefined);
  } finally {
    jobs.refilling = false;
  }
}

/** One download into the spool, shared by whoever asks for the same segment meanwhile. */
function download(ctx: FetchContext, jobs: SpoolJobs, spool: string, file: WalFileName, identity: ClusterIdentity, verb: string): Promise<'restored' | 'absent'> {
  let job = jobs.downloads.get(file.name);
  if (!job) {
    job = restoreIfPresent(ctx, file, path.join(spool, file.name), identity, verb).finally(() => jobs.downloads.delete(file.name));
    jobs.downloads.set(file.name, job);
  }
  return job;
}
