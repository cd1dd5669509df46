/**
 * Client-side encryption of stored WAL: AES-256-GCM over chunks, each authenticated on its own
 * (the "STREAM" construction of Hoang, Reyhanitabar, Rogaway and Vizár, as in age or Tink), so
 * a reader never passes on a byte that was not authenticated, and truncation, reordering or
 * splicing of chunks fails.
 *
 * Layout of a stored body (after compression):
 *   header:  "WBAEAD1\0" | key id (8 bytes) | salt (32 bytes) | chunk size (uint32 BE)
 *   chunks:  ciphertext of `chunk size` bytes (the last one shorter, maybe empty) + 16-byte tag
 * Each object gets its own key, HKDF-SHA256(master key, salt), so nonces are a chunk counter and
 * a final-chunk flag without any risk of reuse across objects. Every chunk's additional data is
 * a hash of the header; the final chunk's also covers the object's context (WAL file name,
 * codec, plain size and SHA-256, as in its metadata), which is only known once all input was
 * read: a renamed object or edited metadata fails at the end, before anything is published.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { EncryptionKey } from './keys.js';

/** Metadata value naming this format. */
export const CIPHER_NAME = 'aes-256-gcm-stream-v1';

const MAGIC = Buffer.from('WBAEAD1\0', 'latin1');
const KEY_ID_BYTES = 8;
const SALT_BYTES = 32;
export const HEADER_BYTES = MAGIC.length + KEY_ID_BYTES + SALT_BYTES + 4;
const TAG_BYTES = 16;
/** Plain bytes per chunk: big enough that tags and cipher set-up cost nothing (16 per 16 MiB). */
const CHUNK_BYTES = 1024 * 1024;
/** A reader accepts chunk sizes up to this: a hostile header must not make it buffer gigabytes. */
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const HKDF_INFO = Buffer.from('walbridge object key v1');

/** The object's authenticated context: what its metadata promises, and the name it is stored under. */
export interface SealedContext {
  readonly fileName: string;
  readonly codec: string;
  readonly size: number;
  readonly sha256: string;
}

export class DecryptionError extends Error {
  readonly code = 'ERR_WALBRIDGE_DECRYPT';
}

/** The key id a stored body's header names, or undefined if `head` is not such a header. */
export function headerKeyId(head: Buffer): string | undefined {
  if (head.length < HEADER_BYTES || !head.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  return head.subarray(MAGIC.length, MAGIC.length + KEY_ID_BYTES).toString('hex');
}

function objectKey(master: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', master, salt, HKDF_INFO, 32));
}

function nonce(counter: number, final: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(counter), 3);
  n[11] = final ? 1 : 0;
  return n;
}

function additionalData(header: Buffer, context: SealedContext | undefined): Buffer {
  const hash = createHash('sha256').update(header);
  if (context) hash.update(`\0name=${context.fileName}\ncodec=${context.codec}\nsize=${context.size}\nsha256=${context.sha256}`);
  return hash.digest();
}

/** Collects chunks of input without concatenating on every write. */
class Pending {
  private parts: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }

  take(n: number): Buffer {
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
    this.parts = all.length > n ? [all.subarray(n)] : [];
    this.length = all.length - n;
    return all.subarray(0, n);
  }
}

/** Encrypts a stream; `context` is asked for once the input ended (see the module comment). */
export class Encryptor extends Transform {
  private readonly header: Buffer;
  private readonly key: Buffer;
  private readonly aad: Buffer;
  private readonly pending = new Pending();
  private counter = 0;

  constructor(
    master: EncryptionKey,
    private readonly context: () => SealedContext,
  ) {
    super();
    const salt = randomBytes(SALT_BYTES);
    const size = Buffer.alloc(4);
    size.writeUInt32BE(CHUNK_BYTES);
    this.header = Buffer.concat([MAGIC, Buffer.from(master.id, 'hex'), salt, size]);
    this.key = objectKey(master.material, salt);
    this.aad = additionalData(this.header, undefined);
    this.push(this.header);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    // A full chunk is sealed as not-final only once more input follows it.
    while (this.pending.length > CHUNK_BYTES) this.seal(this.pending.take(CHUNK_BYTES), false);
    done();
  }

  override _flush(done: TransformCallback): void {
    try {
      this.seal(this.pending.take(this.pending.length), true);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  private seal(plain: Buffer, final: boolean): void {
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce(this.counter++, final));
    cipher.setAAD(final ? additionalData(this.header, this.context()) : this.aad);
    this.push(Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]));
  }
}

/** Decrypts a stream, passing on each chunk only once its tag verified. */
export class Decryptor extends Transform {
  private readonly pending = new Pending();
  private header: Buffer | undefined;
  private key: Buffer | undefined;
  private aad: Buffer | undefined;
  private chunkBytes = 0;
  private counter = 0;

  constructor(
    /** The key the caller chose for the id in the object's metadata. */
    private readonly master: EncryptionKey,
    private readonly context: SealedContext,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.pending.push(chunk);
      if (!this.header && !this.readHeader()) return done();
      // A sealed chunk followed by more bytes cannot be the final one.
      while (this.pending.length > this.chunkBytes + TAG_BYTES) this.open(this.pending.take(this.chunkBytes + TAG_BYTES), false);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      if (!this.header) throw new DecryptionError('the encrypted body is shorter than its header');
      if (this.pending.length < TAG_BYTES) throw new DecryptionError('the encrypted body is truncated');
      this.open(this.pending.take(this.pending.length), true);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  private readHeader(): boolean {
    if (this.pending.length < HEADER_BYTES) return false;
    const header = this.pending.take(HEADER_BYTES);
    const id = headerKeyId(header);
    if (id === undefined) throw new DecryptionError("the body does not start with walbridge's encryption header");
    if (id !== this.master.id) throw new DecryptionError(`the body names key ${id}, its metadata key ${this.master.id}`);
    this.chunkBytes = header.readUInt32BE(HEADER_BYTES - 4);
    if (this.chunkBytes === 0 || this.chunkBytes > MAX_CHUNK_BYTES) throw new DecryptionError(`bad chunk size ${this.chunkBytes} in the header`);
    this.header = header;
    this.key = objectKey(this.master.material, header.subarray(MAGIC.length + KEY_ID_BYTES, MAGIC.length + KEY_ID_BYTES + SALT_BYTES));
    this.aad = additionalData(header, undefined);
    return true;
  }

  private open(sealed: Buffer, final: boolean): void {
    const decipher = createDecipheriv('aes-256-gcm', this.key!, nonce(this.counter++, final));
    decipher.setAAD(final ? additionalData(this.header!, this.context) : this.aad!);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const plain = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    try {
      decipher.final();
    } catch {
      throw new DecryptionError(
        final
          ? `chunk ${this.counter - 1} (the last) failed authentication: the object was altered, truncated, or stored under another name or metadata than it was written with`
          : `chunk ${this.counter - 1} failed authentication: the object was altered`,
      );
    }
    this.push(plain);
  }
}
