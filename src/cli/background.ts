/** Starting walbridge's background processes (the pusher, the fetcher) from a call. */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { BACKGROUND_COMMAND, type BackgroundRole } from '../archive/background-link.js';
import { walbridgeDir } from '../archive/markers.js';
import { LOG_LIMIT } from '../util/log-file.js';
import { settingsEnvironment } from './options.js';

const WALBRIDGE_BIN = fileURLToPath(new URL('../../bin/walbridge', import.meta.url));

/**
 * Starts `walbridge push-ahead|fetch-ahead <walDir>` detached, with the calling command's
 * settings and the environment the call was given. Its log goes to
 * `pg_wal/walbridge/<role>.log`: a detached process holding PostgreSQL's stderr pipe open would
 * outlive the call that started it there. Whatever it fails at, the calls meet and report.
 */
export function startBackground(role: BackgroundRole, walDir: string, command: Command, callEnv: NodeJS.ProcessEnv): void {
  const logFile = path.join(walbridgeDir(walDir), `${role}.log`);
  mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const logFd = openSync(logFile, (statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_LIMIT ? 'w' : 'a');
  try {
    const child = spawn(process.execPath, [...process.execArgv, WALBRIDGE_BIN, BACKGROUND_COMMAND[role], walDir], {
      detached: true, // outlives this call, in its own session: PostgreSQL's signals to the call are not its own
      stdio: ['ignore', 'ignore', logFd],
      env: { ...callEnv, ...settingsEnvironment(command) },
    });
    child.unref();
  } finally {
    closeSync(logFd);
  }
}
