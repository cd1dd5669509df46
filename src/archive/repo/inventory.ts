/**
 * What a namespace holds, from a listing alone: per timeline, its segments, gaps, partial and
 * backup files, history files and the newest object; and the keys that are not walbridge's.
 * Pure logic, for `walbridge status` and `walbridge verify`.
 */
import { formatLsn } from '../../wal/header.js';
import { formatSegmentName, parseWalFileName, segmentNumber, type WalFileName } from '../../wal/names.js';
import { checkPrefix, historyPrefix, identityKey, streamPrefix, triggerPrefix, walPrefix } from './layout.js';
import { parseChunkKey } from './stream-chunks.js';
import { formatTimeline, type HistoryEntry } from './timelines.js';

export interface ListedWithTime {
  readonly key: string;
  readonly size: number;
  readonly lastModified?: Date;
}

export interface Gap {
  /** The first and last missing segment names. */
  readonly from: string;
  readonly to: string;
  readonly missing: number;
}

export interface TimelineInventory {
  readonly timeline: number;
  readonly segments: number;
  readonly first?: string;
  readonly newest?: string;
  readonly newestAt?: Date;
  readonly gaps: readonly Gap[];
  readonly partials: readonly string[];
  readonly backups: readonly string[];
  readonly hasHistory: boolean;
}

export interface Inventory {
  readonly objects: number;
  readonly bytes: number;
  readonly newestAt?: Date;
  readonly timelines: readonly TimelineInventory[];
  readonly histories: readonly string[];
  /** Keys under the namespace that walbridge never writes (or names in the wrong place). */
  readonly foreign: readonly string[];
  /** The WAL and history objects' keys, in listing order. */
  readonly walKeys: readonly string[];
  /** Chunks `walbridge stream` shipped of segments not archived yet. */
  readonly streamChunks: number;
  /** The furthest chunk shipped (the highest timeline's), if any: how far a smart failover could restore. */
  readonly newestStreamed?: StreamedPosition;
}

export interface StreamedPosition {
  readonly timeline: number;
  readonly segment: string;
  /** The end of the chunk, as an LSN. */
  readonly lsn: bigint;
  readonly at?: Date;
}

