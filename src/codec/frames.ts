/**
 * Frame boundaries of zstd (RFC 8878) and LZ4 frame-format streams.
 *
 * walbridge compresses a file as a sequence of independent frames, one per chunk of input, so
 * memory stays bounded whatever the segment size while the stored object remains a standard
 * .zst / .lz4 stream (concatenated frames decode to the concatenated content with `zstd -d` or
 * `lz4 -d`). The native codecs only offer whole-buffer calls, so reading must find where each
 * frame ends before decoding it: these functions walk the headers and block sizes without
 * decompressing anything.
 */

/**
 * Where the first frame in `buf` ends: `{ frame }` is its length when `buf` holds all of it;
 * otherwise `{ need }` is how many bytes `buf` must hold before asking again. Throws on bad input.
 */
export type FrameLength = (buf: Buffer) => { frame: number } | { need: number };

export class FrameFormatError extends Error {
  readonly code = 'ERR_WALBRIDGE_FRAME';
}

/**
 * The most content one frame may decode to. walbridge writes frames of 4 MiB (a file of up to
 * 16 MiB; earlier versions wrote it as one frame) or 1 MiB (bigger files; see compression.ts).
 * The native decoders allocate the whole output of a frame at once, so a frame that claims
 * more, or whose blocks could add up to more, is refused before it is decoded: a hostile object must not be able to make
 * restore_command allocate gigabytes.
 */
export const MAX_FRAME_CONTENT_BYTES = 16 * 1024 * 1024;
/**
 * Blocks are counted at the most they could decode to (a compressed zstd block as a full 128
 * KiB), so a real 16 MiB frame can add up to more than 16 MiB (zstd splits blocks): the sum is
 * held to twice the content bound, which still bounds what a hostile frame can make us allocate.
 */
const MAX_BLOCK_SUM_BYTES = 2 * MAX_FRAME_CONTENT_BYTES;
/** zstd's largest block (RFC 8878, Block_Maximum_Size). */
const ZSTD_MAX_BLOCK = 128 * 1024;
/** LZ4 frame block maximum sizes by the BD byte's code (4..7). */
const LZ4_MAX_BLOCK: Record<number, number> = { 4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024 };

function tooLarge(what: string): FrameFormatError {
  return new FrameFormatError(`${what} would decode to more than ${MAX_FRAME_CONTENT_BYTES} bytes: not an object walbridge wrote`);
}

const ZSTD_MAGIC = 0xfd2fb528;
const LZ4_MAGIC = 0x184d2204;
/** Skippable frames (both formats): magic 0x184D2A50..5F, 4-byte size, then that many bytes. */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

export function isSkippableFrame(buf: Buffer): boolean {
  return buf.length >= 4 && (buf.readUInt32LE(0) & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC;
}

function skippableLength(buf: Buffer): { frame: number } | { need: number } {
  if (buf.length < 8) return { need: 8 };
  return ended(buf, 8 + buf.readUInt32LE(4));
}

function ended(buf: Buffer, length: number): { frame: number } | { need: number } {
  return buf.length < length ? { need: length } : { frame: length };
}

export const zstdFrameLength: FrameLength = (buf) => {
  if (buf.length < 4) return { need: 4 };
  if (isSkippableFrame(buf)) return skippableLength(buf);
  const magic = buf.readUInt32LE(0);
  if (magic !== ZSTD_MAGIC) throw new FrameFormatError(`not a zstd frame (magic 0x${magic.toString(16)})`);
  if (buf.length < 5) return { need: 5 };
  const descriptor = buf[4]!;
  if (descriptor & 0x08) throw new FrameFormatError('zstd frame header has its reserved bit set');
  const singleSegment = (descriptor >> 5) & 1;
  const fcsFlag = descriptor >> 6;
  const checksum = (descriptor >> 2) & 1;
  const dictIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
  const fcsAt = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  let pos = fcsAt + fcsBytes;
  if (fcsBytes > 0) {
    if (buf.length < pos) return { need: pos };
    const declared = fcsBytes === 8 ? Number(buf.readBigUInt64LE(fcsAt)) : buf.readUIntLE(fcsAt, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
    if (declared > MAX_FRAME_CONTENT_BYTES) throw tooLarge('a zstd frame');
  }
  let content = 0;
  for (;;) {
    if (buf.length < pos + 3) return { need: pos + 3 };
    const header = buf.readUIntLE(pos, 3);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) throw new FrameFormatError('zstd block of reserved type');
    if (size > ZSTD_MAX_BLOCK) throw new FrameFormatError('zstd block larger than the format allows');
    content += type === 2 ? ZSTD_MAX_BLOCK : size; // raw and RLE blocks state their size; compressed ones are at most a block
    if (content > MAX_BLOCK_SUM_BYTES) throw tooLarge('a zstd frame');
    pos += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  pos += checksum ? 4 : 0;
  return ended(buf, pos);
};

export const lz4FrameLength: FrameLength = (buf) => {
  if (buf.length < 4) return { need: 4 };
  if (isSkippableFrame(buf)) return skippableLength(buf);
  const magic = buf.readUInt32LE(0);
  if (magic !== LZ4_MAGIC) throw new FrameFormatError(`not an LZ4 frame (magic 0x${magic.toString(16)})`);
  if (buf.length < 5) return { need: 5 };
  const flags = buf[4]!;
  if (flags >> 6 !== 1) throw new FrameFormatError(`unsupported LZ4 frame version ${flags >> 6}`);
  const blockChecksum = (flags >> 4) & 1;
  const contentSize = (flags >> 3) & 1;
  const contentChecksum = (flags >> 2) & 1;
  const dictId = flags & 1;
  if (buf.length < 6) return { need: 6 };
  const maxBlock = LZ4_MAX_BLOCK[(buf[5]! >> 4) & 7];
  if (!maxBlock) throw new FrameFormatError('LZ4 frame with an invalid block maximum size');
  let content = 0;
  // magic, FLG, BD, optional content size and dictionary id, header checksum
  let pos = 4 + 2 + (contentSize ? 8 : 0) + (dictId ? 4 : 0) + 1;
  for (;;) {
    if (buf.length < pos + 4) return { need: pos + 4 };
    const size = buf.readUInt32LE(pos) & 0x7fffffff;
    pos += 4;
    if (size === 0) break; // end mark
    if (size > maxBlock) throw new FrameFormatError('LZ4 block larger than its frame allows');
    content += maxBlock; // a block decodes to at most the frame's block size
    if (content > MAX_BLOCK_SUM_BYTES) throw tooLarge('an LZ4 frame');
    pos += size + (blockChecksum ? 4 : 0);
  }
  pos += contentChecksum ? 4 : 0;
  return ended(buf, pos);
};
