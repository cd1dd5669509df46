/** Streamed chunk names and the choice of chunks that rebuild a segment's prefix. */
import { describe, expect, it } from 'vitest';
import { chainEnd, chunkKey, longestPrefixChain, parseChunkKey } from '../../src/archive/repo/stream-chunks.js';
import { parseLsn } from '../../src/wal/primary.js';

describe('streamed chunks', () => {
  it('names a chunk by its byte range, and reads the name back', () => {
    const key = chunkKey('db1', '000000010000000000000003', { start: 0x2000, end: 0x2fe8 });
    expect(key).toBe('db1/stream/000000010000000000000003/00002000-00002FE8');
    expect(parseChunkKey(key)).toEqual({ start: 0x2000, end: 0x2fe8 });
  });

  it.each([
    'db1/stream/000000010000000000000003/00002000-00002000',
    'db1/stream/x/2000-3000',
    'db1/stream/000000010000000000000003/00003000-00002000',
    'db1/wal/000000010000000000000003',
  ])('ignores %s', (key) => {
    expect(parseChunkKey(key)).toBeUndefined();
  });

  const c = (start: number, end: number) => ({ start, end });

  it('chains chunks from offset 0, preferring the one that reaches furthest', () => {
    expect(longestPrefixChain([c(100, 200), c(0, 100), c(200, 250)])).toEqual([c(0, 100), c(100, 200), c(200, 250)]);
    // Overlaps (a restart, two streamers): the longest step wins, overlapping bytes are equal.
    expect(longestPrefixChain([c(0, 100), c(0, 150), c(100, 300), c(150, 200)])).toEqual([c(0, 150), c(100, 300)]);
    expect(chainEnd(longestPrefixChain([c(0, 150), c(100, 300)]))).toBe(300);
  });

  it('stops at a gap, and has nothing without a chunk at offset 0', () => {
    expect(longestPrefixChain([c(0, 100), c(150, 200)])).toEqual([c(0, 100)]);
    expect(longestPrefixChain([c(10, 100)])).toEqual([]);
    expect(chainEnd([])).toBe(0);
  });

  it('parses LSNs as PostgreSQL prints them', () => {
    expect(parseLsn('0/3000028')).toBe(0x3000028n);
    expect(parseLsn('1A/FF')).toBe((0x1an << 32n) + 0xffn);
    expect(() => parseLsn('0/3000028x')).toThrow(/not an LSN/);
  });
});
