/**
 * The background fetcher: one per pg_wal of a standby, started by a restore_command call,
 * serving the next calls over a socket (background/) with its SDK loaded and its connections
 * open, and keeping the prefetch spool filled ahead of recovery. Its life, protocol and answers
 * to failures are background/server.ts's; it also stops, removing the spool, when recovery has ended.
 *
 * A call's request runs the same code a call runs by itself (fetchWalFile, or waitForWalFile with
 * its triggers, failover rules and waits), with one difference, its delivery: the segment goes
 * into the spool, and the call publishes it to `%p` itself (serveSpooled: header and identity
 * checked again, atomic rename). So only a live call ever writes `%p`: a call that PostgreSQL
 * ended leaves nothing behind, and the fetcher stops waiting for it. SIGUSR1 to the call is
 * passed on as a message. A call whose spool hit needed no request tells the fetcher which
 * segment went (bin/archive-fetch, which cannot talk to the socket, leaves a note the fetcher
 * reads at each tick), so that the window moves on.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import { outsideDeadline } from '../../storage/retry.js';
import { parseRequestedName, parseWalFileName, type WalFileName } from '../../wal/names.js';
import type { ServerProcess } from '../../wal/server.js';
import type { BackgroundRequest } from '../background/client.js';
import { Declined, runBackground, tellingConnectedCalls, type Call, type Role } from '../background/server.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { openRepository, repositoryId } from '../repo/open.js';
import type { Delivery } from './delivery.js';
import { namespaceIdentity, restoreIfPresent, type FetchContext } from './download.js';
import { failoverSwitch } from './failover.js';
import { archivedAmong } from './prefetch.js';
import { affordableSegments, diskFull, emptySpool, prefetchWindow, prepareSpool, readServedNote, removeSpoolAfterRecovery, spoolDir } from './spool.js';
import { fetchWalFile, waitForWalFile, waitOptions } from './wait.js';
import { collectAfterFile } from '../../util/memory.js';
import { Slots } from '../../util/slots.js';
import { CALL_KEY_ENV, callKeyOf } from '../front-end.js';
import { Clearance } from './clearance.js';
import { Triggers } from './watch.js';

/** A call's request: `%f` and `%p`, waiting or not. */
export interface FetchRequest extends BackgroundRequest {
  readonly type: 'fetch';
  readonly destination: string;
  readonly wait: boolean;
  /**
   * A waiting call's key (front-end.ts) when bin/archive-fetch may answer the calls like it from
   * the spool while the fetcher's look for triggers and forks holds (clearance.ts).
   */
  readonly frontEnd?: string;
}

/** A call's note that it served `name` from the spool by itself. */
export interface ServedNote extends BackgroundRequest {
  readonly type: 'served';
  readonly destination: string;
}

/** The fetcher's own answers (failures and declines are the server's). */
export type FetchAnswer = { readonly status: 'spooled' } | { readonly status: 'not-found' } | { readonly status: 'noted' };

/** Runs the background fetcher for `walDir` with these settings until it has no reason to live on. */
export async function runFetcher(settings: Settings, walDir: string, server: ServerProcess | undefined, fingerprint: string, log: Logger): Promise<void> {
  const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
  const ctx: FetchContext = {
    repository: repositoryId(settings),
    namespace: settings.namespace,
    log,
    store,
    retry,
    prefetch: settings.prefetch,
    keys: settings.encryption,
    // A namespace's identity is written once (create-if-absent) and never changes: read from the store until found.
    identityCache: {},
  };
  await runBackground({ walDir, server, idleMs: settings.backgroundIdle * 1000, log, fingerprint }, fetcher(ctx, walDir, settings));
}

/**
 * Downloads running at once: the network's part. Each holds only its stored body (~1.3 MB for a
 * pgbench segment) until its turn to be decoded and written (oneAtATime). Those waiting start in
 * order, the segment a call asked for first.
 */
const DOWNLOADS_AT_ONCE = 3;

/** No call and no note from bin/archive-fetch for this long: the standby has caught up, looks stop. */
const CALLS_COME_MS = 2_000;

