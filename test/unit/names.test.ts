import { describe, expect, it } from 'vitest';
import { formatSegmentName, nextSegmentName, parseWalFileName, precedesRestartPoint, segmentNumber, segmentFitsSize } from '../../src/wal/names.js';

const MiB = 1024 * 1024;

describe('parseWalFileName', () => {
  it('accepts the four kinds of files PostgreSQL archives', () => {
    expect(parseWalFileName('000000010000000A000000FF')).toMatchObject({ kind: 'segment', timeline: 1, log: 10, seg: 255 });
    expect(parseWalFileName('00000002000000000000000C.partial')).toMatchObject({ kind: 'partial', timeline: 2, seg: 12 });
    expect(parseWalFileName('0000000A.history')).toMatchObject({ kind: 'history', timeline: 10 });
    expect(parseWalFileName('000000010000000000000002.00000028.backup')).toMatchObject({ kind: 'backup', timeline: 1, seg: 2 });
  });

  it.each([
    '',
    '../000000010000000000000001',
    '/etc/passwd',
    '00000001/0000000000000001',
    '000000010000000000000001/',
    '000000010000000000000001\0',
    '000000010000000000000001\n',
    ' 000000010000000000000001',
    '000000010000000000000001.gz',
    '00000001000000000000000g',
    '000000010000000000000001a', // lower-case hex: PostgreSQL never writes it
    '00000000000000000000000A', // timeline 0 does not exist
    '00000000.history',
    '0000000100000000000000001', // 25 digits
    'RECOVERYXLOG',
    '..',
    'x'.repeat(10_000),
    '00000001.history.partial',
    '000000010000000000000001.partial.backup',
  ])('refuses %j', (name) => {
    expect(parseWalFileName(name)).toBeUndefined();
  });
});

describe('segment arithmetic', () => {
  it('maps names to segment numbers for 16 MiB segments (256 per log id)', () => {
    const file = parseWalFileName('000000010000000200000003')!;
    expect(segmentNumber(file, 16 * MiB)).toBe(2n * 256n + 3n);
    expect(formatSegmentName(1, 2n * 256n + 3n, 16 * MiB)).toBe('000000010000000200000003');
  });

  it('wraps to the next log id after the last segment of one', () => {
    expect(nextSegmentName('0000000100000000000000FF', 16 * MiB)).toBe('000000010000000100000000');
    expect(nextSegmentName('000000010000000000000FFF', 1 * MiB)).toBe('000000010000000100000000');
    expect(nextSegmentName('000000010000000000000003', 1024 * MiB)).toBe('000000010000000100000000');
    expect(nextSegmentName('00000001.history', 16 * MiB)).toBeUndefined();
  });

  it('knows which segment parts exist for a segment size', () => {
    expect(segmentFitsSize(parseWalFileName('000000010000000000000100')!, 16 * MiB)).toBe(false);
    expect(segmentFitsSize(parseWalFileName('000000010000000000000100')!, 1 * MiB)).toBe(true);
  });
});

describe('precedesRestartPoint (pg_archivecleanup rule)', () => {
  const restart = parseWalFileName('000000020000000100000010')!;
  it('compares log and segment, ignoring the timeline', () => {
    expect(precedesRestartPoint('00000001000000010000000F', restart)).toBe(true);
    expect(precedesRestartPoint('00000003000000000000FFFF'.slice(0, 24), restart)).toBe(true);
    expect(precedesRestartPoint('000000010000000100000010', restart)).toBe(false);
    expect(precedesRestartPoint('000000010000000100000011', restart)).toBe(false);
    expect(precedesRestartPoint('00000001000000010000000F.partial', restart)).toBe(true);
  });
  it('never selects history files, and backup files only when asked', () => {
    expect(precedesRestartPoint('00000001.history', restart)).toBe(false);
    expect(precedesRestartPoint('000000010000000100000001.00000028.backup', restart)).toBe(false);
    expect(precedesRestartPoint('000000010000000100000001.00000028.backup', restart, { includeBackup: true })).toBe(true);
    expect(precedesRestartPoint('not-wal', restart)).toBe(false);
  });
});
