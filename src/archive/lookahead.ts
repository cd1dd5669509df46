/**
 * Lookahead push. PostgreSQL's archiver calls archive_command for one file at a time, so a
 * burst of WAL is archived at one upload per process start. A call also makes sure a background
 * pusher runs for its pg_wal. The pusher uploads the other files the archiver has marked
 * `.ready`, in parallel, leaving a marker for each (markers.ts), and serves the archiver's calls
 * for files it has not marked yet over a socket (background-link.ts), with its SDK loaded and its
 * connections open. It exits after --background-idle seconds without work.
 *
 * Safety rests on markers.ts and background-link.ts: a call exits 0 only on a marker or an answer
 * given after a verified push of exactly the bytes on disk. The pusher's own failures are
 * never reported to PostgreSQL: the archiver's call for that file meets them itself.
 */
import path from 'node:path';
import { ExitCode } from '../errors.js';
import type { Logger } from '../log.js';
import { trimStderrLog } from '../util/log-file.js';
import { sweepDeadTempFiles } from '../util/temp-files.js';
import { readyWalFiles } from '../wal/archive-status.js';
import { parseWalFileName } from '../wal/names.js';
import { confirmPushed, listMarkers, removeMarker, sweepMarkers, walDirOf, writeMarker, type MarkerScope } from './markers.js';
import { pushWalFile, type PushContext, type PushResult } from './push.js';
import { BACKGROUND_COMMAND, backgroundLock, backgroundSocket, type BackgroundRequest } from './background-link.js';
import { listenForCalls, reportable, stopListening } from './background-server.js';
import { pidLockHeld, releasePidLock, takePidLock } from '../util/pid-lock.js';

/**
 * archive_command for `walPath`. With lookahead on, a background pusher (see pushAhead) is
 * started if none runs for this pg_wal, to store the other ready files while the archiver
 * works through them; this call waits only for its own file.
 */
export async function pushWithLookahead(
  ctx: PushContext,
  walPath: string,
  concurrency: number,
  startPusher: () => void,
): Promise<PushResult> {
  const walDir = walDirOf(walPath);
  if (walDir && concurrency > 1 && !(await pidLockHeld(backgroundLock(walDir, 'pusher'), BACKGROUND_COMMAND.pusher))) {
    try {
      startPusher();
    } catch (err) {
      ctx.log.warn(`could not start the background pusher (only the file asked for is pushed): ${(err as Error).message}`);
    }
  }
  return pushWalFile(ctx, walPath);
}

const PUSHER_SCAN_MS = 100;

export interface PusherOptions {
  readonly concurrency: number;
  /** Milliseconds without work after which the pusher exits. */
  readonly idleMs: number;
  /** fingerprint() of the pusher's own configuration: calls configured otherwise are declined. */
  readonly fingerprint: string;
  /** Logs why a call's push failed; returns the exit status the call ends with. */
  readonly exitStatusOf: (err: unknown, log: Logger) => number;
}

/** The pusher's answer to a call (its log lines reach the call separately). */
export type PushAnswer =
  | { readonly status: 'stored' }
  | { readonly status: 'failed'; readonly exitCode: number }
  | { readonly status: 'declined'; readonly reason: string };

/** A call's request: store this file, in the pusher's pg_wal. */
export interface PushRequest extends BackgroundRequest {
  readonly file: string;
}

/**
 * The background pusher: stores the files PostgreSQL marked `.ready`, `concurrency` at a time,
 * leaving a marker for each one stored and verified, and stores at once the files calls ask
 * for over its socket. One per pg_wal (a pid file in pg_wal/walbridge/ is its lock). Its scan
 * skips the oldest ready file, which the archiver's own call is pushing, and a file that failed
 * (the archiver's call for it meets the same problem and reports it).
 */
export async function pushAhead(ctx: PushContext, scope: MarkerScope, walDir: string, opts: PusherOptions): Promise<void> {
  const lock = backgroundLock(walDir, 'pusher');
  if (!(await takePidLock(lock, BACKGROUND_COMMAND.pusher))) return;
  await sweepLeftovers(walDir, scope);
  const inFlight = new Map<string, Promise<PushResult | undefined>>();
  const failed = new Set<string>();
  let lastWork = Date.now();
  let retiring = false;

  /** A call's file is stored now, ahead of the scan's queue; answered only after a verified push. */
  const serve = async (request: PushRequest, log: Logger): Promise<PushAnswer> => {
    const name = path.basename(request.file);
    if (request.fingerprint !== opts.fingerprint) {
      retiring = true; // configured otherwise since this pusher started: let a new one take over
      return { status: 'declined', reason: 'the background pusher runs with other settings; it stops after its current work' };
    }
    if (typeof request.file !== 'string' || path.dirname(request.file) !== walDir || !parseWalFileName(name)) {
      return { status: 'declined', reason: 'not a WAL file of this pg_wal' };
    }
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
      const exitCode = opts.exitStatusOf(err, log);
      if (exitCode === ExitCode.storeAccess) retiring = true; // perhaps stale credentials: let a fresh process take over
      return { status: 'failed', exitCode };
    }
  };
  const socketPath = backgroundSocket(walDir, 'pusher');
  let calls = 0;
  const server = await listenForCalls(socketPath, ctx.log, async (call) => {
    calls++;
    try {
      call.answer(await serve(call.request as unknown as PushRequest, call.log));
    } finally {
      calls--;
      lastWork = Date.now();
    }
  });

  try {
    for (let tick = 0; ; tick++) {
      if (tick % 300 === 0) trimStderrLog();
      const ready = await readyWalFiles(walDir);
      const marked = new Set(await listMarkers(walDir));
      await pruneMarkers(walDir, new Set(ready), marked);
      for (const name of retiring ? [] : ready.slice(1)) {
        if (inFlight.size >= opts.concurrency) break;
        if (marked.has(name) || inFlight.has(name) || failed.has(name)) continue;
        const job = pushWalFile(ctx, path.join(walDir, name))
          .then(async (result) => {
            await writeMarker(walDir, scope, name, result, ctx.log);
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
      if (inFlight.size > 0 || calls > 0) lastWork = Date.now();
      else if (retiring || Date.now() - lastWork > opts.idleMs) return;
      await Promise.race([...inFlight.values(), new Promise((resolve) => setTimeout(resolve, PUSHER_SCAN_MS))]);
    }
  } finally {
    await stopListening(server, socketPath);
    await Promise.all(inFlight.values());
    await releasePidLock(lock);
  }
}

/** Removes what killed processes left: unusable markers, and spilled bodies (`.walbridge-body-<pid>-*`) of dead processes. */
async function sweepLeftovers(walDir: string, scope: MarkerScope): Promise<void> {
  await sweepMarkers(walDir, scope);
  await sweepDeadTempFiles(walDir);
}

/** Markers of files no longer waiting to be archived can never be used: remove them. */
async function pruneMarkers(walDir: string, ready: Set<string>, seen: Set<string>): Promise<void> {
  for (const name of seen) {
    if (!ready.has(name)) await removeMarker(walDir, name);
  }
}
