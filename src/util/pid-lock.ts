/** A pid file as the lock of a single background process (one pusher, one fetcher per pg_wal). */
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Creates the pid file, replacing one left by a dead process; false if a live process holds it.
 * `marker` (a word of the holder's command line) tells a holder from an unrelated process that
 * got the same pid after a reboot.
 */
export async function takePidLock(lock: string, marker: string): Promise<boolean> {
  await mkdir(path.dirname(lock), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lock, String(process.pid), { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (await pidLockHeld(lock, marker)) return false;
      await unlink(lock).catch(() => undefined);
    }
  }
  return false;
}

export async function releasePidLock(lock: string): Promise<void> {
  await unlink(lock).catch(() => undefined);
}

/** Whether a live process whose command line has `marker` holds the pid file. */
export async function pidLockHeld(lock: string, marker: string): Promise<boolean> {
  const pid = Number(await readFile(lock, 'utf8').catch(() => ''));
  if (!processAlive(pid)) return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  return cmdline === undefined || cmdline.includes(marker); // without /proc, trust the pid
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
