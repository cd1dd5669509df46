/**
 * The background fetcher: one per pg_wal of a standby, started by a restore_command call,
 * serving the next calls over a socket (background-link.ts) with its SDK loaded and its
 * connections open, and keeping the prefetch spool filled ahead of recovery. Its life is
 * background-server.ts's; it also stops, removing the spool, when recovery has ended.
 *
 * A call's request runs the same code a call runs by itself (fetchWalFile, or waitForWalFile
 * with its triggers, failover rules and waits), with one difference: the segment is delivered
 * into the spool, and the call publishes it to `%p` itself (serveSpooled: header and identity
 * checked again, atomic rename). So only a live call ever writes `%p`: a call that PostgreSQL
 * ended leaves nothing behind, and the fetcher stops waiting for it. SIGUSR1 to the call is
 * passed on as a message. A failure is answered to the call, which holds on it or reports it
 * (hold.ts). A call whose spool hit needed no request tells the fetcher which segment went, so
 * that the window moves on.
 */
import path from 'node:path';
import { parseRequestedName, parseWalFileName } from '../../wal/names.js';
import type { ServerProcess } from '../../wal/server.js';
import { failedAnswer, type BackgroundRequest, type FailedAnswer } from '../background/client.js';
import { reportable, runBackground } from '../background/server.js';
import { failoverSwitch } from './failover.js';
import { namespaceIdentity, type FetchContext } from './download.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { NotForBackground, refillSpool, type SpoolJobs } from './prefetch.js';
import { prefetchWindow, removeSpoolAfterRecovery, spoolDir } from './spool.js';
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

export type FetchAnswer = { readonly status: 'spooled' } | { readonly status: 'not-found' } | FailedAnswer | { readonly status: 'declined'; readonly reason: string };

export interface FetcherOptions {
  readonly idleMs: number;
  /** fingerprint() of the fetcher's own configuration: calls configured otherwise are declined. */
  readonly fingerprint: string;
  /** The postmaster whose call started the fetcher, if any. */
  readonly server: ServerProcess | undefined;
  /** The waiting fetch's settings, as the calls have them (they share the fingerprint). */
  readonly wait: Omit<WaitOptions, 'failover' | 'alive'>;
}

export async function fetchAhead(ctx: FetchContext, walDir: string, opts: FetcherOptions): Promise<void> {
  const jobs: SpoolJobs = { log: ctx.log, downloads: new Map(), refilling: false };
  const identityCache: { value?: ClusterIdentity } = {};
  const background: FetchContext = { ...ctx, background: jobs, identityCache };
  let retiring = false;

  const ours = (request: BackgroundRequest & { destination?: unknown }): string | undefined => {
    if (request.fingerprint !== opts.fingerprint) {
      retiring = true; // configured otherwise (or another server) since this fetcher started: let a new one take over
      return 'the background fetcher runs with other settings; it stops after its current work';
    }
    if (typeof request.destination !== 'string' || path.dirname(request.destination) !== walDir) return 'not a destination in this pg_wal';
    return undefined;
  };

  await runBackground(
    { role: 'fetcher', walDir, server: opts.server, idleMs: opts.idleMs, log: ctx.log },
    {
      handle: async (call) => {
        const request = call.request as unknown as FetchRequest | ServedNote;
        if (retiring) return call.answer({ status: 'declined', reason: 'the background fetcher is stopping' } satisfies FetchAnswer);
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
            const answer = failedAnswer(err);
            ctx.log.error(`${request.walFile}: ${answer.message}; stopping, so that the next try starts afresh`);
            // Whatever failed may be mended outside (credentials, a region, a file): this process's
            // clients, caches and settings date from its start, so the call's next try must not meet them again.
            retiring = true;
            call.answer(answer satisfies FetchAnswer);
          }
        }
      },
      busy: () => jobs.downloads.size > 0,
      retiring: () => retiring,
      mustStop: async () => ((await removeSpoolAfterRecovery(walDir)) ? 'recovery has ended (the prefetch spool is removed)' : undefined),
      finish: async (abandon) => {
        if (!abandon) await Promise.allSettled(jobs.downloads.values());
      },
    },
  );
}
