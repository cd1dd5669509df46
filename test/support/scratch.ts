/**
 * Temporary directories for tests, all under one directory per test run that the global setup
 * makes and removes (test/setup/global.ts): a file that forgets to clean up, or a run that is
 * killed, cannot fill the machine's disk run after run. Outside a run that has one (a unit-test
 * config without the global setup), they go to the system's temp directory.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';

export function scratchRoot(): string {
  let root: string | undefined;
  try {
    root = inject('scratch');
  } catch {
    root = undefined;
  }
  return root ?? tmpdir();
}

/** A new directory named `<prefix>XXXXXX` under the run's scratch directory. */
export function scratchDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(scratchRoot(), prefix));
}

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
