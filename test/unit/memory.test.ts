import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HashingStream } from '../../src/codec/hash.js';

const MiB = 1024 * 1024;
const chunk = Buffer.alloc(MiB, 7);

/** Hashes a file of `mib` MiB, a MiB at a time, as sealing and unpacking do. */
async function hashFile(mib: number): Promise<void> {
  await pipeline(Readable.from(Array.from({ length: mib }, () => chunk)), new HashingStream('sha256'), async (source: AsyncIterable<Buffer>) => {
    for await (const _ of source);
  });
}

describe('forced collections while hashing', () => {
  const global = globalThis as { gc?: () => void };
  const before = global.gc;
  let forced = 0;
  beforeEach(() => {
    forced = 0;
    global.gc = () => void forced++;
  });
  afterEach(() => {
    global.gc = before;
  });

  it('forces none for any number of 16 MiB files in one process (the background pusher and fetcher hash every segment)', async () => {
    for (let i = 0; i < 6; i++) await hashFile(16);
    expect(forced).toBe(0);
  });

  it('forces one every 8 MiB past the first 32 MiB of a big file, for each big file', async () => {
    await hashFile(64);
    expect(forced).toBe(4);
    await hashFile(16);
    expect(forced).toBe(4);
    await hashFile(48);
    expect(forced).toBe(6);
  });
});
