/** `archive-fetch %f %p %r` / `walbridge fetch %f %p %r`: PostgreSQL's restore_command. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { ask, backgroundSocket, fingerprint, tell } from '../archive/background-link.js';
import type { FetchAnswer } from '../archive/fetcher.js';
import { walDirOf } from '../archive/markers.js';
import { serveSpooled } from '../archive/spool.js';
import { readStandbyState, writeStandbyState } from '../archive/standby-state.js';
import { EXIT_CODE_HELP, ExitCode, WalbridgeError, type ExitStatus } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { parseRequestedName } from '../wal/names.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { repositoryId } from './repository.js';
import { installSignalHandlers } from './signals.js';
import { reportFailure } from './failure.js';
import { backgroundAnswerWaitMs, noBackgroundAnswer } from './background-answer.js';
import { meterCall, meterWalFile } from './metrics.js';

export function fetchCommand(name: string, done: (status: ExitStatus) => void): Command {
  const invocation = name === 'fetch' ? 'walbridge fetch' : 'archive-fetch';
  const command = new Command(name)
    .summary('restore one WAL file (restore_command), waiting for segments not archived yet')
    .description(
      'Restore one WAL file from the repository (restore_command). The destination is written only after its content is verified, atomically. ' +
        'A segment that is not archived yet is waited for (polling with growing waits) until it lands or a failover is asked for: ' +
        'a trigger object ("walbridge trigger"), SIGUSR1, "pg_ctl promote" or --max-wait; then the answer is "not found" (exit 1), which ends recovery. ' +
        'Other files (.history, .backup) answer at once.',
    )
    .argument('<walfile>', 'the WAL file name PostgreSQL asks for (%f)')
    .argument('<destination>', 'where to write it (%p)')
    .argument('[restartwalfile]', 'the oldest file still needed (%r), for --cleanup')
    .addOption(new Option('--no-wait', 'answer "not found" at once for anything not archived (for standby.signal setups, where PostgreSQL polls)'))
    .addOption(new Option('--cleanup', 'after a restore, delete archived segments that precede %r (off by default: never on a long-term archive)'))
    .addOption(new Option('--include-backup', 'with --cleanup, also delete .backup files that precede %r'))
    .addHelpText(
      'after',
      `\nUse in postgresql.conf (standby):\n  restore_command = '${invocation} %f %p %r'\n\n${EXIT_CODE_HELP}\n\n` +
        'With recovery.signal, a waiting fetch never exits with a failure status: every non-zero status would end recovery, so\n' +
        'failures (store unreachable, access denied, corrupt object) are logged and waited out instead.',
    );
  addSettingOptions(command, 'fetch').action(async (walFile: string, destination: string, restart: string | undefined) => {
    const log = createLogger(invocation);
    const flags = command.opts<{ wait: boolean; cleanup?: boolean; includeBackup?: boolean }>();
    const failover = installSignalHandlers();
    const settings = settingsFrom(command);
    meterCall(settings.metricsFile, 'fetch');
    meterWalFile(destination);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace, log };
    const callEnv = { ...process.env }; // as the call got it: drivers may add variables of their own
    const file = parseRequestedName(walFile);
    const walDir = walDirOf(destination);
    const viaFetcher = walDir !== undefined && settings.prefetch > 0 && !flags.cleanup && file.kind === 'segment';
    const request = { walbridge: 1, fingerprint: fingerprint(settings, callEnv) } as const;
    // Without waiting there is no trigger to consult: a prefetched segment is answered from
    // the spool before any SDK is loaded. (Waiting, every call must see the triggers first.)
    if (!flags.wait && !flags.cleanup && (await serveSpooled(scope, file, destination))) {
      if (viaFetcher) await tell(backgroundSocket(walDir, 'fetcher'), { ...request, served: file.name, destination: path.resolve(destination) });
      return done(ExitCode.ok);
    }
    if (viaFetcher) {
      // The background fetcher has the SDK loaded and connections open: it finds (or waits for)
      // the segment and puts it in the spool; this call publishes it to %p itself.
      const parent = process.ppid;
      const promoteFile = path.join(path.dirname(walDir), 'promote');
      let failoverAt: number | undefined;
      failover.whenRequested(() => (failoverAt ??= Date.now()));
      const keepWaiting = () => {
        if (process.ppid !== parent) return false; // our server died: nobody wants the answer
        if (failoverAt === undefined && existsSync(promoteFile)) failoverAt = Date.now();
        // The fetcher acts on a failover within a poll; if it does not, this call answers itself.
        return failoverAt === undefined || Date.now() - failoverAt < 3_000;
      };
      // Without waiting, the fetcher fetches within its own --timeout deadline: the call waits little longer.
      const waitMs = flags.wait ? undefined : backgroundAnswerWaitMs(settings.timeout);
      const asked = Date.now();
      const answer = await ask<FetchAnswer>(
        backgroundSocket(walDir, 'fetcher'),
        { ...request, walFile, destination: path.resolve(destination), wait: flags.wait },
        log,
        {
          connected: (send) => failover.whenRequested(() => send({ failover: true })),
          keepWaiting,
          timeoutMs: waitMs,
        },
      );
      if (answer === undefined && waitMs !== undefined && Date.now() - asked >= waitMs) throw noBackgroundAnswer('fetcher', `fetch of ${walFile}`, settings.timeout);
      if (process.ppid !== parent) throw new WalbridgeError('internal', `the server that asked for ${walFile} is gone; stopping`);
      if (answer?.status === 'spooled') {
        try {
          if (await serveSpooled(scope, file, destination)) return done(ExitCode.ok);
        } catch (err) {
          // A damaged spooled file or a failed rename must not end recovery: restore it directly.
          log.warn(`could not publish ${file.name} from the prefetch spool (${(err as Error).message}); restoring it directly`);
        }
      }
      if (answer?.status === 'not-found') return done(ExitCode.notFound);
      // Access refused may be the fetcher's stale credentials: this call tries with its own.
      if (answer?.status === 'failed' && answer.exitCode !== ExitCode.storeAccess) return done(answer.exitCode as ExitStatus);
    }
    // No fetcher (or it could not help): this call does the work, and starts one for the next calls.
    if (viaFetcher) {
      const [{ fetcherRunning }, { startBackground }] = await Promise.all([import('../archive/fetcher.js'), import('./background.js')]);
      if (!(await fetcherRunning(walDir))) {
        try {
          startBackground('fetcher', walDir, command, callEnv);
        } catch (err) {
          log.warn(`could not start the background fetcher: ${(err as Error).message}`);
        }
      }
    }
    const [{ openRepository }, { fetchWalFile, waitForWalFile }, { sweepDeadTempFiles }] = await Promise.all([
      import('./repository.js'),
      import('../archive/wait.js'),
      import('../util/temp-files.js'),
    ]);
    await sweepDeadTempFiles(path.dirname(path.resolve(destination))); // what a killed call left there
    const { store, retry } = await openRepository(settings, log);
    const ctx = { ...scope, store, retry, prefetch: settings.prefetch, keys: settings.encryption };
    const outcome = flags.wait
      ? await waitForWalFile(ctx, walFile, destination, {
          pollIntervalMs: settings.pollInterval * 1000,
          maxPollIntervalMs: settings.maxPollInterval * 1000,
          maxWaitMs: settings.maxWait * 1000,
          standby: settings.standby,
          failover,
        })
      : await fetchWalFile(ctx, walFile, destination);
    if (outcome === 'restored' && flags.cleanup) {
      await cleanupAfterRestore(store, settings.namespace, restart, destination, !!flags.includeBackup, log);
    }
    done(outcome === 'restored' ? ExitCode.ok : ExitCode.notFound);
  });
  return command;
}

/** Cleanup runs only when %r moved since the last one; its failure never fails the restore. */
async function cleanupAfterRestore(store: Store, namespace: string, restart: string | undefined, destination: string, includeBackup: boolean, log: Logger) {
  if (!restart) {
    log.warn('--cleanup needs %r (restore_command = \'archive-fetch %f %p %r --cleanup\'); nothing cleaned up');
    return;
  }
  const dataDir = dataDirOfWalPath(destination);
  const state = dataDir ? await readStandbyState(dataDir) : {};
  if (state.cleanedUpTo === restart) return;
  try {
    const { cleanupBefore } = await import('../archive/cleanup.js');
    await cleanupBefore(store, namespace, restart, { includeBackup, dryRun: false }, log);
    if (dataDir) await writeStandbyState(dataDir, { ...(await readStandbyState(dataDir)), cleanedUpTo: restart });
  } catch (err) {
    log.warn(`cleanup before ${restart} failed (the restore itself succeeded): ${(err as Error).message}`);
  }
}

