import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CODECS, type CodecName } from '../../src/codec/codecs.js';
import { CHUNK_BYTES, compressor, decompressor, frameBytesFor, SEGMENT_FRAME_BYTES } from '../../src/codec/compression.js';
import { FrameFormatError, lz4FrameLength, zstdFrameLength } from '../../src/codec/frames.js';

/** WAL-like content: runs of zeros and repeated text, with some random pages. */
function walLike(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += 8192) {
    if ((at / 8192) % 5 === 0) randomBytes(Math.min(8192, size - at)).copy(out, at);
    else out.write(`row ${at} `.repeat(200), at, Math.min(2000, size - at));
  }
  return out;
}

/** Feeds `data` in pieces of awkward sizes, as a network stream would. */
function piecewise(data: Buffer, piece = 65_537): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0; at < data.length; at += piece) pieces.push(data.subarray(at, at + piece));
  return Readable.from(pieces);
}

async function run(input: Readable, stage: NodeJS.ReadWriteStream | undefined): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write: (c: Buffer, _e, done) => {
      chunks.push(c);
      done();
    },
  });
  if (stage) await pipeline(input, stage, sink);
  else await pipeline(input, sink);
  return Buffer.concat(chunks);
}

const encode = (codec: CodecName, data: Buffer) => run(piecewise(data), compressor(codec, undefined));
const decode = (codec: CodecName, data: Buffer, piece?: number) => run(piecewise(data, piece), decompressor(codec));

describe.each(CODECS)('codec %s', (codec) => {
  it('round-trips content spanning several frames, whatever the read sizes', async () => {
    const plain = walLike(2 * CHUNK_BYTES + 12_345);
    const stored = await encode(codec, plain);
    if (codec !== 'none') expect(stored.length).toBeLessThan(plain.length);
    for (const piece of [1_000, 65_536, 3 * 1024 * 1024]) expect((await decode(codec, stored, piece)).equals(plain)).toBe(true);
  });

  it('round-trips a small file', async () => {
    const plain = Buffer.from('00000002.history: 1\t0/3000000\tno recovery target specified\n');
    expect((await decode(codec, await encode(codec, plain))).equals(plain)).toBe(true);
  });
});

describe.each(['zstd', 'lz4'] as const)('codec %s decodes no faster than it is read', (codec) => {
  it('many frames in one stored chunk (a mostly-zero segment) wait for the reader, not all decoded at once', async () => {
    const plain = Buffer.alloc(16 * CHUNK_BYTES);
    const stored = await encode(codec, plain);
    expect(stored.length).toBeLessThan(128 * 1024); // sixteen 1 MiB frames of zeros: one chunk of a download
    const decoder = decompressor(codec)!;
    const taken = new Promise((resolve) => decoder.write(stored, resolve));
    // Nobody reads yet: the decoder holds one frame's output and waits (it used to decode all 16 into its buffer).
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    for (let waited = 0; decoder.readableLength === 0 && waited < 10_000; waited += 10) await sleep(10);
    await Promise.race([taken, sleep(300)]);
    expect(decoder.readableLength).toBe(CHUNK_BYTES);
    decoder.end();
    let bytes = 0;
    for await (const chunk of decoder) bytes += (chunk as Buffer).length;
    expect(bytes).toBe(plain.length);
  });
});

describe.each(['zstd', 'lz4', 'gzip'] as const)('codec %s refuses damaged input', (codec) => {
  it('a truncated stream is an error, not a short file', async () => {
    const stored = await encode(codec, walLike(CHUNK_BYTES + 999));
    await expect(decode(codec, stored.subarray(0, stored.length - 7))).rejects.toThrow();
  });

  it('garbage is an error', async () => {
    await expect(decode(codec, randomBytes(100_000))).rejects.toThrow();
  });
});

