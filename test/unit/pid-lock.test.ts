import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pidLockHeld, releasePidLock, takePidLock } from '../../src/util/pid-lock.js';

describe('pid lock of a background process', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'wb-pidlock-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is held by a live process whose command line has the marker, and taken over otherwise', async () => {
    const lock = path.join(dir, 'sub', 'pusher.pid');
    expect(await takePidLock(lock, 'vitest')).toBe(true);
    expect(await readFile(lock, 'utf8')).toBe(String(process.pid));
    expect(await pidLockHeld(lock, 'vitest')).toBe(true); // this process runs vitest
    expect(await takePidLock(lock, 'vitest')).toBe(false);
    // The same live pid, but not the process that took it (a pid reused after a reboot).
    expect(await pidLockHeld(lock, 'push-ahead')).toBe(false);
    expect(await takePidLock(lock, 'push-ahead')).toBe(true);
    // A dead process's pid file.
    await writeFile(lock, '999999999');
    expect(await pidLockHeld(lock, 'vitest')).toBe(false);
    expect(await takePidLock(lock, 'vitest')).toBe(true);
    await releasePidLock(lock);
    expect(await pidLockHeld(lock, 'vitest')).toBe(false);
  });
});
