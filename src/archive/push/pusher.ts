/**
 * Lookahead push. PostgreSQL's archiver calls archive_command for one file at a time, so a
 * burst of WAL is archived at one upload per process start. A call also makes sure a background
 * pusher runs for its pg_wal. The pusher uploads the other files the archiver has marked
 * `.ready`, in parallel, leaving a marker for each (markers.ts), and serves the archiver's calls
 * for files it has not marked yet over a socket (background-link.ts), with its SDK loaded and its
 * connections open. Its life is background-server.ts's: it stops soon after its server.
 *
 * Safety rests on markers.ts and background-link.ts: a call exits 0 only on a marker or an answer
 * given after a verified push of exactly the bytes on disk. The pusher's own failures are
 * never reported to PostgreSQL: the archiver's call for that file meets them itself.
 */
import path from 'node:path';
import { ExitCode } from '../../errors.js';
import { sweepDeadTempFiles } from '../../util/temp-files.js';
import { readyWalFiles } from '../../wal/archive-status.js';
import { parseWalFileName } from '../../wal/names.js';
import { processRunning, type ServerProcess } from '../../wal/server.js';
import { backgroundRunning, failedAnswer, type BackgroundRequest, type FailedAnswer } from '../background/client.js';
import { reportable, runBackground } from '../background/server.js';
import { walDirOf } from '../local-layout.js';
import { confirmPushed, listMarkers, prepareMarkers, removeMarker, writeMarker, type MarkerScope } from './markers.js';
import { pushWalFile, type PushContext, type PushResult } from './push.js';

/**
 * archive_command for `walPath`. With lookahead on, a background pusher (see pushAhead) is
 * started if none runs for this pg_wal, to store the other ready files while the archiver
 * works through them; this call waits only for its own file.
 */
export async function pushWithLookahead(ctx: PushContext, walPath: string, concurrency: number, startPusher: () => void): Promise<PushResult> {
  const walDir = walDirOf(walPath);
  if (walDir && concurrency > 1 && !(await backgroundRunning(walDir, 'pusher'))) {
    try {
      startPusher();
    } catch (err) {
      ctx.log.warn(`could not start the background pusher (only the file asked for is pushed): ${(err as Error).message}`);
    }
  }
  return pushWalFile(ctx, walPath);
}

const STORE_FAILURES: ReadonlySet<number> = new Set([ExitCode.storeUnavailable, ExitCode.storeAccess, ExitCode.storeMissing, ExitCode.storeError]);

export interface PusherOptions {
  readonly concurrency: number;
  /** Milliseconds without work after which the pusher exits. */
  readonly idleMs: number;
  /** fingerprint() of the pusher's own configuration: calls configured otherwise are declined. */
  readonly fingerprint: string;
  /** The postmaster whose archiver started the pusher, if any. */
  readonly server: ServerProcess | undefined;
}

/** The pusher's answer to a call (its log lines reach the call separately). */
export type PushAnswer = { readonly status: 'stored' } | FailedAnswer | { readonly status: 'declined'; readonly reason: string };

/** A call's request: store this file, in the pusher's pg_wal. */
export interface PushRequest extends BackgroundRequest {
  readonly file: string;
}

/**
 * The background pusher: stores the files PostgreSQL marked `.ready`, `concurrency` at a time,
 * leaving a marker for each one stored and verified, and stores at once the files calls ask
 * for over its socket. Its scan skips the oldest ready file, which the archiver's own call is
 * pushing, and a file that failed (the archiver's call for it meets the same problem and
 * reports it).
 */
