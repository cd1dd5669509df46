/** `archive-push %p` / `walbridge push %p`: PostgreSQL's archive_command. */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { confirmPushed, pushAhead, pushWithLookahead } from '../archive/lookahead.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsEnvironment, settingsFrom } from './options.js';
import { openRepository, repositoryId } from './repository.js';
import { removeTempFilesOnSignals } from './signals.js';

const WALBRIDGE_BIN = fileURLToPath(new URL('../../bin/walbridge', import.meta.url));
/** The background pusher's log starts afresh past this size. */
const LOG_LIMIT = 1024 * 1024;

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
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    // Archived ahead by the background pusher: answered from its marker, without loading any SDK.
    if (await confirmPushed(scope, walPath, log)) return done(ExitCode.ok);
    const { store } = await openRepository(settings, log);
    const ctx = { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, log };
    const startPusher = () => {
      const walDir = path.dirname(path.resolve(walPath));
      // Its log goes to a file: a detached process holding PostgreSQL's stderr pipe open would
      // outlive the call that started it there. Failures show up in PostgreSQL's log anyway,
      // when the archiver's own call for the file meets them.
      const logFile = path.join(walDir, 'walbridge', 'pusher.log');
      mkdirSync(path.dirname(logFile), { recursive: true });
      const logFd = openSync(logFile, (statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_LIMIT ? 'w' : 'a');
      try {
        const child = spawn(process.execPath, [...process.execArgv, WALBRIDGE_BIN, 'push-ahead', walDir], {
          detached: true, // outlives this call, in its own session: the archiver's signals are not its own
          stdio: ['ignore', 'ignore', logFd],
          env: { ...process.env, ...settingsEnvironment(command) },
        });
        child.unref();
      } finally {
        closeSync(logFd);
      }
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
    const { store } = await openRepository(settings, log);
    const ctx = { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, log };
    await pushAhead(ctx, scope, walDir, settings.pushConcurrency);
    done(ExitCode.ok);
  });
  return command;
}