describe('frame boundaries', () => {
  it('zstd: finds the end of each frame and asks for more bytes when cut short', async () => {
    const plain = walLike(CHUNK_BYTES + 5000);
    const stored = await encode('zstd', plain);
    const first = zstdFrameLength(stored);
    expect('frame' in first).toBe(true);
    const firstLen = (first as { frame: number }).frame;
    expect(firstLen).toBeLessThan(stored.length);
    expect(zstdFrameLength(stored.subarray(firstLen))).toEqual({ frame: stored.length - firstLen });
    const cut = zstdFrameLength(stored.subarray(0, firstLen - 1));
    expect('need' in cut && cut.need > firstLen - 1).toBe(true);
  });

  it('a 16 MiB segment is four 4 MiB frames (a better ratio than 1 MiB, a decoder buffer a quarter of one frame); bigger files are cut into 1 MiB frames', async () => {
    const MiB = 1024 * 1024;
    expect(frameBytesFor(16 * MiB)).toBe(SEGMENT_FRAME_BYTES);
    expect(SEGMENT_FRAME_BYTES).toBe(4 * MiB);
    expect(frameBytesFor(MiB + 3)).toBe(MiB + 3);
    expect(frameBytesFor(16 * MiB + 1)).toBe(CHUNK_BYTES);
    expect(frameBytesFor(0)).toBe(1);
    const segment = walLike(16 * MiB);
    for (const codec of ['zstd', 'lz4'] as const) {
      const stored = await run(piecewise(segment), compressor(codec, undefined, frameBytesFor(segment.length)));
      const frameLength = codec === 'zstd' ? zstdFrameLength : lz4FrameLength;
      let frames = 0;
      for (let at = 0; at < stored.length; frames++) at += (frameLength(stored.subarray(at)) as { frame: number }).frame;
      expect(frames).toBe(4);
      expect((await decode(codec, stored, 65_536)).equals(segment)).toBe(true);
      expect(stored.length).toBeLessThan((await encode(codec, segment)).length); // than 1 MiB frames
    }
  });

  it('lz4: finds the end of each frame', async () => {
    const stored = await encode('lz4', walLike(CHUNK_BYTES + 5000));
    const first = lz4FrameLength(stored) as { frame: number };
    expect(lz4FrameLength(stored.subarray(first.frame))).toEqual({ frame: stored.length - first.frame });
  });

  it('refuses a zstd frame whose blocks would decode to gigabytes, before decoding it', async () => {
    // A hand-made frame: no content size, 1000 RLE blocks of 128 KiB (125 MiB from 4 KB).
    const blocks: Buffer[] = [];
    for (let i = 0; i < 1000; i++) {
      const b = Buffer.alloc(4);
      b.writeUIntLE(((128 * 1024) << 3) | (1 << 1) | (i === 999 ? 1 : 0), 0, 3);
      blocks.push(b);
    }
    const bomb = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]), ...blocks]);
    expect(() => zstdFrameLength(bomb)).toThrow(/more than/);
    await expect(decode('zstd', bomb)).rejects.toThrow(/more than/);
  });

  it('skips skippable frames and rejects unknown magic', async () => {
    const skippable = Buffer.alloc(8 + 3);
    skippable.writeUInt32LE(0x184d2a53, 0);
    skippable.writeUInt32LE(3, 4);
    expect(zstdFrameLength(skippable)).toEqual({ frame: 11 });
    const plain = Buffer.from('hello');
    const stored = Buffer.concat([skippable, await encode('zstd', plain)]);
    expect((await decode('zstd', stored)).equals(plain)).toBe(true);
    expect(() => zstdFrameLength(Buffer.from('GARBAGE!'))).toThrow(FrameFormatError);
    expect(() => lz4FrameLength(Buffer.from('GARBAGE!'))).toThrow(FrameFormatError);
  });
});

// The stored objects are standard streams: the reference tools read them, where installed.
describe.each([
  ['zstd', '/usr/bin/zstd'],
  ['lz4', '/usr/bin/lz4'],
] as const)('%s objects decode with the reference tool', (codec, tool) => {
  it.skipIf(!existsSync(tool))(`${tool} -d gives back the content`, async () => {
    const plain = walLike(2 * CHUNK_BYTES + 77);
    const out = execFileSync(tool, ['-d', '-c'], { input: await encode(codec, plain), maxBuffer: 64 * 1024 * 1024 });
    expect(out.equals(plain)).toBe(true);
  });
});
