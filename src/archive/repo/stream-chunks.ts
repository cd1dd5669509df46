/**
 * Streamed chunks: `walbridge stream` ships the flushed bytes of the segment PostgreSQL is
 * writing as objects `<namespace>/stream/<segment>/<start>-<end>` (offsets as 8 hex digits), each
 * holding bytes [start, end) of the segment. Object stores cannot append, so every upload is a
 * new object; flushed WAL never changes, so chunks that overlap (two streamers, a restart) agree
 * on their common bytes, and any chain of chunks from offset 0 is a true prefix of the segment.
 */
import type { Store } from '../../storage/store.js';
import { streamSegmentPrefix } from './layout.js';

export interface ChunkRange {
  readonly start: number;
  readonly end: number;
}

export function chunkKey(namespace: string, segment: string, range: ChunkRange): string {
  return `${streamSegmentPrefix(namespace, segment)}${hex8(range.start)}-${hex8(range.end)}`;
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

/** The range a chunk's key names, or undefined for any other key. */
export function parseChunkKey(key: string): ChunkRange | undefined {
  const match = /\/([0-9A-F]{8})-([0-9A-F]{8})$/.exec(key);
  if (!match) return undefined;
  const start = parseInt(match[1]!, 16);
  const end = parseInt(match[2]!, 16);
  return end > start ? { start, end } : undefined;
}

/**
 * The chunks that together cover the longest prefix of the segment from offset 0, in order:
 * at each offset the chunk reaching furthest is taken (fewest downloads); a gap ends the chain.
 */
export function longestPrefixChain<T extends ChunkRange>(chunks: readonly T[]): T[] {
  const chain: T[] = [];
  let offset = 0;
  for (;;) {
    let best: T | undefined;
    for (const c of chunks) if (c.start <= offset && c.end > offset && (!best || c.end > best.end)) best = c;
    if (!best) return chain;
    chain.push(best);
    offset = best.end;
  }
}

/** How far the chain reaches (0 when empty). */
export function chainEnd(chain: readonly ChunkRange[]): number {
  return chain.length === 0 ? 0 : chain[chain.length - 1]!.end;
}

/** A chunk's name in messages. */
export function chunkName(segment: string, range: ChunkRange): string {
  return `${segment}/${range.start}-${range.end}`;
}

/** Chunks of a segment in the store, with their keys. */
export async function listChunks(store: Store, namespace: string, segment: string): Promise<(ChunkRange & { key: string })[]> {
  const chunks: (ChunkRange & { key: string })[] = [];
  for await (const object of store.list(streamSegmentPrefix(namespace, segment))) {
    const range = parseChunkKey(object.key);
    if (range) chunks.push({ ...range, key: object.key });
  }
  return chunks;
}
