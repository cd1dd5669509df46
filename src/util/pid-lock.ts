/** A pid file as the lock of a single background process (one pusher, one fetcher per pg_wal). */
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Creates the pid file, replacing one left by a dead process; false if a live process holds it. */
export async function takePidLock(lock: string): Promise<boolean> {
  await mkdir(path.dirname(lock), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lock, String(process.pid), { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (await pidLockHeld(lock)) return false;
      await unlink(lock).catch(() => undefined);
    }
  }
  return false;
}

export async function releasePidLock(lock: string): Promise<void> {
  await unlink(lock).catch(() => undefined);
}

/** Whether a live process holds the pid file. */
export async function pidLockHeld(lock: string): Promise<boolean> {
  return processAlive(Number(await readFile(lock, 'utf8').catch(() => '')));
}

export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
