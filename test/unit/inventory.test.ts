import { describe, expect, it } from 'vitest';
import { findGaps, historyProblems, takeInventory } from '../../src/archive/repo/inventory.js';
import { parseHistory } from '../../src/archive/repo/timelines.js';

const MiB16 = 16 * 1024 * 1024;
const at = (s: string) => new Date(`2026-11-24T${s}Z`);

describe('takeInventory', () => {
  const listing = [
    { key: 'ns/identity.json', size: 400, lastModified: at('10:00:00') },
    { key: 'ns/history/00000002.history', size: 40, lastModified: at('10:05:00') },
    { key: 'ns/wal/000000010000000000000001', size: 100, lastModified: at('10:01:00') },
    { key: 'ns/wal/000000010000000000000002', size: 100, lastModified: at('10:02:00') },
    { key: 'ns/wal/000000010000000000000005', size: 100, lastModified: at('10:03:00') },
    { key: 'ns/wal/000000010000000000000005.partial', size: 100, lastModified: at('10:04:00') },
    { key: 'ns/wal/000000010000000000000001.00000028.backup', size: 10 },
    { key: 'ns/wal/000000020000000000000005', size: 100, lastModified: at('10:06:00') },
    { key: 'ns/wal/000000030000000000000007', size: 100, lastModified: at('10:07:00') },
    { key: 'ns/trigger/all', size: 90, lastModified: at('10:08:00') },
    { key: 'ns/check/walbridge-check-0123456789ab', size: 16 }, // walbridge check's probe, left by a store that took it
    { key: 'ns/stream/000000010000000000000006/00000000-00002000', size: 30, lastModified: at('10:09:00') },
    { key: 'ns/stream/000000010000000000000006/00002000-00003000', size: 30, lastModified: at('10:09:01') },
    { key: 'ns/stream/000000010000000000000004/00000000-00004000', size: 30, lastModified: at('10:09:02') },
    { key: 'ns/wal/notes.txt', size: 5 },
    { key: 'ns/wal/00000002.history', size: 40 },
    { key: 'ns/other/000000010000000000000009', size: 5 },
  ];
  const inv = takeInventory('ns', listing, MiB16);

  it('groups segments per timeline, with first, newest, its time and the gaps', () => {
    expect(inv.timelines.map((t) => [t.timeline, t.segments, t.first, t.newest])).toEqual([
      [1, 3, '000000010000000000000001', '000000010000000000000005'],
      [2, 1, '000000020000000000000005', '000000020000000000000005'],
      [3, 1, '000000030000000000000007', '000000030000000000000007'],
    ]);
    expect(inv.timelines[0]!.newestAt).toEqual(at('10:03:00'));
    expect(inv.timelines[0]!.gaps).toEqual([{ from: '000000010000000000000003', to: '000000010000000000000004', missing: 2 }]);
    expect(inv.timelines[0]!.partials).toEqual(['000000010000000000000005.partial']);
    expect(inv.timelines[0]!.backups).toEqual(['000000010000000000000001.00000028.backup']);
  });

  it('knows which timelines have a history file', () => {
    expect(inv.histories).toEqual(['00000002.history']);
    expect(inv.timelines.map((t) => t.hasHistory)).toEqual([false, true, false]);
  });

  it('calls foreign what walbridge never writes there, and counts everything', () => {
    expect(inv.foreign).toEqual(['ns/wal/notes.txt', 'ns/wal/00000002.history', 'ns/other/000000010000000000000009']);
    expect(inv.objects).toBe(listing.length);
    expect(inv.newestAt).toEqual(at('10:09:02'));
    expect(inv.walKeys).not.toContain('ns/trigger/all');
    expect(inv.streamChunks).toBe(3);
    expect(inv.newestStreamed).toEqual({ timeline: 1, segment: '000000010000000000000006', lsn: 6n * 16n * 1024n * 1024n + 0x3000n, at: at('10:09:01') });
    expect(inv.walKeys).not.toContain('ns/check/walbridge-check-0123456789ab');
    expect(inv.walKeys).toContain('ns/history/00000002.history');
  });
});

describe('findGaps', () => {
  it('finds missing runs across a log boundary (255 segments per log id at 16 MiB)', () => {
    expect(findGaps(1, [0xfen, 0x101n], MiB16)).toEqual([{ from: '0000000100000000000000FF', to: '000000010000000100000000', missing: 2 }]);
    expect(findGaps(1, [1n, 2n, 3n], MiB16)).toEqual([]);
  });
});

describe('timeline histories', () => {
  it('parses PostgreSQL history files', () => {
    expect(parseHistory('1\t0/5000000\tno recovery target specified\n\n2\t1/A0\tbefore 2026-11-24\n')).toEqual([
      { parent: 1, switchpoint: 0x5000000n },
      { parent: 2, switchpoint: (1n << 32n) | 0xa0n },
    ]);
    expect(parseHistory('garbage line')).toMatch(/line 1/);
  });

  it('reports parents out of order and segments from before the branch point', () => {
    const inv = takeInventory('ns', [{ key: 'ns/wal/000000020000000000000003', size: 1 }], MiB16);
    expect(historyProblems(2, [{ parent: 1, switchpoint: 0x5000000n }], inv, MiB16)).toEqual([
      'timeline 2 has 000000020000000000000003, before it branched off at 0/5000000 (00000002.history)',
    ]);
    expect(historyProblems(2, [{ parent: 1, switchpoint: 0x3000000n }], inv, MiB16)).toEqual([]);
    expect(
      historyProblems(
        3,
        [
          { parent: 2, switchpoint: 5n },
          { parent: 1, switchpoint: 6n },
        ],
        inv,
        MiB16,
      ),
    ).toHaveLength(1);
    expect(historyProblems(2, [{ parent: 2, switchpoint: 5n }], inv, MiB16)[0]).toMatch(/not older/);
    expect(historyProblems(2, [], inv, MiB16)).toEqual(['00000002.history lists no parent timeline']);
  });
});