/** Downloads into the spool, shared by every call the fetcher serves. */
interface SpoolJobs {
  /** The fetcher's own log: downloads ahead outlive the call that started them. */
  readonly log: Logger;
  readonly downloads: Map<string, Promise<'restored' | 'absent'>>;
  /** Downloads that may start: DOWNLOADS_AT_ONCE at most run. */
  readonly slots: Slots;
  /**
   * Downloaded bodies are decoded and written one at a time, the segment a call waits for first:
   * decoding holds a frame's whole output in a buffer the decoder grows, and on two cores a
   * second decode at once only adds its buffers and fragments the heap. With 4 MiB frames
   * (codec/compression.ts), 40 pgbench segments restored over S3 peaked at 114-120 MiB, against
   * 223 with three decoding at once.
   */
  readonly turns: Slots;
  /** Segments a call waits for: their download and their turn come first. */
  readonly awaited: Set<string>;
  /** A refill of the window is under way (one at a time). */
  refilling: boolean;
  /** When bin/archive-fetch was last seen serving from the spool. */
  noted: number;
  /** The same, on the monotonic clock. */
  notedAt: number;
}

function fetcher(shared: FetchContext, walDir: string, settings: Settings): Role {
  const jobs: SpoolJobs = {
    log: shared.log,
    downloads: new Map(),
    slots: new Slots(DOWNLOADS_AT_ONCE),
    turns: new Slots(1),
    awaited: new Set(),
    refilling: false,
    noted: 0,
    notedAt: -Infinity,
  };
  // Each one's buffers are collected before the next one starts.
  const ctx: FetchContext = { ...shared, unpacking: jobs.turns.turns((name) => jobs.awaited.has(name), collectAfterFile), afterStreamed: collectAfterFile };
  const triggers = new Triggers(ctx, { name: settings.standby, dataDir: path.dirname(walDir) });
  // A look holds as long as a waiting call goes between two reads of the triggers (watch.ts triggersDue).
  const clearance = new Clearance(ctx, walDir, triggers, 2 * settings.maxPollInterval * 1000);
  /** When a call last asked (or its request ended): with bin/archive-fetch's notes, whether calls still come. */
  let asked = -Infinity;
  const delivery = intoSpool(jobs);
  const inThisWalDir = (destination: unknown): destination is string => typeof destination === 'string' && path.dirname(destination) === walDir;

  const fetch = async (call: Call): Promise<FetchAnswer> => {
    const request = call.request as unknown as FetchRequest;
    if (!inThisWalDir(request.destination)) throw new Declined('not a destination in this pg_wal');
    if (parseRequestedName(request.name).kind !== 'segment') throw new Declined('only segments go through the spool');
    const failover = failoverSwitch();
    call.onMessage((message) => {
      if ((message as { failover?: unknown }).failover === true) failover.request();
    });
    const perCall = { ...ctx, log: call.log };
    asked = performance.now();
    const spool = spoolDir(ctx, request.destination);
    const file = parseRequestedName(request.name);
    const frontEnd = request.wait ? callKeyOf({ [CALL_KEY_ENV]: request.frontEnd }) : undefined;
    if (frontEnd && spool) clearance.offer({ key: frontEnd, spool, timeline: file.timeline });
    const outcome = request.wait
      ? await waitForWalFile(perCall, request.name, request.destination, { ...waitOptions(settings), failover, alive: () => call.connected }, delivery)
      : await fetchWalFile(perCall, request.name, request.destination, delivery);
    asked = performance.now();
    if (outcome === 'restored') void clearance.refresh(); // PostgreSQL asks for the next segment as soon as it has replayed this one
    return { status: outcome === 'restored' ? 'spooled' : 'not-found' };
  };

  /** Moves the window on past `name`, which a call served from the spool by itself. */
  const movePast = async (name: string, destination: string): Promise<void> => {
    const file = parseWalFileName(name);
    const spool = spoolDir(ctx, destination);
    const identity = await namespaceIdentity(ctx).catch(() => undefined);
    if (file?.kind === 'segment' && spool && identity) {
      void refillSpool(ctx, jobs, spool, file, prefetchWindow(file, identity.segmentSize, Math.max(1, ctx.prefetch)), identity).catch(() => undefined);
    }
  };

  // A hint only: a Node call tells; bin/archive-fetch leaves a note (spool.ts readServedNote).
  const served = async (call: Call): Promise<FetchAnswer> => {
    const request = call.request as unknown as ServedNote;
    if (inThisWalDir(request.destination)) await movePast(request.name, request.destination);
    return { status: 'noted' };
  };
  let lastNote: string | undefined;

  return {
    name: 'fetcher',
    handlers: { fetch, served },
    tick: async () => {
      // While calls come (a standby catching up), the look that lets bin/archive-fetch answer waiting calls is kept fresh.
      if (performance.now() - Math.max(asked, jobs.notedAt) < CALLS_COME_MS) void clearance.refresh();
      const note = await readServedNote(walDir);
      if (note === undefined || note === lastNote) return;
      lastNote = note;
      jobs.noted = Date.now();
      jobs.notedAt = performance.now();
      await movePast(note, path.join(walDir, 'RECOVERYXLOG'));
    },
    // Serving from the spool without asking is work too: the fetcher stays while it goes on.
    busy: () => jobs.downloads.size > 0 || jobs.refilling || Date.now() - jobs.noted < 1_000,
    mustStop: async () => ((await removeSpoolAfterRecovery(walDir)) ? 'recovery has ended (the prefetch spool is removed)' : undefined),
    finish: async (abandon) => {
      await clearance.withdraw();
      if (!abandon) await Promise.allSettled(jobs.downloads.values());
    },
  };
}

