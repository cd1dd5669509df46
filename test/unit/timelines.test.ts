import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { sealBuffer } from '../../src/codec/envelope.js';
import { deadBranch, fencedError, findFork, pastFork, type Fork } from '../../src/archive/repo/timelines.js';
import { FsStore } from '../../src/storage/fs.js';
import { parseWalFileName } from '../../src/wal/names.js';
import { scratchDir } from '../support/scratch.js';

const MiB16 = 16 * 1024 * 1024;
const file = (name: string) => parseWalFileName(name)!;
/** Timeline 1 ended at 0/5000028, inside segment 5, when timeline 2 was promoted. */
const fork: Fork = { timeline: 1, newer: 2, switchpoint: 0x5000028n };

describe('the fence a newer timeline puts up', () => {
  it("refuses the old timeline's segments that reach past the switch point, and only those", () => {
    expect(pastFork(file('000000010000000000000004'), MiB16, fork)).toBe(false);
    expect(pastFork(file('000000010000000000000005'), MiB16, fork)).toBe(true); // holds WAL after 0/5000028
    expect(pastFork(file('000000010000000000000006'), MiB16, fork)).toBe(true);
    expect(pastFork(file('000000010000000100000000'), MiB16, fork)).toBe(true);
    // A switch point on a segment boundary: the segment that ends there is whole history.
    const atBoundary: Fork = { ...fork, switchpoint: 0x6000000n };
    expect(pastFork(file('000000010000000000000005'), MiB16, atBoundary)).toBe(false);
    expect(pastFork(file('000000010000000000000006'), MiB16, atBoundary)).toBe(true);
  });

  it('lets through other timelines, .partial and .history files; .backup labels by where the backup started', () => {
    expect(pastFork(file('000000020000000000000009'), MiB16, fork)).toBe(false);
    expect(pastFork(file('000000010000000000000005.partial'), MiB16, fork)).toBe(false);
    expect(pastFork(file('00000001.history'), MiB16, fork)).toBe(false);
    expect(pastFork(file('000000010000000000000005.00000020.backup'), MiB16, fork)).toBe(false);
    expect(pastFork(file('000000010000000000000005.00000028.backup'), MiB16, fork)).toBe(true);
  });

  it('counts a stored dead branch from the first segment that starts at or after the switch point', () => {
    const names = [
      '000000010000000000000004',
      '000000010000000000000005',
      '000000010000000000000006',
      '000000010000000000000007.partial',
      '000000020000000000000006',
      '00000002.history',
    ];
    expect(deadBranch(names, MiB16, fork)).toEqual(['000000010000000000000006']);
  });

  it('names the promotion and what to do in one line', () => {
    const message = fencedError('prod', '000000010000000000000006', fork).message;
    expect(message).toMatch(
      /^refusing 000000010000000000000006: timeline 1 ended at 0\/5000028 when timeline 2 was promoted from it \(00000002\.history in namespace "prod"\)/,
    );
    expect(message).not.toContain('\n');
    expect(fencedError('prod', 'x', fork).exitCode).toBe(16);
  });
});

describe('finding the fork in a store, as PostgreSQL probes timelines', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  async function storeWith(histories: Record<string, string>): Promise<FsStore> {
    const dir = await scratchDir('walbridge-timelines-');
    dirs.push(dir);
    const store = new FsStore(dir);
    for (const [name, text] of Object.entries(histories)) await store.putIfAbsent(`ns/history/${name}`, sealBuffer(Buffer.from(text)));
    return store;
  }

  it('finds none without a newer history, and the earliest switch point among newer ones', async () => {
    expect(await findFork(await storeWith({}), 'ns', 1, undefined)).toBeUndefined();
    const store = await storeWith({
      '00000002.history': '1\t0/5000028\tno recovery target specified\n',
      // Timeline 3 branched off timeline 1 later (a second promotion of another standby), then 4 off 2.
      '00000003.history': '1\t0/7000000\tno recovery target specified\n',
      '00000004.history': '1\t0/5000028\tno recovery target specified\n2\t0/9000000\tno recovery target specified\n',
    });
    expect(await findFork(store, 'ns', 1, undefined)).toEqual({ timeline: 1, newer: 2, switchpoint: 0x5000028n });
    expect(await findFork(store, 'ns', 2, undefined)).toEqual({ timeline: 2, newer: 4, switchpoint: 0x9000000n });
    expect(await findFork(store, 'ns', 4, undefined)).toBeUndefined();
    // Probing stops at the first absent history, as PostgreSQL's does.
    const gap = await storeWith({ '00000003.history': '1\t0/7000000\treason\n' });
    expect(await findFork(gap, 'ns', 1, undefined)).toBeUndefined();
  });

  it('fails closed (exit 16) on a newer history it cannot read', async () => {
    const store = await storeWith({ '00000002.history': 'not a history\n' });
    await expect(findFork(store, 'ns', 1, undefined)).rejects.toMatchObject({
      kind: 'fenced',
      message: expect.stringMatching(/00000002\.history .* cannot be read/),
    });
  });
});
