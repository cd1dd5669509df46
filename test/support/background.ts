/** Where a test sees walbridge's background processes of a pg_wal: their socket (outside the data directory) and pid file. */
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { backgroundSocket, pidFile, type BackgroundRole } from '../../src/archive/local-layout.js';

/** Whether the background `role` of `walDir` takes connections. */
export function backgroundListening(walDir: string, role: BackgroundRole): Promise<boolean> {
  const socket = backgroundSocket(walDir, role);
  if (!socket) return Promise.resolve(false);
  return new Promise((resolve) => {
    const c = connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** The pid in the background `role`'s pid file (0 without one). */
export async function backgroundPid(walDir: string, role: BackgroundRole): Promise<number> {
  return Number(await readFile(pidFile(walDir, role), 'utf8').catch(() => '0')) || 0;
}