/** The fetcher's delivery: into the spool, for the call to publish; the window after it refilled without waiting. */
function intoSpool(jobs: SpoolJobs): Delivery {
  return {
    async restore(ctx, file, destination, identity) {
      const spool = spoolDir(ctx, destination);
      if (!spool || file.kind !== 'segment' || !identity) throw new Declined(`${file.name} cannot go through the prefetch spool`);
      // The window holds at least the segment asked for: the call publishes it from here.
      const budget = await affordableSegments(path.dirname(destination), identity.segmentSize);
      const window = prefetchWindow(file, identity.segmentSize, Math.max(1, Math.min(ctx.prefetch, budget)));
      let spooled: Set<string>;
      try {
        spooled = await prepareSpool(spool, window, identity, 'home-exists');
      } catch (err) {
        throw new Declined(`cannot prepare ${spool}: ${(err as Error).message}`);
      }
      // Downloads ahead serve later calls: operations of their own, not bounded by this call's --timeout.
      void outsideDeadline(() => refillSpool({ ...ctx, log: jobs.log }, jobs, spool, file, window, identity));
      if (spooled.has(file.name)) return 'restored';
      return download(ctx, jobs, spool, file, identity, 'fetched').catch(async (err: unknown) => {
        if (!diskFull(err)) throw err;
        // Full: the segment asked for comes first. Without room even then, the call restores it by itself into pg_wal.
        await Promise.allSettled(jobs.downloads.values());
        await emptySpool(spool);
        throw new Declined(`the disk is full: emptied the prefetch spool; the call restores ${file.name} itself`);
      });
    },
    restoreStreamed(_ctx, file) {
      // Only a live call writes %p, and the spool holds archived segments only.
      throw new Declined(`the streamed part of ${file.name} is restored by the call itself`);
    },
    // The call records the segment once it has published %p.
    delivered: async () => undefined,
  };
}

/** Downloads the archived segments of `window` (after `file`) that the spool lacks, in the background. */
async function refillSpool(
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
    for (const name of wanted.filter((n) => archived.has(n)))
      void download(ctx, jobs, spool, parseWalFileName(name)!, identity, 'prefetched').catch(() => undefined);
  } finally {
    jobs.refilling = false;
  }
}

/** One download into the spool, shared by whoever asks for the same segment meanwhile. */
function download(
  ctx: FetchContext,
  jobs: SpoolJobs,
  spool: string,
  file: WalFileName,
  identity: ClusterIdentity,
  verb: string,
): Promise<'restored' | 'absent'> {
  let job = jobs.downloads.get(file.name);
  if (verb === 'fetched') jobs.awaited.add(file.name);
  if (job && verb === 'fetched') {
    // queued ahead, and now a call waits for it
    jobs.slots.promote(file.name);
    jobs.turns.promote(file.name);
  }
  if (!job) {
    job = jobs.slots
      .run(file.name, () => restoreIfPresent(ctx, file, path.join(spool, file.name), identity, verb), verb === 'fetched')
      .finally(() => {
        jobs.downloads.delete(file.name);
        jobs.awaited.delete(file.name);
      });
    jobs.downloads.set(file.name, job);
  }
  return job;
}
