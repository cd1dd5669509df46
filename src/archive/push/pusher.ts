/**
 * The background pusher. PostgreSQL's archiver calls archive_command for one file at a time, so
 * a burst of WAL is archived at one upload per process start. A call makes sure a pusher runs
 * for its pg_wal (call.ts); the pusher uploads the other files the archiver has marked `.ready`,
 * in parallel, leaving a marker for each (markers.ts), and serves the archiver's calls for files
 * it has not marked yet, with its SDK loaded and its connections open. Its life, its protocol and
 * its answers to failures are background/server.ts's: it stops soon after its server.
 *
 * Safety rests on markers.ts and background/client.ts: a call exits 0 only on a marker or an
 * answer given after a verified push of exactly the bytes on disk. The pusher's own failures in
 * its scan are never reported to PostgreSQL: the archiver's call for that file meets them itself.
 */
import path from 'node:path';
import { frontEndMayAnswer } from '../front-end.js';
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import { sweepDeadTempFiles } from '../../util/temp-files.js';
import { readyWalFiles } from '../../wal/archive-status.js';
import { parseWalFileName } from '../../wal/names.js';
import { processRunning, type ServerProcess } from '../../wal/server.js';
import type { BackgroundRequest } from '../background/client.js';
import { Declined, retireOnStoreFailures, runBackground, tellingConnectedCalls, type Call, type Role } from '../background/server.js';
import { openRepository, repositoryId } from '../repo/open.js';
import {
  clearInFlight,
  confirmPushed,
  listMarkers,
  markInFlight,
  prepareMarkers,
  pushedElsewhere,
  removeMarker,
  writeMarker,
  type MarkerScope,
} from './markers.js';
import { collectAfterFile } from '../../util/memory.js';
import { Slots } from '../../util/slots.js';
import { pushContext, pushWalFile, type PushContext, type PushResult } from './push.js';

/** A call's request: store this file, in the pusher's pg_wal. */
export interface PushRequest extends BackgroundRequest {
  readonly type: 'push';
  readonly path: string;
}

/** The pusher's own answer to a call (failures and declines are the server's). */
export interface PushAnswer {
  readonly status: 'stored';
}

/** Runs the background pusher for `walDir` with these settings until it has no reason to live on. */
export async function runPusher(
  settings: Settings,
  walDir: string,
  server: ServerProcess | undefined,
  fingerprint: string,
  log: Logger,
  callKey: string | undefined,
): Promise<void> {
  const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
  const ctx = pushContext(settings, store, retry, log);
  // A call answered by bin/archive-push alone would not be counted in --metrics-file: with one, every call starts Node.
  const scope = { repository: repositoryId(settings), namespace: settings.namespace, callKey: frontEndMayAnswer(settings) ? callKey : undefined };
  await runBackground(
    { walDir, server, idleMs: settings.backgroundIdle * 1000, log, fingerprint },
    pusher(ctx, scope, walDir, settings.pushConcurrency, server),
  );
}

/**
 * Files read and sealed at once, while up to --push-concurrency uploads run: sealing is CPU (a
 * pgbench segment is hashed and compressed in ~45 ms) and holds the whole segment, an upload
 * waits on the network holding only the compressed body. A burst of 40 pgbench segments over
 * S3 peaked at 107-117 MiB with one seal at a time, against 197 with four, in the same time.
 */
const SEALS_AT_ONCE = 1;

/**
 * Stores the files PostgreSQL marked `.ready`, `concurrency` at a time, leaving a marker for each
 * one stored and verified, and stores at once the files calls ask for. Its scan skips a file a
 * call is pushing itself, and a file that failed (the archiver's call for it meets the same
 * problem and reports it).
 */
