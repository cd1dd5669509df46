/** Content hashes: MD5 for the store's own upload check, SHA-256 for end-to-end verification. */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { noteBytesProcessed } from '../util/memory.js';

export function md5(data: Buffer): Buffer {
  return createHash('md5').update(data).digest();
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A pass-through stage that hashes and counts what flows through it. */
export class HashingStream extends Transform {
  private readonly hash;
  bytes = 0;

  constructor(algorithm: 'sha256' | 'md5' = 'sha256') {
    super();
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    noteBytesProcessed(chunk.length);
    done(null, chunk);
  }

  /** The digest of everything seen; call once, after the stream ended. */
  digest(): Buffer {
    return this.hash.digest();
  }

  digestHex(): string {
    return this.hash.digest('hex');
  }
}