export async function pushAhead(ctx: PushContext, scope: MarkerScope, walDir: string, opts: PusherOptions): Promise<void> {
  const inFlight = new Map<string, Promise<PushResult | undefined>>();
  const failed = new Set<string>();
  let retiring = false;
  let prepared = false;
  // A marker written after the server stopped would only be litter (and could land in a data
  // directory being removed): the archiver asks for nothing any more.
  const serverRuns = () => opts.server === undefined || processRunning(opts.server);

  /** A call's file is stored now, ahead of the scan's queue; answered only after a verified push. */
  const serve = async (request: PushRequest, log: PushContext['log']): Promise<PushAnswer> => {
    if (request.fingerprint !== opts.fingerprint) {
      retiring = true; // configured otherwise (or another server) since this pusher started: let a new one take over
      return { status: 'declined', reason: 'the background pusher runs with other settings; it stops after its current work' };
    }
    if (typeof request.file !== 'string' || path.dirname(request.file) !== walDir || !parseWalFileName(path.basename(request.file))) {
      return { status: 'declined', reason: 'not a WAL file of this pg_wal' };
    }
    const name = path.basename(request.file);
    try {
      if (await confirmPushed(scope, request.file, log)) return { status: 'stored' };
      const ahead = await inFlight.get(name);
      if (ahead) {
        await removeMarker(walDir, name); // answered here; the marker would only be pruned later
        log.info(`${name} was archived by the background pusher (${ahead.size} bytes, sha256 ${ahead.sha256.slice(0, 12)}…, verified in the store)`);
        return { status: 'stored' };
      }
      const job = pushWalFile({ ...ctx, log }, request.file);
      inFlight.set(name, job.catch(() => undefined));
      try {
        await job;
      } finally {
        inFlight.delete(name);
      }
      return { status: 'stored' };
    } catch (err) {
      if (!reportable(err)) {
        // Not the archive's answer but this process's trouble: the call pushes by itself.
        ctx.log.error(`cannot serve ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        return { status: 'declined', reason: 'the background pusher failed' };
      }
      const answer = failedAnswer(err);
      ctx.log.error(`${name}: ${answer.message}`);
      // A store failure may be mended outside (credentials, a region, an endpoint) while this
      // process's clients date from its start: let a fresh process take over.
      if (STORE_FAILURES.has(answer.exitCode)) retiring = true;
      return answer;
    }
  };

  await runBackground(
    { role: 'pusher', walDir, server: opts.server, idleMs: opts.idleMs, log: ctx.log },
    {
      handle: async (call) => call.answer(await serve(call.request as unknown as PushRequest, call.log)),
      tick: async () => {
        if (!prepared) {
          // Removes what killed processes left: unusable markers, spilled bodies (`.walbridge-body-<pid>-*`).
          await prepareMarkers(walDir, scope);
          await sweepDeadTempFiles(walDir);
          prepared = true;
        }
        const ready = await readyWalFiles(walDir);
        const marked = new Set(await listMarkers(walDir));
        await pruneMarkers(walDir, new Set(ready), marked);
        for (const name of retiring ? [] : ready.slice(1)) {
          if (inFlight.size >= opts.concurrency) break;
          if (marked.has(name) || inFlight.has(name) || failed.has(name)) continue;
          const job = pushWalFile(ctx, path.join(walDir, name))
            .then(async (result) => {
              if (serverRuns()) await writeMarker(walDir, scope, name, result, ctx.log);
              return result;
            })
            .catch((err: unknown) => {
              failed.add(name);
              ctx.log.warn(`background push of ${name} failed (the archiver's own call for it will retry): ${(err as Error).message}`);
              return undefined;
            })
            .finally(() => inFlight.delete(name));
          inFlight.set(name, job);
        }
      },
      busy: () => inFlight.size > 0,
      settled: () => (inFlight.size > 0 ? Promise.race(inFlight.values()) : new Promise(() => undefined)),
      retiring: () => retiring,
      finish: async (abandon) => {
        if (!abandon) await Promise.all(inFlight.values());
      },
    },
  );
}

/** Markers of files no longer waiting to be archived can never be used: remove them. */
async function pruneMarkers(walDir: string, ready: Set<string>, seen: Set<string>): Promise<void> {
  for (const name of seen) {
    if (!ready.has(name)) await removeMarker(walDir, name);
  }
}
