/**
 * How a WAL file becomes a stored object and back: compression, then the hashes and sizes that
 * let a reader prove it got exactly the bytes PostgreSQL archived.
 */
import { createReadStream } from 'node:fs';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable, type Readable } from 'node:stream';
import { isCodec, type CodecName } from './codecs.js';
import { compressor, decompressor, frameBytesFor } from './compression.js';
import { HashingStream, md5, sha256Hex } from './hash.js';
import type { Body, ObjectMetadata, PutRequest } from '../storage/store.js';
import { trackTempFile, untrackTempFile } from '../util/temp-files.js';

/** Metadata keys (S3 adds its x-amz-meta- prefix, GCS keeps them in `metadata`). */
export const META = {
  format: 'walbridge-format',
  sha256: 'walbridge-sha256',
  size: 'walbridge-size',
  codec: 'walbridge-codec',
} as const;

const FORMAT_VERSION = '1';

/** Stored bodies up to this size stay in memory; bigger ones go to a temp file (bounded RSS). */
export const MEMORY_BODY_LIMIT = 16 * 1024 * 1024;
/** Big reads: per-chunk stream overhead, not hashing, dominated with Node's default 64 KiB. */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;

export interface Sealed extends PutRequest {
  /** SHA-256 (hex) and size of the plain content. */
  readonly sha256: string;
  readonly size: number;
  /** Removes the temp file holding a large body, if any. */
  dispose(): Promise<void>;
}

function metadataFor(sha256: string, size: number, codec: CodecName): ObjectMetadata {
  return { [META.format]: FORMAT_VERSION, [META.sha256]: sha256, [META.size]: String(size), [META.codec]: codec };
}

/** A small in-memory record (JSON objects), stored as it is. */
export function sealBuffer(plain: Buffer): Sealed {
  const sha256 = sha256Hex(plain);
  return { body: plain, md5: md5(plain), sha256, size: plain.length, metadata: metadataFor(sha256, plain.length, 'none'), dispose: async () => undefined };
}

/**
 * Reads `source` once, hashing the plain bytes and compressing them on the way. A stored body
 * over MEMORY_BODY_LIMIT spills to a temp file in `spoolDir` (or, uncompressed, is read again
 * from `source` itself when uploading: the store verifies it against the MD5 taken here).
 */
export async function sealFile(source: string, codec: CodecName, level: number | undefined, spoolDir: string): Promise<Sealed> {
  const plain = new HashingStream('sha256');
  const sink = new BodyCollector(codec === 'none' ? source : undefined, spoolDir);
  const stage = compressor(codec, level, frameBytesFor((await stat(source)).size));
  try {
    if (stage) await pipeline(createReadStream(source, { highWaterMark: READ_CHUNK_BYTES }), plain, stage, sink);
    else await pipeline(createReadStream(source, { highWaterMark: READ_CHUNK_BYTES }), plain, sink);
  } catch (err) {
    await sink.dispose();
    throw err;
  }
  const sha256 = plain.digestHex();
  return { body: sink.body(), md5: sink.md5(), sha256, size: plain.bytes, metadata: metadataFor(sha256, plain.bytes, codec), dispose: () => sink.dispose() };
}

/** Collects the stored bytes and their MD5: in memory while small, then in a temp file. */
class BodyCollector extends Writable {
  private readonly hash = createHash('md5');
  private chunks: Buffer[] = [];
  private bytes = 0;
  private spill: { path: string; fh: FileHandle } | undefined;
  private spilledToSource = false;

  constructor(
    /** Set when the body is the source itself (no compression): no copy needed. */
    private readonly source: string | undefined,
    private readonly spoolDir: string,
  ) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.store(chunk).then(() => done(), done);
  }

  private async store(chunk: Buffer): Promise<void> {
    if (this.spilledToSource) return;
    if (!this.spill && this.bytes <= MEMORY_BODY_LIMIT) {
      this.chunks.push(chunk);
      return;
    }
    if (!this.spill) {
      if (this.source) {
        this.spilledToSource = true;
        this.chunks = [];
        return;
      }
      const file = path.join(this.spoolDir, `.walbridge-body-${process.pid}-${randomBytes(4).toString('hex')}`);
      trackTempFile(file);
      this.spill = { path: file, fh: await open(file, 'wx', 0o600) };
      for (const held of this.chunks) await this.spill.fh.write(held);
      this.chunks = [];
    }
    await this.spill.fh.write(chunk);
  }

  override _final(done: (err?: Error | null) => void): void {
    (this.spill ? this.spill.fh.close() : Promise.resolve()).then(() => done(), done);
  }

  body(): Body {
    if (this.spilledToSource) return { path: this.source!, size: this.bytes };
    if (this.spill) return { path: this.spill.path, size: this.bytes };
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes);
  }

  md5(): Buffer {
    return this.hash.digest();
  }

  async dispose(): Promise<void> {
    if (!this.spill) return;
    await this.spill.fh.close().catch(() => undefined);
    await unlink(this.spill.path).catch(() => undefined);
    untrackTempFile(this.spill.path);
  }
}

export interface ContentDescription {
  readonly sha256: string;
  readonly size: number;
  readonly codec: CodecName;
}

/** What an object's metadata promises about its content, or a reason it promises nothing usable. */
export function describeContent(metadata: ObjectMetadata): ContentDescription | string {
  const sha256 = metadata[META.sha256];
  const size = Number(metadata[META.size]);
  const codec = metadata[META.codec] ?? 'none';
  if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) return 'it has no valid content hash in its metadata';
  if (!Number.isSafeInteger(size) || size < 0) return 'it has no valid content size in its metadata';
  if (!isCodec(codec)) return `it uses codec "${codec}", which this version cannot read`;
  return { sha256, size, codec };
}

/**
 * Decodes a stored body into `sink`, hashing the plain bytes on the way, and reports what it
 * saw; the caller decides whether that matches the promise before publishing anything.
 */
export async function unseal(
  body: Readable,
  codec: CodecName,
  /** Opens the destination; called only once the decoder exists, so nothing is opened in vain. */
  sink: () => Writable,
): Promise<{ sha256: string; size: number }> {
  const hasher = new HashingStream();
  const decode = decompressor(codec);
  const destination = sink();
  if (decode) await pipeline(body, decode, hasher, destination);
  else await pipeline(body, hasher, destination);
  return { sha256: hasher.digestHex(), size: hasher.bytes };
}
