/**
 * Temporary directories for tests, all under one directory per test run that the global setup
 * makes and removes (test/setup/global.ts): a file that forgets to clean up, or a run that is
 * killed, cannot fill the machine's disk run after run. Outside a run that has one (a unit-test
 * config without the global setup), they go to the system's temp directory.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';

// Where a harness outside vitest (test/servers) needs it too: that module imports no vitest.
export { removeScratch } from './remove.js';

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