/** Sorts a namespace's listing into an inventory. `segmentSize` comes from its identity. */
export function takeInventory(namespace: string, listing: readonly ListedWithTime[], segmentSize: number): Inventory {
  const byTimeline = new Map<number, { segments: WalFileName[]; partials: string[]; backups: string[]; newestAt?: Date }>();
  const histories: string[] = [];
  const foreign: string[] = [];
  const walKeys: string[] = [];
  let bytes = 0;
  let streamChunks = 0;
  let newestStreamed: StreamedPosition | undefined;
  let newestAt: Date | undefined;
  const later = (a: Date | undefined, b: Date | undefined) => (!a ? b : !b ? a : a > b ? a : b);
  const timeline = (t: number) => {
    let entry = byTimeline.get(t);
    if (!entry) byTimeline.set(t, (entry = { segments: [], partials: [], backups: [] }));
    return entry;
  };
  for (const object of listing) {
    bytes += object.size;
    newestAt = later(newestAt, object.lastModified);
    const { key } = object;
    if (key === identityKey(namespace) || key.startsWith(triggerPrefix(namespace)) || key.startsWith(checkPrefix(namespace))) continue;
    if (key.startsWith(streamPrefix(namespace))) {
      const segment = parseWalFileName(key.slice(streamPrefix(namespace).length).split('/')[0]!);
      const range = parseChunkKey(key);
      if (segment?.kind === 'segment' && range) {
        streamChunks++;
        const lsn = segmentNumber(segment, segmentSize) * BigInt(segmentSize) + BigInt(range.end);
        if (!newestStreamed || segment.timeline > newestStreamed.timeline || (segment.timeline === newestStreamed.timeline && lsn > newestStreamed.lsn))
          newestStreamed = { timeline: segment.timeline, segment: segment.name, lsn, at: object.lastModified };
        continue;
      }
    }
    const inWal = key.startsWith(walPrefix(namespace));
    const inHistory = key.startsWith(historyPrefix(namespace));
    const file = inWal || inHistory ? parseWalFileName(key.slice(key.lastIndexOf('/') + 1)) : undefined;
    // A name in the wrong folder, or not a WAL name at all, was not written by walbridge.
    if (
      !file ||
      (file.kind === 'history') !== inHistory ||
      key.slice(0, key.lastIndexOf('/') + 1) !== (inHistory ? historyPrefix(namespace) : walPrefix(namespace))
    ) {
      foreign.push(key);
      continue;
    }
    walKeys.push(key);
    if (file.kind === 'history') {
      histories.push(file.name);
      continue;
    }
    const entry = timeline(file.timeline);
    if (file.kind === 'segment') {
      entry.segments.push(file);
      entry.newestAt = later(entry.newestAt, object.lastModified);
    } else if (file.kind === 'partial') entry.partials.push(file.name);
    else entry.backups.push(file.name);
  }
  const historyTimelines = new Set(histories.map((h) => parseInt(h.slice(0, 8), 16)));
  const timelines = [...byTimeline.entries()]
    .sort(([a], [b]) => a - b)
    .map(([t, e]): TimelineInventory => {
      const sorted = e.segments.map((f) => ({ f, n: segmentNumber(f, segmentSize) })).sort((a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : 0));
      return {
        timeline: t,
        segments: sorted.length,
        first: sorted[0]?.f.name,
        newest: sorted[sorted.length - 1]?.f.name,
        newestAt: e.newestAt,
        gaps: findGaps(
          t,
          sorted.map((s) => s.n),
          segmentSize,
        ),
        partials: e.partials.sort(),
        backups: e.backups.sort(),
        hasHistory: historyTimelines.has(t),
      };
    });
  return { objects: listing.length, bytes, newestAt, timelines, histories: histories.sort(), foreign, walKeys, streamChunks, newestStreamed };
}

/** Missing segment numbers between the first and the last of `numbers` (sorted, one timeline). */
export function findGaps(timeline: number, numbers: readonly bigint[], segmentSize: number): Gap[] {
  const gaps: Gap[] = [];
  for (let i = 1; i < numbers.length; i++) {
    const [before, after] = [numbers[i - 1]!, numbers[i]!];
    if (after - before > 1n) {
      gaps.push({
        from: formatSegmentName(timeline, before + 1n, segmentSize),
        to: formatSegmentName(timeline, after - 1n, segmentSize),
        missing: Number(after - before - 1n),
      });
    }
  }
  return gaps;
}

/**
 * What is inconsistent between timeline `timeline`'s history and the archive: parents must be
 * older timelines in increasing order with increasing switch points, and no segment of the
 * timeline may lie before the point where it branched off.
 */
export function historyProblems(timeline: number, entries: readonly HistoryEntry[], inventory: Inventory, segmentSize: number): string[] {
  const problems: string[] = [];
  const name = `${formatTimeline(timeline)}.history`;
  if (entries.length === 0) return [`${name} lists no parent timeline`];
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.parent >= timeline) problems.push(`${name}: parent timeline ${e.parent} is not older than ${timeline}`);
    if (i > 0 && (e.parent <= entries[i - 1]!.parent || e.switchpoint < entries[i - 1]!.switchpoint)) {
      problems.push(`${name}: line ${i + 1} does not follow line ${i} (timelines and switch points must increase)`);
    }
  }
  const own = inventory.timelines.find((t) => t.timeline === timeline);
  const branch = entries[entries.length - 1]!.switchpoint;
  const branchSegment = branch / BigInt(segmentSize);
  if (own?.first) {
    const first = segmentNumber(parseWalFileName(own.first)!, segmentSize);
    if (first < branchSegment) {
      problems.push(`timeline ${timeline} has ${own.first}, before it branched off at ${formatLsn(branch)} (${name})`);
    }
  }
  return problems;
}
