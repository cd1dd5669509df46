import { describe, expect, it } from 'vitest';
import { formatLsn, headerMismatch, parseLongPageHeader, type LongPageHeader } from '../../src/wal/header.js';
import { parseWalFileName } from '../../src/wal/names.js';

/** A long page header as PostgreSQL 15 writes it (little-endian). */
function header(opts: { magic?: number; info?: number; tli?: number; pageaddr?: bigint; sysid?: bigint; segSize?: number; blcksz?: number } = {}): Buffer {
  const buf = Buffer.alloc(8192);
  buf.writeUInt16LE(opts.magic ?? 0xd110, 0);
  buf.writeUInt16LE(opts.info ?? 0x0002, 2);
  buf.writeUInt32LE(opts.tli ?? 1, 4);
  buf.writeBigUInt64LE(opts.pageaddr ?? 0x3000000n, 8);
  buf.writeBigUInt64LE(opts.sysid ?? 7311111111111111111n, 24);
  buf.writeUInt32LE(opts.segSize ?? 16 * 1024 * 1024, 32);
  buf.writeUInt32LE(opts.blcksz ?? 8192, 36);
  return buf;
}

describe('parseLongPageHeader', () => {
  it('reads the identity fields of a PostgreSQL 15 segment', () => {
    const parsed = parseLongPageHeader(header()) as LongPageHeader;
    expect(parsed).toEqual({
      magic: 0xd110,
      timeline: 1,
      pageAddress: 0x3000000n,
      systemIdentifier: '7311111111111111111',
      segmentSize: 16 * 1024 * 1024,
      blockSize: 8192,
      pgVersion: '15',
    });
  });

  it('keeps system identifiers above 2^53 exact', () => {
    const parsed = parseLongPageHeader(header({ sysid: 18446744073709551615n })) as LongPageHeader;
    expect(parsed.systemIdentifier).toBe('18446744073709551615');
  });

  it.each([
    ['a short buffer', Buffer.alloc(20)],
    ['zeros', Buffer.alloc(8192)],
    ['text', Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n'.padEnd(100, ' '))],
    ['a short header', header({ info: 0 })],
    ['a silly segment size', header({ segSize: 12345 })],
    ['a silly block size', header({ blcksz: 3 })],
  ])('refuses %s', (_label, buf) => {
    expect(typeof parseLongPageHeader(buf)).toBe('string');
  });

  it('reports unknown magics without a version, so new releases are not refused outright', () => {
    expect((parseLongPageHeader(header({ magic: 0xd1ff })) as LongPageHeader).pgVersion).toBeUndefined();
    expect((parseLongPageHeader(header({ magic: 0xd2a0 })) as LongPageHeader).pgVersion).toBeUndefined();
    expect(typeof parseLongPageHeader(header({ magic: 0xe110 }))).toBe('string');
  });

  it('knows every release from 9.5 to 19 (19beta1 and beta2 had their own magic)', () => {
    const versions = [0xd087, 0xd093, 0xd097, 0xd098, 0xd101, 0xd106, 0xd10d, 0xd110, 0xd113, 0xd116, 0xd118, 0xd120, 0xd121].map(
      (magic) => (parseLongPageHeader(header({ magic })) as LongPageHeader).pgVersion,
    );
    expect(versions).toEqual(['9.5', '9.6', '10', '11', '12', '13', '14', '15', '16', '17', '18', '19', '19']);
  });
});

describe('headerMismatch', () => {
  const parsed = parseLongPageHeader(header({ pageaddr: 0x3000000n, tli: 1 })) as LongPageHeader;
  it('accepts the segment the header describes, on its own or a later timeline', () => {
    expect(headerMismatch(parsed, parseWalFileName('000000010000000000000003')!)).toBeUndefined();
    expect(headerMismatch(parsed, parseWalFileName('000000020000000000000003')!)).toBeUndefined();
    expect(headerMismatch(parsed, parseWalFileName('000000010000000000000003.partial')!)).toBeUndefined();
  });
  it('refuses a renamed segment and an older timeline', () => {
    expect(headerMismatch(parsed, parseWalFileName('000000010000000000000004')!)).toMatch(/starts at 0\/3000000.*starts at 0\/4000000/);
    const tli2 = parseLongPageHeader(header({ pageaddr: 0x3000000n, tli: 2 })) as LongPageHeader;
    expect(headerMismatch(tli2, parseWalFileName('000000010000000000000003')!)).toMatch(/timeline 2 is newer/);
  });
  it('formats LSNs as PostgreSQL does', () => {
    expect(formatLsn(0x1_0000_0028n)).toBe('1/28');
    expect(formatLsn(0xabn)).toBe('0/AB');
  });
});
