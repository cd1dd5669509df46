/**
 * How a WAL file becomes a stored object and back: compression, encryption when a key is set,
 * and the hashes and sizes that let a reader prove it got exactly the bytes PostgreSQL archived.
 */
import { createReadStream } from 'node:fs';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable, type Transform } from 'node:stream';
import { isCodec, type CodecName } from './codecs.js';
import { CHUNK_BYTES, compressor, decompressor, frameBytesFor } from './compression.js';
import { CIPHER_NAME, Decryptor, Encryptor } from './encryption.js';
import { HashingStream, md5, sha256Hex } from './hash.js';
import type { EncryptionKey, KeyRing } from './keys.js';
import { WalbridgeError } from '../errors.js';
import type { Body, ObjectMetadata, PutRequest } from '../storage/store.js';
import { trackTempFile, untrackTempFile } from '../util/temp-files.js';

/** Metadata keys (S3 adds its x-amz-meta- prefix, GCS keeps them in `metadata`). */
export const META = {
  format: 'walbridge-format',
  sha256: 'walbridge-sha256',
  size: 'walbridge-size',
  codec: 'walbridge-codec',
  /** Set on encrypted objects only (see encryption.ts), with the id of the key. */
  cipher: 'walbridge-cipher',
  keyId: 'walbridge-key-id',
} as const;

const FORMAT_VERSION = '1';

/** Stored bodies up to this size stay in memory; bigger ones go to a temp file (bounded RSS). */
export const MEMORY_BODY_LIMIT = 16 * 1024 * 1024;
/**
 * Reads of a streamed file (bigger than MEMORY_BODY_LIMIT, or stored as it is): one frame's
 * worth (CHUNK_BYTES). Per-chunk stream overhead, not hashing, dominated with Node's default
 * 64 KiB; 4 MiB reads held 32 MiB of buffers across the pipeline's stages (160 MiB peak pushing
 * 1 GiB segments).
 */
const BIG_FILE_CHUNK_BYTES = CHUNK_BYTES;

export interface Sealed extends PutRequest {
  /** SHA-256 (hex) and size of the plain content. */
  readonly sha256: string;
  readonly size: number;
  /** Removes the temp file holding a large body, if any. */
  dispose(): Promise<void>;
}

function metadataFor(sha256: string, size: number, codec: CodecName, key?: EncryptionKey): ObjectMetadata {
  const metadata = { [META.format]: FORMAT_VERSION, [META.sha256]: sha256, [META.size]: String(size), [META.codec]: codec };
  return key ? { ...metadata, [META.cipher]: CIPHER_NAME, [META.keyId]: key.id } : metadata;
}

/** A small in-memory record (JSON objects), stored as it is. */
export function sealBuffer(plain: Buffer): Sealed {
  const sha256 = sha256Hex(plain);
  return { body: plain, md5: md5(plain), sha256, size: plain.length, metadata: metadataFor(sha256, plain.length, 'none'), dispose: async () => undefined };
}

export interface SealOptions {
  readonly codec: CodecName;
  readonly level: number | undefined;
  /** Where a large stored body spills to. */
  readonly spoolDir: string;
  /** Encrypt with this key; the object is bound to the WAL file name it is stored under. */
  readonly encryption?: { readonly key: EncryptionKey; readonly fileName: string };
}

/**
 * Reads `source` (a file, or bytes in memory) once, hashing the plain bytes, compressing and
 * maybe encrypting them on the way. A stored body over MEMORY_BODY_LIMIT (or over a MiB, from a bigger file) spills to a temp file in `spoolDir` (or, stored as
 * it is, is read again from `source` itself when uploading: the store verifies it against the
 * MD5 taken here).
 */
export async function sealFile(source: string | Buffer, opts: SealOptions): Promise<Sealed> {
  const { codec, encryption } = opts;
  const inFile = typeof source === 'string';
  const size = inFile ? (await stat(source)).size : source.length;
  // A file of up to 16 MiB (a default-sized segment) is read whole into a reused buffer: one
  // read, one hash update, frames cut from it without copies, and none of the page faults a fresh 16 MiB buffer costs
  // at every file. Not when the stored body would be that very buffer (no codec, no key).
  if (inFile && size <= MEMORY_BODY_LIMIT && (codec !== 'none' || encryption)) {
    const whole = await readWhole(source, size);
    try {
      return await sealFile(whole.bytes, opts);
    } finally {
      whole.release();
    }
  }
  const plain = new HashingStream('sha256');
  // A bigger file's stored body is likely bigger than MEMORY_BODY_LIMIT too: it goes to a temp file from its first MiB on.
  const inMemory = size > MEMORY_BODY_LIMIT ? BIG_FILE_CHUNK_BYTES : MEMORY_BODY_LIMIT;
  const sink = new BodyCollector(codec === 'none' && !encryption && inFile ? source : undefined, opts.spoolDir, inMemory);
  const stages: Transform[] = [plain];
  const compress = compressor(codec, opts.level, frameBytesFor(size));
  if (compress) stages.push(compress);
  let sha256: string | undefined;
  const digest = () => (sha256 ??= plain.digestHex());
  if (encryption) {
    // Asked for when the last chunk is sealed, after every plain byte went through `plain`.
    stages.push(new Encryptor(encryption.key, () => ({ fileName: encryption.fileName, codec, size: plain.bytes, sha256: digest() })));
  }
  try {
    await pipeline([inFile ? createReadStream(source, { highWaterMark: BIG_FILE_CHUNK_BYTES }) : Readable.from([source]), ...stages, sink]);
  } catch (err) {
    await sink.dispose();
    throw err;
  }
  const metadata = metadataFor(digest(), plain.bytes, codec, encryption?.key);
  return { body: sink.body(), md5: sink.md5(), sha256: digest(), size: plain.bytes, metadata, dispose: () => sink.dispose() };
}

