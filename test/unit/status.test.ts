/** What `walbridge status` reads from a listing (src/archive/repo/inspect.ts): its problems and the stream's lead over the archive. */
import { describe, expect, it } from 'vitest';
import { statusProblems, streamLead, type NamespaceStatus } from '../../src/archive/repo/inspect.js';
import { takeInventory, type ListedWithTime } from '../../src/archive/repo/inventory.js';

const MiB16 = 16 * 1024 * 1024;
const at = (s: string) => new Date(`2026-12-05T${s}Z`);

function status(listing: ListedWithTime[]): NamespaceStatus {
  return { namespace: 'ns', location: 'file:///r', identity: undefined, inventory: takeInventory('ns', listing, MiB16), triggers: [] };
}

describe('streamLead', () => {
  it('is what the chunks hold past the furthest archived segment, whatever its timeline (right after a promotion)', () => {
    const s = status([
      { key: 'ns/wal/000000010000000000000004', size: 1, lastModified: at('10:00:00') },
      { key: 'ns/wal/000000010000000000000005.partial', size: 1, lastModified: at('10:00:01') },
      { key: 'ns/history/00000002.history', size: 1, lastModified: at('10:00:01') },
      { key: 'ns/stream/000000020000000000000005/00000000-00003000', size: 1, lastModified: at('10:00:05') },
    ]);
    expect(streamLead(s)).toEqual({ timeline: 2, newestLsn: '0/5003000', newestAt: at('10:00:05'), bytesAhead: 0x3000, secondsAhead: 5 });
  });

  it('is none for chunks of a timeline a newer one replaced: a failover never restores them', () => {
    const s = status([
      { key: 'ns/wal/000000010000000000000004', size: 1, lastModified: at('10:00:00') },
      { key: 'ns/history/00000002.history', size: 1, lastModified: at('10:00:01') },
      { key: 'ns/stream/000000010000000000000005/00000000-00003000', size: 1, lastModified: at('10:00:05') },
    ]);
    expect(streamLead(s)).toBeUndefined();
  });
});

describe('statusProblems', () => {
  it('needs no history file for the first timeline archived (a cluster already on timeline 3), but for the next', () => {
    const adopted = status([{ key: 'ns/wal/000000030000000000000004', size: 1, lastModified: at('10:00:00') }]);
    expect(statusProblems(adopted, at('10:00:10'))).toEqual([]);
    const promoted = status([
      { key: 'ns/wal/000000030000000000000004', size: 1, lastModified: at('10:00:00') },
      { key: 'ns/wal/000000040000000000000005', size: 1, lastModified: at('10:00:01') },
    ]);
    expect(statusProblems(promoted, at('10:00:10'))).toEqual(['timeline 4: no 00000004.history (a standby cannot follow it)']);
  });

  it('--max-age looks at the newest segment of any timeline (a new one may hold only a .partial)', () => {
    const s = status([
      { key: 'ns/wal/000000010000000000000004', size: 1, lastModified: at('10:00:00') },
      { key: 'ns/history/00000002.history', size: 1, lastModified: at('10:00:01') },
      { key: 'ns/wal/000000020000000000000004.partial', size: 1, lastModified: at('10:00:01') },
    ]);
    expect(statusProblems(s, at('10:10:00'), { maxAgeSeconds: 60 })).toEqual(['the newest segment, 000000010000000000000004, is 10 min old (--max-age 60)']);
    expect(statusProblems(s, at('10:00:30'), { maxAgeSeconds: 60 })).toEqual([]);
  });
});
