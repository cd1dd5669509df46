/** `archive-push %p` / `walbridge push %p`: PostgreSQL's archive_command. */
import path from 'node:path';
import { Command } from 'commander';
import { confirmPushed, walDirOf } from '../archive/markers.js';
import { ask, backgroundSocket, fingerprint } from '../archive/background-link.js';
import type { PushAnswer } from '../archive/lookahead.js';
import type { PushContext } from '../archive/push.js';
import type { Settings } from '../config/settings.js';
import type { RetryPolicy } from '../storage/retry.js';
import type { Store } from '../storage/store.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository, repositoryId } from './repository.js';
import { removeTempFilesOnSignals } from './signals.js';
import { reportFailure } from './failure.js';
import { backgroundAnswerWaitMs, noBackgroundAnswer } from './background-answer.js';
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
    const settings = settingsFrom(command);
    meterCall(settings.metricsFile, 'push');
    meterWalFile(walPath);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    const callEnv = { ...process.env }; // as the call got it: drivers may add variables of their own
    // Archived ahead by the background pusher: answered from its marker, without loading any SDK.
    if (await confirmPushed(scope, walPath, log)) return done(ExitCode.ok);
    // Or stored now by the pusher, which has the SDK loaded and connections open.
    const walDir = walDirOf(walPath);
    if (walDir && settings.pushConcurrency > 1) {
      const request = { walbridge: 1, fingerprint: fingerprint(settings, callEnv), file: path.resolve(walPath) } as const;
      // The pusher stores it within its own --timeout deadline, so the call waits little longer than that.
      const waitMs = backgroundAnswerWaitMs(settings.timeout);
      const asked = Date.now();
      const answer = await ask<PushAnswer>(backgroundSocket(walDir, 'pusher'), request, log, { timeoutMs: waitMs });
      if (answer === undefined && Date.now() - asked >= waitMs) throw noBackgroundAnswer('pusher', `push of ${path.basename(walPath)}`, settings.timeout);
      if (answer?.status === 'stored') return done(ExitCode.ok);
      // Access refused may be the pusher's stale credentials: this call tries with its own.
      if (answer?.status === 'failed' && answer.exitCode !== ExitCode.storeAccess) return done(answer.exitCode as ExitStatus);
      if (answer?.status === 'declined') log.info(`the background pusher declined (${answer.reason}); pushing directly`);
    }
    // Loaded only now: calls answered above never pay for the SDK, compression or child processes.
    const [{ pushWithLookahead }, { startBackground }] = await Promise.all([import('../archive/lookahead.js'), import('./background.js')]);
    const { store, retry } = await openRepository(settings, log);
    const ctx = pushContext(settings, store, retry, log);
    const startPusher = () => {
      if (walDir) startBackground('pusher', walDir, command, callEnv);
    };
    await pushWithLookahead(ctx, walPath, settings.pushConcurrency, startPusher);
    done(ExitCode.ok);
  });
  return command;
}

/** `walbridge push-ahead <pg_wal>`: the background pusher archive-push starts (not for direct use). */
export function pushAheadCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('push-ahead')
    .description('Background pusher started by archive-push: stores the files marked .ready in <pg_wal> and exits when idle.')
    .argument('<pg_wal>', 'the pg_wal directory');
  addSettingOptions(command, 'push').action(async (walDir: string) => {
    const log = createLogger('walbridge push-ahead');
    removeTempFilesOnSignals();
    const settings = settingsFrom(command);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    // Taken before a driver is opened: the S3 driver sets an AWS_ variable of its own.
    const configuration = fingerprint(settings, process.env);
    const [{ pushAhead }, { tellingConnectedCalls }] = await Promise.all([import('../archive/lookahead.js'), import('../archive/background-server.js')]);
    const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
    const ctx = pushContext(settings, store, retry, log);
    await pushAhead(ctx, scope, path.resolve(walDir), {
      concurrency: settings.pushConcurrency,
      idleMs: settings.backgroundIdle * 1000,
      fingerprint: configuration,
      exitStatusOf: reportFailure,
    });
    done(ExitCode.ok);
  });
  return command;
}

function pushContext(settings: Settings, store: Store, retry: RetryPolicy, log: Logger): PushContext {
  return { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, encryption: settings.encryption, log, retry };
}
