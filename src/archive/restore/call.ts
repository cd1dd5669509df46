/**
 * One restore_command call, from `%f %p %r` to its answer: from the prefetch spool, through the
 * background fetcher, or by itself (starting a fetcher for the next calls), waiting for a segment
 * not archived yet when asked to; under hold.ts's rule for failures. Every attempt reads the
 * settings anew, so a config or key file mended while the call holds is what the next attempt uses.
 */
import { existsSync } from 'node:fs';
import { frontEndMayAnswer } from '../front-end.js';
import path from 'node:path';
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import type { Store } from '../../storage/store.js';
import { dataDirOfWalPath, readRecoverySignal } from '../../wal/datadir.js';
import { parseRequestedName, type WalFileName } from '../../wal/names.js';
import {
  callerLineage,
  calledBy,
  calledByGoneServer,
  formatServer,
  lineageIntact,
  processRunning,
  runningServer,
  type ServerProcess,
} from '../../wal/server.js';
import { askBackground, backgroundRunning, fingerprint, tell } from '../background/client.js';
import type { failoverSwitch } from './failover.js';
import type { FetchAnswer, FetchRequest, ServedNote } from './fetcher.js';
import { holdingFailures, serverGone, type FetchOutcome } from './hold.js';
import { backgroundSocket, walDirOf } from '../local-layout.js';
import { repositoryId } from '../repo/open.js';
import { registerWaitingCall } from './promote.js';
import { recordFrontEnd, serveSpooled, spoolDir } from './spool.js';
import { readStandbyState, recordRestored, writeStandbyState } from './standby-state.js';
import { meterWaiting } from '../../metrics/calls.js';

export interface RestoreCall {
  /** %f */
  readonly walFile: string;
  /** %p */
  readonly destination: string;
  /** %r */
  readonly restart: string | undefined;
  /** Wait for a segment not archived yet (pg_standby style); false answers "not found" at once. */
  readonly wait: boolean;
  readonly cleanup: boolean;
  readonly includeBackup: boolean;
  readonly log: Logger;
  /** SIGUSR1 to the call. */
  readonly failover: ReturnType<typeof failoverSwitch>;
  /** The settings as they are now (flags, environment, config file, key file), read at every attempt. */
  readonly settings: () => Promise<Settings>;
  /** The environment the call got, with its settings flags as variables: what a fetcher it starts is given. */
  readonly env: NodeJS.ProcessEnv;
  /** The key bin/archive-fetch made for this call (front-end.ts), if it came that way. */
  readonly callKey?: string | undefined;
}

/** What every attempt of one call shares. */
interface Caller {
  readonly call: RestoreCall;
  readonly file: WalFileName;
  /** pg_wal, when %p is in a data directory's pg_wal. */
  readonly walDir: string | undefined;
  /** The postmaster this call serves, if one runs. */
  readonly server: ServerProcess | undefined;
  /** Whether whoever asked still waits for the answer. */
  readonly alive: () => boolean;
  /** Asked by pg_rewind --restore-target-wal: no background fetcher, no waiting. */
  readonly rewinding: boolean;
}

export async function restoreCall(asked: RestoreCall): Promise<FetchOutcome> {
  // pg_rewind --restore-target-wal asks for WAL it lacks while no server runs: it gets an answer
  // at once ("not found" included), and no background fetcher writes into the directory it rewinds.
  const rewinding = calledBy('pg_rewind');
  const call = rewinding ? { ...asked, wait: false } : asked;
  if (rewinding && asked.wait) call.log.info(`${asked.walFile}: asked by pg_rewind: answering at once, without waiting`);
  const file = parseRequestedName(call.walFile);
  const walDir = walDirOf(call.destination);
  const dataDir = dataDirOfWalPath(call.destination);
  const signal = dataDir ? await readRecoverySignal(dataDir) : undefined;
  // The postmaster this call serves (not only its parent, the sh): if it dies, nobody wants the answer.
  const server = dataDir ? await runningServer(dataDir, { ancestorOnly: true }) : undefined;
  // Started by a startup process that has not yet noticed its postmaster died: nobody waits for
  // the answer, and nothing later would show it (the orphan's parent no longer changes).
  if (!server && dataDir && (await calledByGoneServer(dataDir))) throw serverGone(call.walFile);
  const lineage = callerLineage(server);
  const alive = () => lineageIntact(lineage) && (server === undefined || processRunning(server));
  if (call.wait && walDir && file.kind === 'segment') await registerWaitingCall(walDir, call.log);
  const caller: Caller = { call, file, walDir, server, alive, rewinding };
  return holdingFailures(
    {
      log: call.log,
      name: call.walFile,
      holding: call.wait && signal?.mode === 'recovery',
      failover: call.failover,
      promoteRequested: () => dataDir !== undefined && existsSync(path.join(dataDir, 'promote')),
      serverAlive: alive,
    },
    () => attempt(caller),
  );
}

