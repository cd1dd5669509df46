/** `archive-push %p` / `walbridge push %p`: PostgreSQL's archive_command. */
import path from 'node:path';
import { Command, Option } from 'commander';
import { confirmPushed } from '../archive/push/markers.js';
import { answerWaitMs, ask, failureOf, fingerprint, noAnswer } from '../archive/background/client.js';
import { backgroundSocket, prefetchDir, walDirOf } from '../archive/local-layout.js';
import type { PushAnswer } from '../archive/push/pusher.js';
import type { PushContext } from '../archive/push/push.js';
import type { Settings } from '../config/settings.js';
import type { RetryPolicy } from '../storage/retry.js';
import type { Store } from '../storage/store.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { formatServer, parseServer, runningServer } from '../wal/server.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository, repositoryId } from '../archive/repo/open.js';
import { removeTempFilesOnSignals } from './signals.js';
import { meterCall, meterWalFile } from './metrics.js';

export function pushCommand(name: string, done: (status: ExitStatus) => void): Command {
  const command = new Command(name)
    .summary('archive one finished WAL file (archive_command)')
    .description('Archive one finished WAL file (archive_command). Exits 0 only when the repository holds exactly its bytes, verified.')
    .argument('<path>', 'the WAL file to archive (%p)')
    .addHelpText(
      'after',
      `\nUse in postgresql.conf:\n  archive_command = '${name === 'push' ? 'walbridge push' : 'archive-push'} %p'\n\n${EXIT_CODE_HELP}`,
    );
  addSettingOptions(command, 'push').action(async (walPath: string) => {
    const log = createLogger(name === 'push' ? 'walbridge push' : name);
    removeTempFilesOnSignals(); // a large body may be spilled to a temp file in pg_wal
    const settings = await settingsFrom(command, 'push');
    meterCall(settings.metricsFile, 'push');
    meterWalFile(walPath);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    const callEnv = { ...process.env }; // as the call got it: drivers may add variables of their own
    const walDir = walDirOf(walPath);
    if (walDir) await removeLeftoverSpool(walDir);
    // Archived ahead by the background pusher: answered from its marker, without loading any SDK.
    if (await confirmPushed(scope, walPath, log)) return done(ExitCode.ok);
    // Or stored now by the pusher, which has the SDK loaded and connections open.
    const dataDir = dataDirOfWalPath(walPath);
    const server = dataDir && settings.pushConcurrency > 1 ? await runningServer(dataDir, { ancestorOnly: true }) : undefined;
    if (walDir && settings.pushConcurrency > 1) {
      const request = { walbridge: 1, fingerprint: fingerprint(settings, callEnv, server && formatServer(server)), file: path.resolve(walPath) } as const;
      // The pusher stores it within its own --timeout deadline, so the call waits little longer than that.
      const waitMs = answerWaitMs(settings.timeout);
      const asked = Date.now();
      const answer = await ask<PushAnswer>(backgroundSocket(walDir, 'pusher'), request, log, { timeoutMs: waitMs });
      if (answer === undefined && Date.now() - asked >= waitMs) throw noAnswer('pusher', `push of ${path.basename(walPath)}`, settings.timeout);
      if (answer?.status === 'stored') return done(ExitCode.ok);
      // Access refused may be the pusher's stale credentials: this call tries with its own.
      if (answer?.status === 'failed' && answer.exitCode !== ExitCode.storeAccess) throw failureOf(answer);
      if (answer?.status === 'declined') log.info(`the background pusher declined (${answer.reason}); pushing directly`);
    }
    // Loaded only now: calls answered above never pay for the SDK, compression or child processes.
    const [{ pushWithLookahead }, { startBackground }] = await Promise.all([import('../archive/push/pusher.js'), import('./background.js')]);
    const { store, retry } = await openRepository(settings, log);
    const ctx = pushContext(settings, store, retry, log);
    const startPusher = () => {
      if (walDir) startBackground('pusher', walDir, command, callEnv, server);
    };
    await pushWithLookahead(ctx, walPath, settings.pushConcurrency, startPusher);
    done(ExitCode.ok);
  });
  return command;
}

/**
 * A promoted standby's prefetch spool can serve nobody: the first archive_command of the new
 * primary removes it if the background fetcher has not. One stat when there is none.
 */
async function removeLeftoverSpool(walDir: string): Promise<void> {
  const { stat } = await import('node:fs/promises');
  if (!(await stat(prefetchDir(walDir)).then(() => true, () => false))) return;
  const { removeSpoolAfterRecovery } = await import('../archive/restore/spool.js');
  await removeSpoolAfterRecovery(walDir);
}

/** `walbridge push-ahead <pg_wal>`: the background pusher archive-push starts (not for direct use). */
export function pushAheadCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('push-ahead')
    .description('Background pusher started by archive-push: stores the files marked .ready in <pg_wal>; exits when idle or when its server stops.')
    .argument('<pg_wal>', 'the pg_wal directory')
    .addOption(new Option('--server <pid:start>', 'the postmaster whose archiver started it: the pusher stops when it does').hideHelp());
  addSettingOptions(command, 'push').action(async (walDir: string) => {
    const log = createLogger('walbridge push-ahead');
    removeTempFilesOnSignals();
    const settings = await settingsFrom(command, 'push');
    const server = parseServer(command.opts<{ server?: string }>().server ?? '');
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    // Taken before a driver is opened: the S3 driver sets an AWS_ variable of its own.
    const configuration = fingerprint(settings, process.env, server && formatServer(server));
    const [{ pushAhead }, { tellingConnectedCalls }] = await Promise.all([import('../archive/push/pusher.js'), import('../archive/background/server.js')]);
    const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
    const ctx = pushContext(settings, store, retry, log);
    await pushAhead(ctx, scope, path.resolve(walDir), {
      concurrency: settings.pushConcurrency,
      idleMs: settings.backgroundIdle * 1000,
      fingerprint: configuration,
      server,
    });
    done(ExitCode.ok);
  });
  return command;
}

function pushContext(settings: Settings, store: Store, retry: RetryPolicy, log: Logger): PushContext {
  return { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, encryption: settings.encryption, log, retry };
}
