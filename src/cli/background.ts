/** Starting walbridge's background processes (the pusher, the fetcher) from a call. */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { backgroundLogFile, walbridgeDir, type BackgroundRole } from '../archive/local-layout.js';
import { LOG_LIMIT } from '../util/log-file.js';
import { formatServer, type ServerProcess } from '../wal/server.js';
import { settingsEnvironment } from './options.js';

const WALBRIDGE_BIN = fileURLToPath(new URL('../../bin/walbridge', import.meta.url));

/** The walbridge subcommand each background process runs. */
const SUBCOMMAND: Readonly<Record<BackgroundRole, string>> = { pusher: 'push-ahead', fetcher: 'fetch-ahead' };

/**
 * Starts `walbridge push-ahead|fetch-ahead <walDir>` detached, with the calling command's
 * settings, the environment the call was given, and the server it serves (it stops when that
 * postmaster does). It runs from `/`, so that it never holds the data directory's file system
 * busy. Its log goes to `pg_wal/walbridge/<role>.log`: a detached process holding PostgreSQL's
 * stderr pipe open would outlive the call that started it there. This call, a live child of a
 * live server, makes `pg_wal/walbridge/`; the background process never does.
 */
export function startBackground(role: BackgroundRole, walDir: string, command: Command, callEnv: NodeJS.ProcessEnv, server: ServerProcess | undefined): void {
  const logFile = backgroundLogFile(walDir, role);
  mkdirSync(walbridgeDir(walDir), { mode: 0o700, recursive: true });
  const logFd = openSync(logFile, (statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_LIMIT ? 'w' : 'a');
  try {
    const child = spawn(process.execPath, [...process.execArgv, WALBRIDGE_BIN, SUBCOMMAND[role], ...(server ? ['--server', formatServer(server)] : []), walDir], {
      detached: true, // outlives this call, in its own session: PostgreSQL's signals to the call are not its own
      cwd: '/',
      stdio: ['ignore', 'ignore', logFd],
      env: { ...callEnv, ...settingsEnvironment(command) },
    });
    child.unref();
  } finally {
    closeSync(logFd);
  }
}
