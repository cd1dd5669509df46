/**
 * The background fetcher: one per pg_wal of a standby, started by a restore_command call,
 * serving the next calls over a socket (background-link.ts) with its SDK loaded and its
 * connections open, and keeping the prefetch spool filled ahead of recovery.
 *
 * A call's request runs the same code a call runs by itself (fetchWalFile, or waitForWalFile
 * with its triggers, failover rules and waits), with one difference: the segment is delivered
 * into the spool, and the call publishes it to `%p` itself (serveSpooled: header and identity
 * checked again, atomic rename). So only a live call ever writes `%p`: a call that PostgreSQL
 * ended leaves nothing behind, and the fetcher stops waiting for it. SIGUSR1 to the call is
 * passed on as a message. A call whose spool hit needed no request tells the fetcher which
 * segment went, so that the window moves on.
 */
import path from 'node:path';
import { ExitCode } from '../errors.js';
import type { Logger } from '../log.js';
import { trimStderrLog } from '../util/log-file.js';
import { pidLockHeld, releasePidLock, takePidLock } from '../util/pid-lock.js';
import { parseRequestedName, parseWalFileName } from '../wal/names.js';
import { BACKGROUND_COMMAND, backgroundLock, backgroundSocket, type BackgroundRequest } from './background-link.js';
import { listenForCalls, reportable, stopListening } from './background-server.js';
import { failoverSwitch } from './failover.js';
import { namespaceIdentity, type FetchContext } from './fetch.js';
import type { ClusterIdentity } from './identity.js';
import { NotForBackground, refillSpool, type SpoolJobs } from './prefetch.js';
import { prefetchWindow, spoolDir } from './spool.js';
import { fetchWalFile, waitForWalFile, type WaitOptions } from './wait.js';

/** A call's request: `%f` and `%p`, waiting or not. */
export interface FetchRequest extends BackgroundRequest {
  readonly walFile: string;
  readonly destination: string;
  readonly wait: boolean;
}

/** A call's note that it served `served` from the spool by itself. */
export interface ServedNote extends BackgroundRequest {
  readonly served: string;
  readonly destination: string;
}

export type FetchAnswer =
  | { readonly status: 'spooled' }
  | { readonly status: 'not-found' }
  | { readonly status: 'failed'; readonly exitCode: number }
  | { readonly status: 'declined'; readonly reason: string };

export interface FetcherOptions {
  readonly idleMs: number;
  /** fingerprint() of the fetcher's own configuration: calls configured otherwise are declined. */
  readonly fingerprint: string;
  /** The waiting fetch's settings, as the calls have them (they share the fingerprint). */
  readonly wait: Omit<WaitOptions, 'failover' | 'alive'>;
  /** Logs why a call's fetch failed; returns the exit status the call ends with. */
  readonly exitStatusOf: (err: unknown, log: Logger) => number;
}

export function fetcherRunning(walDir: string): Promise<boolean> {
  return pidLockHeld(backgroundLock(walDir, 'fetcher'), BACKGROUND_COMMAND.fetcher);
}

export async function fetchAhead(ctx: FetchContext, walDir: string, opts: FetcherOptions): Promise<void> {
  const lock = backgroundLock(walDir, 'fetcher');
  if (!(await takePidLock(lock, BACKGROUND_COMMAND.fetcher))) return;
  const jobs: SpoolJobs = { log: ctx.log, downloads: new Map(), refilling: false };
  const identityCache: { value?: ClusterIdentity } = {};
  const background: FetchContext = { ...ctx, background: jobs, identityCache };
  let calls = 0;
  let lastWork = Date.now();
  let retiring = false;

  const ours = (request: BackgroundRequest & { destination?: unknown }): string | undefined => {
    if (request.fingerprint !== opts.fingerprint) {
      retiring = true; // configured otherwise since this fetcher started: let a new one take over
      return 'the background fetcher runs with other settings; it stops after its current work';
    }
    if (typeof request.destination !== 'string' || path.dirname(request.destination) !== walDir) return 'not a destination in this pg_wal';
    return undefined;
  };

  const socketPath = backgroundSocket(walDir, 'fetcher');
  const server = await listenForCalls(socketPath, ctx.log, async (call) => {
    calls++;
    try {
      const request = call.request as unknown as FetchRequest | ServedNote;
      const refused = ours(request);
      if ('served' in request) {
        // A hint only: move the window on past what the call served by itself.
        call.answer({ status: 'ok' });
        const file = typeof request.served === 'string' ? parseWalFileName(request.served) : undefined;
        const spool = refused ? undefined : spoolDir(ctx, request.destination);
        const identity = await namespaceIdentity(background).catch(() => undefined);
        if (file?.kind === 'segment' && spool && identity) {
          await refillSpool(ctx, jobs, spool, file, prefetchWindow(file, identity.segmentSize, Math.max(1, ctx.prefetch)), identity).catch(() => undefined);
        }
        return;
      }
      if (refused) return call.answer({ status: 'declined', reason: refused } satisfies FetchAnswer);
      const failover = failoverSwitch();
      call.onMessage((message) => {
        if ((message as { failover?: unknown }).failover === true) failover.request();
      });
      const perCall = { ...background, log: call.log };
      try {
        if (parseRequestedName(request.walFile).kind !== 'segment') throw new NotForBackground('only segments go through the spool');
        const outcome = request.wait
          ? await waitForWalFile(perCall, request.walFile, request.destination, { ...opts.wait, failover, alive: () => call.connected })
          : await fetchWalFile(perCall, request.walFile, request.destination);
        call.answer({ status: outcome === 'restored' ? 'spooled' : 'not-found' } satisfies FetchAnswer);
      } catch (err) {
        if (!call.connected) ctx.log.info(`stopped serving ${request.walFile}: ${(err as Error).message}`);
        else if (!reportable(err)) {
          // Not the archive's answer but this process's trouble (the spool, a bug): the call does its own work.
          if (err instanceof NotForBackground) ctx.log.info(`declined ${request.walFile}: ${err.message}`);
          else ctx.log.error(`cannot serve ${request.walFile}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
          call.answer({ status: 'declined', reason: err instanceof NotForBackground ? err.message : 'the background fetcher failed' } satisfies FetchAnswer);
        } else {
          const exitCode = opts.exitStatusOf(err, call.log);
          if (exitCode === ExitCode.storeAccess) retiring = true; // perhaps stale credentials: let a fresh process take over
          call.answer({ status: 'failed', exitCode } satisfies FetchAnswer);
        }
      }
    } finally {
      calls--;
      lastWork = Date.now();
    }
  });

  try {
    for (let tick = 0; ; tick++) {
      if (calls > 0 || jobs.downloads.size > 0) lastWork = Date.now();
      else if (retiring || Date.now() - lastWork > opts.idleMs) return;
      if (tick % 300 === 0) trimStderrLog();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await stopListening(server, socketPath);
    await Promise.allSettled(jobs.downloads.values());
    await releasePidLock(lock);
  }
}