/** `walbridge fetch-ahead <pg_wal>`: the background fetcher archive-fetch starts (not for direct use). */
export function fetchAheadCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('fetch-ahead')
    .description('Background fetcher started by archive-fetch: serves its calls for <pg_wal> and keeps the prefetch spool filled; exits when idle.')
    .argument('<pg_wal>', 'the pg_wal directory');
  addSettingOptions(command, 'fetch').action(async (walDir: string) => {
    const log = createLogger('walbridge fetch-ahead');
    installSignalHandlers();
    const settings = settingsFrom(command);
    // Taken before a driver is opened: the S3 driver sets an AWS_ variable of its own.
    const configuration = fingerprint(settings, process.env);
    const [{ openRepository }, { fetchAhead }, { tellingConnectedCalls }] = await Promise.all([
      import('./repository.js'),
      import('../archive/fetcher.js'),
      import('../archive/background-server.js'),
    ]);
    const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
    const ctx = { repository: repositoryId(settings), namespace: settings.namespace, log, store, retry, prefetch: settings.prefetch, keys: settings.encryption };
    await fetchAhead(ctx, path.resolve(walDir), {
      idleMs: settings.backgroundIdle * 1000,
      fingerprint: configuration,
      exitStatusOf: reportFailure,
      wait: {
        pollIntervalMs: settings.pollInterval * 1000,
        maxPollIntervalMs: settings.maxPollInterval * 1000,
        maxWaitMs: settings.maxWait * 1000,
        standby: settings.standby,
      },
    });
    done(ExitCode.ok);
  });
  return command;
}
