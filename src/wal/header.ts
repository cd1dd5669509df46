/**
 * The long page header at the start of every WAL segment (XLogLongPageHeaderData):
 *
 *   0  uint16 xlp_magic      WAL format version (one per PostgreSQL major version)
 *   2  uint16 xlp_info       XLP_LONG_HEADER (0x0002) is set on a segment's first page
 *   4  uint32 xlp_tli        timeline of the first record on the page
 *   8  uint64 xlp_pageaddr   WAL address of this page (= segment number * segment size)
 *  16  uint32 xlp_rem_len
 *  24  uint64 xlp_sysid      system identifier, from pg_control
 *  32  uint32 xlp_seg_size
 *  36  uint32 xlp_xlog_blcksz
 *
 * Read in little-endian order: the byte order of every platform PostgreSQL is deployed on
 * in practice (x86-64, arm64).
 */
import { segmentNumber, segmentFitsSize, type WalFileName } from './names.js';

export const LONG_HEADER_SIZE = 40;
const XLP_LONG_HEADER = 0x0002;

/** WAL page magic → PostgreSQL major version (XLOG_PAGE_MAGIC in xlog_internal.h). */
const MAGIC_TO_VERSION: ReadonlyMap<number, string> = new Map([
  [0xd087, '9.5'],
  [0xd093, '9.6'],
  [0xd097, '10'],
  [0xd098, '11'],
  [0xd101, '12'],
  [0xd106, '13'],
  [0xd10d, '14'],
  [0xd110, '15'],
  [0xd113, '16'],
  [0xd116, '17'],
  [0xd118, '18'],
  // 19beta1 and beta2 wrote 0xD120; 19beta3 and the releases write 0xD121 (PostgreSQL commit
  // ed62d26, pgBackRest issue #2827).
  [0xd120, '19'],
  [0xd121, '19'],
]);

/** The releases this build knows the WAL format of, for messages. */
export const KNOWN_WAL_VERSIONS = '9.5 to 19';

export interface LongPageHeader {
  readonly magic: number;
  readonly timeline: number;
  readonly pageAddress: bigint;
  /** Decimal string: a uint64 does not fit a JS number, and this is how PostgreSQL prints it. */
  readonly systemIdentifier: string;
  readonly segmentSize: number;
  readonly blockSize: number;
  /** PostgreSQL major version, or undefined for a magic this build does not know. */
  readonly pgVersion: string | undefined;
}

/** Parses a segment's long page header; returns a reason string when it is not one. */
export function parseLongPageHeader(buf: Buffer): LongPageHeader | string {
  if (buf.length < LONG_HEADER_SIZE) return `shorter than a WAL page header (${buf.length} bytes)`;
  const magic = buf.readUInt16LE(0);
  const info = buf.readUInt16LE(2);
  // Every release so far has had a magic 0xD0xx or 0xD1xx; a later one is accepted unknown.
  if ((magic & 0xf000) !== 0xd000) {
    return `no WAL page magic (found 0x${magic.toString(16).padStart(4, '0')})`;
  }
  if ((info & XLP_LONG_HEADER) === 0) return 'first page has no long header';
  const segmentSize = buf.readUInt32LE(32);
  const blockSize = buf.readUInt32LE(36);
  if (!isPowerOfTwo(segmentSize) || segmentSize < 1 << 20 || segmentSize > 1 << 30) {
    return `implausible segment size ${segmentSize} in header`;
  }
  if (!isPowerOfTwo(blockSize) || blockSize < 1024 || blockSize > 65536) {
    return `implausible WAL block size ${blockSize} in header`;
  }
  return {
    magic,
    timeline: buf.readUInt32LE(4),
    pageAddress: buf.readBigUInt64LE(8),
    systemIdentifier: buf.readBigUInt64LE(24).toString(),
    segmentSize,
    blockSize,
    pgVersion: MAGIC_TO_VERSION.get(magic),
  };
}

/**
 * Checks that a header belongs to the file it is stored under: the page address is the
 * named segment's start and the header's timeline is not newer than the name's (a segment
 * that begins a new timeline starts with the old timeline's pages). Returns a reason or undefined.
 */
export function headerMismatch(header: LongPageHeader, file: WalFileName): string | undefined {
  if (file.kind !== 'segment' && file.kind !== 'partial') return undefined;
  if (!segmentFitsSize(file, header.segmentSize)) {
    return `name ${file.name} is not a valid segment for ${header.segmentSize}-byte segments`;
  }
  const expected = segmentNumber(file, header.segmentSize) * BigInt(header.segmentSize);
  if (header.pageAddress !== expected) {
    return `header says it starts at ${formatLsn(header.pageAddress)}, but ${file.name} starts at ${formatLsn(expected)}`;
  }
  if (header.timeline > file.timeline) {
    return `header timeline ${header.timeline} is newer than the name's timeline ${file.timeline}`;
  }
  return undefined;
}

/** Formats an LSN as PostgreSQL does: X/X in upper-case hex. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffff_ffffn).toString(16).toUpperCase()}`;
}

export function describeMagic(magic: number): string {
  const version = MAGIC_TO_VERSION.get(magic);
  return version ? `PostgreSQL ${version}` : `unknown WAL format 0x${magic.toString(16)}`;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}
