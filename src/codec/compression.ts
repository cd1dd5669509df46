/**
 * Compression codecs, as stream stages. The codec of each object is recorded in its metadata,
 * so reading never guesses and objects written with any codec stay readable when the default
 * changes.
 *
 * zstd and lz4 come from native packages (prebuilt binaries shipped inside npm packages, loaded
 * only when the codec is used); gzip is Node's own zlib. zstd and lz4 output is a series of
 * independent frames of a few MiB of input at most (see frames.ts): a standard stream
 * for `zstd -d` / `lz4 -d`, in bounded memory for any segment size.
 */
import { createRequire } from 'node:module';
import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { DEFAULT_LEVEL, type CodecName } from './codecs.js';
import { FrameFormatError, MAX_FRAME_CONTENT_BYTES, isSkippableFrame, lz4FrameLength, zstdFrameLength, type FrameLength } from './frames.js';

/**
 * Input bytes per zstd/lz4 frame of a file bigger than MAX_FRAME_CONTENT_BYTES: 1 MiB keeps
 * decoder buffers small (4 MiB frames put a 1 GiB fetch over S3 at 124 MB peak RSS).
 */
export const CHUNK_BYTES = 1024 * 1024;
/**
 * Input bytes per frame of a file up to MAX_FRAME_CONTENT_BYTES (every default-sized segment:
 * four frames). The native decoder returns a frame's whole content in a buffer it grows as it
 * goes, so a 16 MiB frame held ~24 MiB per decode and left the background fetcher's heap
 * fragmented (130-153 MiB peak against 118 with 4 MiB frames, restoring 40 pgbench segments
 * over S3). 4 MiB frames store 0.3 % more than one 16 MiB frame (1307 against 1303 KiB per
 * pgbench segment at zstd-3), 1 MiB frames 1.5 % more; compression takes the same time.
 */
export const SEGMENT_FRAME_BYTES = 4 * 1024 * 1024;
/** The input bytes per frame for a file of `size` bytes. */
export function frameBytesFor(size: number): number {
  return size <= MAX_FRAME_CONTENT_BYTES ? Math.max(1, Math.min(size, SEGMENT_FRAME_BYTES)) : CHUNK_BYTES;
}
/** No frame walbridge writes comes near this (zstd's and lz4's worst case is under +0.5 %); a bigger one is a corrupt or foreign object. */
const MAX_FRAME_BYTES = MAX_FRAME_CONTENT_BYTES + MAX_FRAME_CONTENT_BYTES / 128 + 64 * 1024;

/** Thrown when a codec's native package cannot be loaded on this machine. */
export class CodecUnavailableError extends Error {
  readonly code = 'ERR_WALBRIDGE_CODEC_UNAVAILABLE';
}

interface BlockCodec {
  encode(data: Buffer): Promise<Buffer>;
  decode(frame: Buffer): Promise<Buffer>;
  frameLength: FrameLength;
}

const require = createRequire(import.meta.url);
const loaded = new Map<string, BlockCodec>();

function blockCodec(codec: 'zstd' | 'lz4', level: number | undefined): BlockCodec {
  const key = `${codec}:${level ?? ''}`;
  let found = loaded.get(key);
  if (found) return found;
  try {
    if (codec === 'zstd') {
      const zstd = require('@toondepauw/node-zstd') as typeof import('@toondepauw/node-zstd');
      const encoder = new zstd.Encoder(level ?? DEFAULT_LEVEL.zstd!);
      const decoder = new zstd.Decoder();
      found = { encode: (d) => encoder.encode(d), decode: (f) => decoder.decode(f), frameLength: zstdFrameLength };
    } else {
      const lz4 = require('lz4-napi') as typeof import('lz4-napi');
      found = { encode: (d) => lz4.compressFrame(d), decode: (f) => lz4.decompressFrame(f), frameLength: lz4FrameLength };
    }
  } catch (err) {
    const pkg = codec === 'zstd' ? '@toondepauw/node-zstd' : 'lz4-napi';
    throw new CodecUnavailableError(`codec ${codec} is unavailable on this machine (${pkg}: ${(err as Error).message.split('\n')[0]})`);
  }
  loaded.set(key, found);
  return found;
}

/** Whether `codec` can be used here (its native package loads). */
export function codecAvailable(codec: CodecName): boolean {
  return codecProblem(codec) === undefined;
}