function pusher(shared: PushContext, scope: MarkerScope, walDir: string, concurrency: number, server: ServerProcess | undefined): Role {
  const inFlight = new Map<string, Promise<PushResult | undefined>>();
  /** Files a call waits for: their turn to be sealed comes first. */
  const asked = new Set<string>();
  const sealTurns = new Slots(SEALS_AT_ONCE);
  // A collection after each file sealed, as the fetcher after each unpacking (util/memory.ts).
  const ctx: PushContext = { ...shared, sealing: sealTurns.turns((name) => asked.has(name), collectAfterFile) };
  const failed = new Set<string>();
  let prepared = false;
  // A marker written after the server stopped would only be litter (and could land in a data
  // directory being removed): the archiver asks for nothing any more.
  const serverRuns = () => server === undefined || processRunning(server);

  /** A call's file is stored now, ahead of the scan's queue; answered only after a verified push. */
  const push = async (call: Call): Promise<PushAnswer> => {
    const request = call.request as unknown as PushRequest;
    if (typeof request.path !== 'string' || path.dirname(request.path) !== walDir || !parseWalFileName(path.basename(request.path))) {
      throw new Declined('not a WAL file of this pg_wal');
    }
    const name = path.basename(request.path);
    if (await confirmPushed(scope, request.path, call.log)) return { status: 'stored' };
    sealTurns.promote(name); // the scan's push of it, if it waits for its turn to be sealed: a call waits for it now
    const ahead = await inFlight.get(name);
    if (ahead) {
      await removeMarker(walDir, name); // answered here; the marker would only be pruned later
      call.log.info(`${name} was archived by the background pusher (${ahead.size} bytes, sha256 ${ahead.sha256.slice(0, 12)}…, verified in the store)`);
      return { status: 'stored' };
    }
    asked.add(name);
    const job = pushWalFile({ ...ctx, log: call.log }, request.path);
    inFlight.set(
      name,
      job.catch(() => undefined),
    );
    try {
      await job;
    } finally {
      inFlight.delete(name);
      asked.delete(name);
    }
    return { status: 'stored' };
  };

  return {
    name: 'pusher',
    handlers: { push },
    // A store failure may be mended outside (credentials, a region, an endpoint) while this
    // process's clients date from its start: a fresh process takes over. A refused file does not.
    retireAfter: retireOnStoreFailures,
    tick: async (retiring) => {
      if (!prepared) {
        // Removes what killed processes left: unusable markers, spilled bodies (`.walbridge-body-<pid>-*`).
        await prepareMarkers(walDir, scope);
        await sweepDeadTempFiles(walDir);
        prepared = true;
      }
      const ready = await readyWalFiles(walDir);
      const marked = new Set(await listMarkers(walDir));
      await pruneMarkers(walDir, new Set(ready), marked);
      // The oldest ready file too: the archiver's call waits for its marker (bin/archive-push),
      // or asks over the socket, unless it is pushing the file itself (its .pushing names it).
      for (const name of retiring ? [] : ready) {
        if (inFlight.size >= concurrency) break;
        if (marked.has(name) || inFlight.has(name) || failed.has(name)) continue;
        if (await pushedElsewhere(walDir, name)) continue;
        const job = markInFlight(walDir, name)
          .then(() => pushWalFile(ctx, path.join(walDir, name)))
          .then(async (result) => {
            if (serverRuns()) await writeMarker(walDir, scope, name, result, ctx.log);
            return result;
          })
          .catch((err: unknown) => {
            failed.add(name);
            ctx.log.warn(`background push of ${name} failed (the archiver's own call for it will retry): ${(err as Error).message}`);
            return undefined;
          })
          .finally(async () => {
            await clearInFlight(walDir, name);
            inFlight.delete(name);
          });
        inFlight.set(name, job);
      }
    },
    busy: () => inFlight.size > 0,
    settled: () => (inFlight.size > 0 ? Promise.race(inFlight.values()) : new Promise(() => undefined)),
    finish: async (abandon) => {
      if (!abandon) await Promise.all(inFlight.values());
    },
  };
}

/** Markers of files no longer waiting to be archived can never be used: remove them. */
async function pruneMarkers(walDir: string, ready: Set<string>, seen: Set<string>): Promise<void> {
  for (const name of seen) {
    if (!ready.has(name)) await removeMarker(walDir, name);
  }
}