/** One attempt, with the settings as they are now: from the spool, through the fetcher, or by itself. */
async function attempt(caller: Caller): Promise<FetchOutcome> {
  const { call, file, walDir, server } = caller;
  const settings = await call.settings();
  // --metrics-file: waiting, once it lasts; after holding, once this attempt outlasts what a
  // failing one takes (an attempt may spend a --timeout on the identity, then one on the look).
  if (call.wait && file.kind === 'segment') meterWaiting((2 * settings.timeout + 5) * 1000);
  const configuration = fingerprint(settings, call.env, server && formatServer(server));
  const viaFetcher = walDir !== undefined && settings.prefetch > 0 && !call.cleanup && !caller.rewinding && file.kind === 'segment';
  // Calls like this one need nothing but the spool's rename: bin/archive-fetch may answer them alone.
  if (viaFetcher && call.callKey && !call.wait && frontEndMayAnswer(settings)) {
    const spool = spoolDir({ repository: repositoryId(settings), namespace: settings.namespace }, call.destination);
    if (spool) await recordFrontEnd(walDir, call.callKey, spool);
  }
  if (await fromSpool(caller, settings, viaFetcher ? configuration : undefined)) return 'restored';
  if (viaFetcher) {
    const answered = await throughFetcher(caller, settings, configuration);
    if (answered) return answered;
    // No fetcher (or it could not help): this call does the work, and starts one for the next
    // calls. The window ahead is the fetcher's to fill, at the next call: this call, which
    // PostgreSQL waits for, downloads its own segment only.
    if (await startFetcher(caller)) return byItself(caller, { ...settings, prefetch: 0 });
  }
  return byItself(caller, settings);
}

/**
 * Without waiting there is no trigger to consult: a prefetched segment is answered from the spool
 * before any SDK is loaded (waiting, every call must see the triggers first). With a fetcher
 * (`configuration`), it is told which segment went, so that its window moves on.
 */
async function fromSpool({ call, file, walDir }: Caller, settings: Settings, configuration: string | undefined): Promise<boolean> {
  if (call.wait || call.cleanup) return false;
  const scope = { repository: repositoryId(settings), namespace: settings.namespace, log: call.log };
  if (!(await serveSpooled(scope, file, call.destination))) return false;
  if (walDir && configuration) {
    const note: ServedNote = { walbridge: 1, type: 'served', fingerprint: configuration, name: file.name, destination: path.resolve(call.destination) };
    await tell(backgroundSocket(walDir, 'fetcher'), { ...note });
  }
  return true;
}

/** Whether a fetcher runs for the next calls (one ran already, or this call started one). */
async function startFetcher({ call, walDir, server }: Caller): Promise<boolean> {
  if (!walDir) return false;
  if (await backgroundRunning(walDir, 'fetcher')) return true;
  try {
    const { startBackground } = await import('../background/spawn.js');
    startBackground('fetcher', walDir, call.env, server);
    return true;
  } catch (err) {
    call.log.warn(`could not start the background fetcher: ${(err as Error).message}`);
    return false;
  }
}

/** The call restores (or waits for) the file itself, to %p, filling the prefetch spool after it. */
async function byItself({ call, alive }: Caller, settings: Settings): Promise<FetchOutcome> {
  const { log, destination } = call;
  const [{ openRepository }, { fetchWalFile, waitForWalFile, waitOptions }, { toDestination }, { sweepDeadTempFiles }] = await Promise.all([
    import('../repo/open.js'),
    import('./wait.js'),
    import('./prefetch.js'),
    import('../../util/temp-files.js'),
  ]);
  await sweepDeadTempFiles(path.dirname(path.resolve(destination))); // what a killed call left there
  const { store, retry } = await openRepository(settings, log);
  const ctx = { repository: repositoryId(settings), namespace: settings.namespace, log, store, retry, prefetch: settings.prefetch, keys: settings.encryption };
  const outcome = call.wait
    ? await waitForWalFile(ctx, call.walFile, destination, { ...waitOptions(settings), failover: call.failover, alive }, toDestination)
    : await fetchWalFile(ctx, call.walFile, destination, toDestination);
  if (outcome === 'restored' && call.cleanup) await cleanupAfterRestore(store, settings.namespace, call, log);
  return outcome;
}