/** Whole-file buffers kept for the next file (the background pusher seals one after another). */
const wholeBuffers: Buffer[] = [];
/** As many as the two cores can fill at once: more would only hold memory. */
const WHOLE_BUFFERS_KEPT = 2;

/** `file`'s bytes (`size` of them, or fewer if it is shorter now) in a reused buffer, until release(). */
async function readWhole(file: string, size: number): Promise<{ bytes: Buffer; release(): void }> {
  const buffer = wholeBuffers.pop() ?? Buffer.allocUnsafeSlow(MEMORY_BODY_LIMIT);
  let filled = 0;
  try {
    const fh = await open(file, 'r');
    try {
      while (filled < size) {
        const { bytesRead } = await fh.read(buffer, filled, size - filled, filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    wholeBuffers.push(buffer);
    throw err;
  }
  return {
    bytes: buffer.subarray(0, filled),
    release: () => {
      if (wholeBuffers.length < WHOLE_BUFFERS_KEPT) wholeBuffers.push(buffer);
    },
  };
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
    /** Stored bytes kept in memory before they go to a temp file. */
    private readonly inMemoryBytes: number,
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
    if (!this.spill && this.bytes <= this.inMemoryBytes) {
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
  /** The id of the key it is encrypted with; absent for objects stored in the clear. */
  readonly keyId?: string;
}

/** What an object's metadata promises about its content, or a reason it promises nothing usable. */
export function describeContent(metadata: ObjectMetadata): ContentDescription | string {
  const sha256 = metadata[META.sha256];
  const size = Number(metadata[META.size]);
  const codec = metadata[META.codec] ?? 'none';
  if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) return 'it has no valid content hash in its metadata';
  if (!Number.isSafeInteger(size) || size < 0) return 'it has no valid content size in its metadata';
  if (!isCodec(codec)) return `it uses codec "${codec}", which this version cannot read`;
  const cipher = metadata[META.cipher];
  if (cipher === undefined) return { sha256, size, codec };
  if (cipher !== CIPHER_NAME) return `it is encrypted with "${cipher}", which this version cannot read`;
  const keyId = metadata[META.keyId];
  if (!keyId || !/^[0-9a-f]{16}$/.test(keyId)) return 'it is encrypted but names no valid key id in its metadata';
  return { sha256, size, codec, keyId };
}

/**
 * An encrypted object's key from the ring, or an error naming the key to add. With keys set, an
 * object in the clear is refused unless the ring accepts plaintext: otherwise anyone who can write
 * the bucket could replace an object by a plain one with matching metadata.
 */
function keyFor(promised: ContentDescription, opts: UnsealOptions): EncryptionKey | undefined {
  const { fileName, keys } = opts;
  if (promised.keyId === undefined) {
    if (keys && (opts.requireEncryption || !keys.acceptsPlaintext)) {
      throw new WalbridgeError(
        'corrupt',
        `refusing ${fileName}: it is stored unencrypted, but an encryption key is set (a replaced object?)${opts.requireEncryption ? '' : '; if it was archived before encryption was turned on, set encryption-allow-plaintext while such objects are needed'}`,
      );
    }
    return undefined;
  }
  const key = keys?.find(promised.keyId);
  if (key) return key;
  throw new WalbridgeError(
    'encryptionKey',
    keys
      ? `${fileName} is encrypted with key ${promised.keyId}, which is not among the keys given (${keys.ids.join(', ')} from ${keys.describeSource()}): add that key to the key file`
      : `${fileName} is encrypted with key ${promised.keyId}, and no key is given: set encryption-key-file or WALBRIDGE_ENCRYPTION_KEY`,
  );
}

export interface UnsealOptions {
  /** The name the object is stored under (encrypted objects are bound to it). */
  readonly fileName: string;
  /** Keys for encrypted objects. */
  readonly keys: KeyRing | undefined;
  /** Refuse an object in the clear whenever keys are set, whatever the ring accepts (new kinds of object). */
  readonly requireEncryption?: boolean;
}

/**
 * Decodes a stored body into `sink`, hashing the plain bytes on the way, and reports what it
 * saw; the caller decides whether that matches the promise before publishing anything. An
 * encrypted body that fails authentication is a DecryptionError, and its key missing a
 * WalbridgeError('encryptionKey'), both before `sink` received anything unauthenticated.
 */
export async function unseal(
  body: Readable,
  promised: ContentDescription,
  /** Opens the destination; called only once the decoder exists, so nothing is opened in vain. */
  sink: () => Writable,
  opts: UnsealOptions,
): Promise<{ sha256: string; size: number }> {
  const key = keyFor(promised, opts);
  const stages: Transform[] = [];
  if (key) stages.push(new Decryptor(key, { fileName: opts.fileName, codec: promised.codec, size: promised.size, sha256: promised.sha256 }));
  const decode = decompressor(promised.codec);
  if (decode) stages.push(decode);
  const hasher = new HashingStream();
  await pipeline([body, ...stages, hasher, sink()]);
  return { sha256: hasher.digestHex(), size: hasher.bytes };
}
