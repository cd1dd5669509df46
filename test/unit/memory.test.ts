import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HashingStream } from '../../src/codec/hash.js';
import { bodyParts } from '../../src/storage/body.js';
import { collectAfterFile } from '../../src/util/memory.js';

const MiB = 1024 * 1024;
const chunk = Buffer.alloc(MiB, 7);

/** Hashes a file of `mib` MiB, a MiB at a time, as sealing and unpacking do. */
async function hashFile(mib: number): Promise<void> {
  await pipeline(Readable.from(Array.from({ length: mib }, () => chunk)), new HashingStream('sha256'), async (source: AsyncIterable<Buffer>) => {
    for await (const _ of source);
  });
}

describe('forced collections', () => {
  const global = globalThis as { gc?: () => void };
  const before = global.gc;
  let forced = 0;
  beforeEach(() => {
    global.gc = () => void forced++;
    collectAfterFile(); // a fresh count
    forced = 0;
  });
  afterEach(() => {
    global.gc = before;
  });

  it('a background process, collecting after each file, forces none while hashing 16 MiB segments', async () => {
    for (let i = 0; i < 6; i++) {
      await hashFile(16);
      collectAfterFile();
    }
    expect(forced).toBe(6);
  });

  it('a call or the streamer (no file-end collections): one every 8 MiB once 32 MiB are processed', async () => {
    await hashFile(24);
    expect(forced).toBe(0);
    await hashFile(24);
    expect(forced).toBe(3);
  });

  it('a body sent in parts from a file (large by construction): one every 8 MiB from its start', async () => {
    const file = path.join(tmpdir(), `walbridge-memory-test-${process.pid}`);
    await writeFile(file, Buffer.alloc(24 * MiB));
    try {
      let parts = 0;
      for await (const _ of bodyParts({ path: file, size: 24 * MiB }, 5 * MiB)) parts++;
      expect(parts).toBe(5);
      expect(forced).toBe(2);
    } finally {
      await rm(file, { force: true });
    }
  });
});
