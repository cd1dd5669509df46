/** walbridge.state, written by more than one piece of one process (the fetcher's look, a call's watch). */
import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { readStandbyState, recordRestored, writeStandbyState } from '../../src/archive/restore/standby-state.js';
import { scratchDir } from '../support/scratch.js';

describe('the standby state', () => {
  it('takes writes made at once in one process, each whole, and leaves no temp file', async () => {
    const dir = await scratchDir('wb-state-');
    await Promise.all(Array.from({ length: 20 }, (_, i) => writeStandbyState(dir, { cleanedUpTo: `00000001000000000000${String(i).padStart(4, '0')}` })));
    expect((await readStandbyState(dir)).cleanedUpTo).toMatch(/^00000001000000000000\d{4}$/);
    await recordRestored(dir, '0000000000000005');
    expect((await readStandbyState(dir)).restoredUpTo).toBe('0000000000000005');
    expect(await readdir(dir)).toEqual(['walbridge.state']);
  });
});
