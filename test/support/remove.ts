/**
 * Removing test directories, free of vitest (test/servers/postgres.ts uses it from processes
 * vitest does not run).
 */
import { readdir, rm } from 'node:fs/promises';

/**
 * Removes `dir` like rm -rf, trying again while something writes into it: walbridge's background
 * processes, which stop within a second or two of their server (or when idle), may add a last
 * log line to pg_wal/walbridge/ while it is removed (ENOTEMPTY). Says what was written.
 */
export async function removeScratch(dir: string): Promise<void> {
  for (let tries = 0; ; tries++) {
    try {
      return await rm(dir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' || tries >= 50) throw err;
      if (tries === 0) {
        const left = await readdir(dir, { recursive: true }).catch(() => []);
        console.warn(`removing ${dir}: written to while it was removed (${left.slice(0, 8).join(', ')}); trying again`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
