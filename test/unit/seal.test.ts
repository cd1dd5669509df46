import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { describeContent, MEMORY_BODY_LIMIT, sealFile, unseal } from '../../src/codec/envelope.js';

const dir = mkdtempSync(path.join(tmpdir(), 'walbridge-seal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sealing a file bigger than MEMORY_BODY_LIMIT (a segment of wal_segment_size 32 MiB to 1 GiB)', () => {
  it('its stored body goes to a temp file past its first MiB, even when it ends up small, and reads back the same', async () => {
    const plain = Buffer.alloc(MEMORY_BODY_LIMIT + 1024 * 1024);
    randomBytes(3 * 1024 * 1024).copy(plain, 0); // ~3 MiB stored: small enough for memory, but not kept there
    const source = path.join(dir, '000000010000000000000002');
    writeFileSync(source, plain);
    const sealed = await sealFile(source, { codec: 'zstd', level: undefined, spoolDir: dir });
    try {
      expect(Buffer.isBuffer(sealed.body)).toBe(false);
      const spilled = sealed.body as { path: string; size: number };
      expect(path.dirname(spilled.path)).toBe(dir);
      expect(spilled.size).toBeLessThan(4 * 1024 * 1024);
      const promised = describeContent(sealed.metadata);
      if (typeof promised === 'string') throw new Error(promised);
      const out: Buffer[] = [];
      const collect = () =>
        new Writable({
          write: (c: Buffer, _e, done) => {
            out.push(c);
            done();
          },
        });
      const seen = await unseal(createReadStream(spilled.path), promised, collect, {
        fileName: '000000010000000000000002',
        keys: undefined,
      });
      expect(seen.size).toBe(plain.length);
      expect(Buffer.concat(out).equals(plain)).toBe(true);
    } finally {
      await sealed.dispose();
    }
    expect(readFileSync(source).length).toBe(plain.length);
  });

  it('a 16 MiB segment stored small stays in memory: no temp file', async () => {
    const source = path.join(dir, '000000010000000000000003');
    writeFileSync(source, Buffer.alloc(MEMORY_BODY_LIMIT));
    const small = await sealFile(source, { codec: 'zstd', level: undefined, spoolDir: dir });
    expect(Buffer.isBuffer(small.body)).toBe(true);
    await small.dispose();
  });
});
