/**
 * Where walbridge's background processes of one cluster listen: `<tmp>/walbridge-<uid>/<id>/`,
 * outside the data directory (pg_rewind and file-level backups fail on a socket there), 0700
 * and owned by the user, and short whatever the data directory's path: a Unix socket path has
 * at most 107 bytes, and Node cuts a longer one short without a word. `<id>` names the pg_wal
 * directory by its real path, device and inode, so a cluster re-created at the same path gets
 * another directory.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir } from 'node:fs/promises';
import { realpathSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** sockaddr_un.sun_path is 108 bytes with its terminating NUL. */
const SOCKET_PATH_MAX = 107;

export interface ClusterRuntime {
  /** The directory the cluster's sockets live in. */
  readonly dir: string;
  /** Names the cluster's pg_wal among all (16 hex digits). */
  readonly id: string;
}

/** The runtime directory of the cluster whose pg_wal is `walDir` (not created), or undefined if pg_wal cannot be read. */
export function clusterRuntime(walDir: string): ClusterRuntime | undefined {
  let id: string;
  try {
    const real = realpathSync(walDir);
    const st = statSync(real);
    id = createHash('sha256').update(`${real}\0${st.dev}\0${st.ino}`).digest('hex').slice(0, 16);
  } catch {
    return undefined;
  }
  const uid = process.getuid?.() ?? 0;
  for (const base of [tmpdir(), '/tmp']) {
    const dir = path.join(base, `walbridge-${uid}`, id);
    if (Buffer.byteLength(path.join(dir, 'fetcher.sock')) <= SOCKET_PATH_MAX) return { dir, id };
  }
  return undefined;
}

/** A socket in `runtime` if its path fits a Unix socket address, else undefined. */
export function socketIn(runtime: ClusterRuntime, name: string): string | undefined {
  const socket = path.join(runtime.dir, name);
  return Buffer.byteLength(socket) <= SOCKET_PATH_MAX ? socket : undefined;
}

/**
 * Creates the runtime directory and its parent if needed, and refuses them unless they are
 * directories of this user that nobody else may enter: the parent lives in a shared /tmp,
 * where someone else could have made it first.
 */
export async function ensureRuntimeDir(runtime: ClusterRuntime): Promise<void> {
  const uid = process.getuid?.();
  for (const dir of [path.dirname(runtime.dir), runtime.dir]) {
    await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    const st = await lstat(dir);
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
      throw new Error(`${dir} is not a private directory of this user (it must be a directory owned by uid ${uid} with mode 0700): remove it`);
    }
  }
}
