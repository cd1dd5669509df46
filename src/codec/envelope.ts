/**
 * How a WAL file becomes a stored object and back: compression, then the hashes and sizes that
 * let a reader prove it got exactly the bytes PostgreSQL archived.
 */
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import { compress, decompressor, isCodec, type CodecName } from './compression.js';
import { HashingStream, md5, sha256Hex } from './hash.js';
import type { ObjectMetadata, PutRequest } from '../storage/store.js';

/** Metadata keys (S3 adds its x-amz-meta- prefix, GCS keeps them in `metadata`). */
export const META = {
  format: 'walbridge-format',
  sha256: 'walbridge-sha256',
  size: 'walbridge-size',
  codec: 'walbridge-codec',
} as const;

const FORMAT_VERSION = '1';

export interface Sealed extends PutRequest {
  readonly sha256: string;
}

export async function seal(plain: Buffer, codec: CodecName, level: number | undefined): Promise<Sealed> {
  const body = await compress(codec, level, plain);
  const sha256 = sha256Hex(plain);
  return {
    body,
    md5: md5(body),
    sha256,
    metadata: { [META.format]: FORMAT_VERSION, [META.sha256]: sha256, [META.size]: String(plain.length), [META.codec]: codec },
  };
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
  sink: Writable,
): Promise<{ sha256: string; size: number }> {
  const hasher = new HashingStream();
  const decode = decompressor(codec);
  if (decode) await pipeline(body, decode, hasher, sink);
  else await pipeline(body, hasher, sink);
  return { sha256: hasher.digestHex(), size: hasher.bytes };
}
