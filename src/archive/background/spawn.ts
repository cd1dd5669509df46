/** Starting walbridge's background processes (the pusher, the fetcher) from a call. */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LOG_LIMIT } from '../../util/log-file.js';
import { formatServer, type ServerProcess } from '../../wal/server.js';
import { backgroundLogFile, walbridgeDir, type BackgroundRole } from '../local-layout.js';

// Node's half of bin/walbridge (run with this process's Node: no front-end needed), resolved from
// where this code runs: the bundle, dist/bundle/, or tsc's output, dist/archive/background/.
const CANDIDATES = ['../../bin/node/walbridge.mjs', '../../../bin/node/walbridge.mjs'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
const WALBRIDGE_BIN = CANDIDATES.find((p) => existsSync(p)) ?? CANDIDATES[0]!;

/**
 * glibc's allocator for a long-lived process that handles one 16 MiB segment after another: the
 * calls' fixed 128 KiB mmap threshold (bin/, for a call's bounded peak on a 1 GiB segment) hands
 * every big buffer back to the kernel, and this VM charges ~6 us a page fault to get it again
 * (7,000 faults a zstd-decoded segment). One arena, big buffers from the heap, and a heap that
 * is not trimmed: the restore path took 168 -> 54 ms of CPU a segment, the pusher 158 -> 117.
 */
const BACKGROUND_ALLOCATOR = { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '67108864', MALLOC_TRIM_THRESHOLD_: '268435456' };

/**
 * Starts `walbridge <role> <walDir>` (the subcommand is the role's name) detached, in `env`: the
 * environment the call was given and its settings. It serves `server` (it stops when that
 * postmaster does), and runs from `/`, so that it never holds the data directory's file system
 * busy. Its log goes to `pg_wal/walbridge/<role>.log`: a detached process holding PostgreSQL's
 * stderr pipe open would outlive the call that started it there. This call, a live child of a
 * live server, makes `pg_wal/walbridge/`; the background process never does.
 */
export function startBackground(role: BackgroundRole, walDir: string, env: NodeJS.ProcessEnv, server: ServerProcess | undefined): void {
  const logFile = backgroundLogFile(walDir, role);
  mkdirSync(walbridgeDir(walDir), { mode: 0o700, recursive: true });
  const logFd = openSync(logFile, (statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_LIMIT ? 'w' : 'a');
  try {
    const child = spawn(process.execPath, [...process.execArgv, WALBRIDGE_BIN, role, ...(server ? ['--server', formatServer(server)] : []), walDir], {
      detached: true, // outlives this call, in its own session: PostgreSQL's signals to the call are not its own
      cwd: '/',
      stdio: ['ignore', 'ignore', logFd],
      env: { ...env, ...BACKGROUND_ALLOCATOR },
    });
    child.unref();
  } finally {
    closeSync(logFd);
  }
}
