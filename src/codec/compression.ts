/**
 * Compression codecs. The codec of each object is recorded in its metadata, so reading never
 * guesses and objects written with any codec stay readable when the default changes.
 */
import { promisify } from 'node:util';
import { constants, createGunzip, gzip } from 'node:zlib';
import type { Transform } from 'node:stream';

export const CODECS = ['none', 'gzip'] as const;
export type CodecName = (typeof CODECS)[number];

export const DEFAULT_LEVEL: Record<CodecName, number | undefined> = { none: undefined, gzip: 6 };
export const LEVEL_RANGE: Record<CodecName, [number, number] | undefined> = { none: undefined, gzip: [1, 9] };

const gzipAsync = promisify(gzip);

export function isCodec(name: string): name is CodecName {
  return (CODECS as readonly string[]).includes(name);
}

export async function compress(codec: CodecName, level: number | undefined, data: Buffer): Promise<Buffer> {
  switch (codec) {
    case 'none':
      return data;
    case 'gzip':
      return gzipAsync(data, { level: level ?? DEFAULT_LEVEL.gzip, strategy: constants.Z_DEFAULT_STRATEGY });
  }
}

/** A decompressing stage for `codec`, or undefined when the bytes are stored as they are. */
export function decompressor(codec: CodecName): Transform | undefined {
  switch (codec) {
    case 'none':
      return undefined;
    case 'gzip':
      return createGunzip();
  }
}