/**
 * The background fetcher has the SDK loaded and connections open: it finds (or waits for) the
 * segment and puts it in the spool; this call publishes it to %p itself. Undefined: the call
 * does the work itself (no fetcher, it declined, or the spooled file could not be published).
 */
async function throughFetcher(caller: Caller, settings: Settings, configuration: string): Promise<FetchOutcome | undefined> {
  const { call, file, walDir, alive } = caller;
  if (!walDir) return undefined;
  const { log, failover, destination } = call;
  const request: FetchRequest = {
    walbridge: 1,
    type: 'fetch',
    fingerprint: configuration,
    name: call.walFile,
    destination: path.resolve(destination),
    wait: call.wait,
    // Calls like this one need only the spool and the fetcher's look for triggers and forks: bin/archive-fetch may answer them.
    ...(call.wait && call.callKey && frontEndMayAnswer(settings) ? { frontEnd: call.callKey } : {}),
  };
  const promoteFile = path.join(path.dirname(walDir), 'promote');
  let failoverAt: number | undefined;
  failover.whenRequested(() => (failoverAt ??= Date.now()));
  const keepWaiting = () => {
    if (!alive()) return false; // our server died: nobody wants the answer
    if (failoverAt === undefined && existsSync(promoteFile)) failoverAt = Date.now();
    // The fetcher acts on a failover within a poll; if it does not, this call answers itself.
    return failoverAt === undefined || Date.now() - failoverAt < 3_000;
  };
  const answer = await askBackground<FetchAnswer>('fetcher', walDir, { ...request }, log, {
    connected: (send) => failover.whenRequested(() => send({ failover: true })),
    keepWaiting,
    // Without waiting, the fetcher fetches within its own --timeout deadline: the call waits little longer.
    timeout: call.wait ? undefined : { seconds: settings.timeout, what: `fetch of ${call.walFile}` },
  }).catch((err: unknown) => {
    // Whatever the fetcher answered, a call whose server is gone answers nobody.
    throw alive() ? err : serverGone(call.walFile);
  });
  if (!alive()) throw serverGone(call.walFile);
  if (answer?.status === 'spooled') {
    try {
      if (await serveSpooled({ repository: repositoryId(settings), namespace: settings.namespace, log }, file, destination)) {
        const dataDir = path.dirname(walDir);
        if (call.wait && file.kind === 'segment' && file.position) await recordRestored(dataDir, file.position);
        return 'restored';
      }
    } catch (err) {
      // A damaged spooled file or a failed rename must not end recovery: restore it directly.
      log.warn(`could not publish ${file.name} from the prefetch spool (${(err as Error).message}); restoring it directly`);
    }
  }
  if (answer?.status === 'not-found') return 'not-found';
  return undefined;
}

/** Cleanup runs only when %r moved since the last one; its failure never fails the restore. */
async function cleanupAfterRestore(store: Store, namespace: string, call: RestoreCall, log: Logger) {
  const restart = call.restart;
  if (!restart) {
    log.warn("--cleanup needs %r (restore_command = 'archive-fetch %f %p %r --cleanup'); nothing cleaned up");
    return;
  }
  const dataDir = dataDirOfWalPath(call.destination);
  const state = dataDir ? await readStandbyState(dataDir) : {};
  if (state.cleanedUpTo === restart) return;
  try {
    const { cleanupBefore } = await import('../repo/cleanup.js');
    await cleanupBefore(store, namespace, restart, { includeBackup: call.includeBackup, dryRun: false }, log);
    if (dataDir) await writeStandbyState(dataDir, { ...(await readStandbyState(dataDir)), cleanedUpTo: restart });
  } catch (err) {
    log.warn(`cleanup before ${restart} failed (the restore itself succeeded): ${(err as Error).message}`);
  }
}
