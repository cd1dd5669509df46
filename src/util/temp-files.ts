/**
 * Temp files a command is writing right now, so a signal handler can remove them before the
 * process dies: SIGTERM must leave neither a partial destination nor litter behind.
 */
import { unlinkSync } from 'node:fs';
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';

const pending = new Set<string>();

export function trackTempFile(file: string): void {
  pending.add(file);
}

export function untrackTempFile(file: string): void {
  pending.delete(file);
}

export function removeTempFilesSync(): void {
  for (const file of pending) {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  }
  pending.clear();
}

/**
 * Removes, in `dir`, the temp files of processes that are gone (`kill -9` leaves them): every
 * walbridge temp file is a dot file naming its writer, `.….walbridge-<pid>-…` or
 * `.walbridge-body-<pid>-…`. Never a file of a live process.
 */
export async function sweepDeadTempFiles(dir: string): Promise<void> {
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    const writer = /^\..*\.?walbridge-(?:body-)?(\d+)-/.exec(entry);
    if (writer && !processAlive(Number(writer[1]))) await unlink(path.join(dir, entry)).catch(() => undefined);
  }
}

/** Whether a process with this pid exists (temp file names carry their writer's pid). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