/** Why `codec` cannot be used here, if it cannot. */
export function codecProblem(codec: CodecName): string | undefined {
  if (codec !== 'zstd' && codec !== 'lz4') return undefined;
  try {
    blockCodec(codec, undefined);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A compressing stage for `codec`, or undefined when bytes are stored as they are. */
export function compressor(codec: CodecName, level: number | undefined, frameBytes = CHUNK_BYTES): Transform | undefined {
  switch (codec) {
    case 'none':
      return undefined;
    case 'gzip':
      return zlib.createGzip({ level: level ?? DEFAULT_LEVEL.gzip });
    case 'zstd':
    case 'lz4':
      return new FrameEncoder(blockCodec(codec, level), Math.min(frameBytes, MAX_FRAME_CONTENT_BYTES));
  }
}

/** A decompressing stage for `codec`, or undefined when the bytes are stored as they are. */
export function decompressor(codec: CodecName): Transform | undefined {
  switch (codec) {
    case 'none':
      return undefined;
    case 'gzip':
      return zlib.createGunzip();
    case 'zstd':
    case 'lz4':
      return new FrameDecoder(blockCodec(codec, undefined));
  }
}

/** Cuts the input into `frameBytes` pieces and emits each one as an independent frame. */
class FrameEncoder extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly codec: BlockCodec,
    private readonly frameBytes: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.emitFrames(false).then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    this.emitFrames(true).then(() => done(), done);
  }

  private async emitFrames(final: boolean): Promise<void> {
    while (this.pendingBytes >= this.frameBytes || (final && this.pendingBytes > 0)) {
      const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      const take = Math.min(this.frameBytes, all.length);
      this.pending = take < all.length ? [all.subarray(take)] : [];
      this.pendingBytes = all.length - take;
      this.push(await this.codec.encode(all.subarray(0, take)));
    }
  }
}

/**
 * Finds frame boundaries in the stored stream and decodes one whole frame at a time. One stored
 * chunk can hold many frames (a 1 GiB segment switched early, mostly zeros, is stored as ~50 KiB
 * of 1 MiB frames), so the decoder waits for its reader after each frame its reader is not ready
 * for: decoding them all at once buffered up to 80 MiB of output in the background fetcher.
 */
class FrameDecoder extends Transform {
  /** Bytes received and not yet decoded: buf[consumed, filled). Grows by doubling, so appends stay linear. */
  private buf = Buffer.alloc(0);
  private consumed = 0;
  private filled = 0;
  private need = 0;
  /** Resolves a decode waiting for the reader to want more. */
  private wanted: (() => void) | undefined;

  constructor(private readonly codec: BlockCodec) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.append(chunk);
    this.decodeFrames().then(
      () => done(),
      (err: unknown) => done(asFrameError(err)),
    );
  }

  override _read(size: number): void {
    const wanted = this.wanted;
    this.wanted = undefined;
    wanted?.();
    super._read(size);
  }

  override _flush(done: TransformCallback): void {
    if (this.filled > this.consumed) done(new FrameFormatError(`the compressed stream ends inside a frame (${this.filled - this.consumed} bytes left over)`));
    else done();
  }

  private append(chunk: Buffer): void {
    if (this.filled + chunk.length > this.buf.length) {
      const live = this.filled - this.consumed;
      const next = live + chunk.length > this.buf.length ? Buffer.allocUnsafe(Math.max(2 * this.buf.length, live + chunk.length, 1 << 20)) : this.buf;
      this.buf.copy(next, 0, this.consumed, this.filled);
      this.buf = next;
      this.consumed = 0;
      this.filled = live;
    }
    chunk.copy(this.buf, this.filled);
    this.filled += chunk.length;
  }

  private async decodeFrames(): Promise<void> {
    while (this.filled - this.consumed >= this.need) {
      const view = this.buf.subarray(this.consumed, this.filled);
      const found = this.codec.frameLength(view);
      const length = 'need' in found ? found.need : found.frame;
      if (length > MAX_FRAME_BYTES) throw new FrameFormatError(`a frame larger than ${MAX_FRAME_BYTES} bytes: not an object walbridge wrote`);
      if ('need' in found) {
        this.need = found.need;
        return;
      }
      const frame = view.subarray(0, found.frame);
      // No append happens while this awaits (the next chunk waits for our callback), so the view stays valid.
      const ready = isSkippableFrame(frame) || this.push(await this.codec.decode(frame));
      this.consumed += found.frame;
      this.need = 0;
      if (!ready && this.filled - this.consumed > 0) await new Promise<void>((resolve) => (this.wanted = resolve));
    }
  }
}

/** Decoder failures are corrupt data, and say so in one recognisable error. */
function asFrameError(err: unknown): Error {
  if (err instanceof FrameFormatError) return err;
  return new FrameFormatError(`does not decompress: ${(err as Error).message}`);
}
