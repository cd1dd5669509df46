/** The chunked AES-256-GCM stages and the key ring: round trips, and every way a body can be wrong. */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DecryptionError, Decryptor, Encryptor, HEADER_BYTES, headerKeyId, type SealedContext } from '../../src/codec/encryption.js';
import { KeyRing, keyId, parseKeys, readKeyFile, type EncryptionKey } from '../../src/codec/keys.js';
import { scratchDir } from '../support/scratch.js';

const MiB = 1024 * 1024;
const CHUNK = MiB; // the writer's chunk size
const SEALED_CHUNK = CHUNK + 16;

function newKey(): EncryptionKey {
  const material = randomBytes(32);
  return { id: keyId(material), material };
}

const context: SealedContext = { fileName: '000000010000000000000003', codec: 'zstd', size: 123, sha256: 'ab'.repeat(32) };

async function run(input: Buffer, stage: NodeJS.ReadWriteStream, pieces = 7): Promise<Buffer> {
  const out: Buffer[] = [];
  // Odd-sized pieces, so chunk boundaries never line up with writes.
  const step = Math.max(1, Math.ceil(input.length / pieces));
  const parts = input.length === 0 ? [] : Array.from({ length: Math.ceil(input.length / step) }, (_, i) => input.subarray(i * step, (i + 1) * step));
  await pipeline(
    Readable.from(parts),
    stage,
    new Writable({
      write: (c: Buffer, _e, done) => {
        out.push(c);
        done();
      },
    }),
  );
  return Buffer.concat(out);
}

const encrypt = (plain: Buffer, key: EncryptionKey, ctx = context) => run(plain, new Encryptor(key, () => ctx));
const decrypt = (sealed: Buffer, key: EncryptionKey, ctx = context) => run(sealed, new Decryptor(key, ctx), 5);

describe('chunked AES-256-GCM', () => {
  const key = newKey();

  it.each([0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 12345])('round-trips %i bytes', async (size) => {
    const plain = randomBytes(size);
    const sealed = await encrypt(plain, key);
    expect(sealed.length).toBe(HEADER_BYTES + size + 16 * Math.max(1, Math.ceil(size / CHUNK)));
    expect(headerKeyId(sealed)).toBe(key.id);
    expect((await decrypt(sealed, key)).equals(plain)).toBe(true);
  });

  it('never repeats ciphertext for the same input (a fresh salt per object)', async () => {
    const plain = Buffer.alloc(4096, 7);
    const [a, b] = await Promise.all([encrypt(plain, key), encrypt(plain, key)]);
    expect(a.subarray(HEADER_BYTES).equals(b.subarray(HEADER_BYTES))).toBe(false);
    expect(a.includes(plain.subarray(0, 64))).toBe(false);
  });

  describe('refuses a body that is not exactly what was written', async () => {
    const plain = randomBytes(2 * CHUNK + 500);
    const sealed = await encrypt(plain, key);
    const flip = (at: number) => {
      const copy = Buffer.from(sealed);
      copy[at]! ^= 0x01;
      return copy;
    };
    const cases: [string, Buffer, RegExp][] = [
      ['a flipped bit in the first chunk', flip(HEADER_BYTES + 10), /chunk 0 failed authentication/],
      ['a flipped bit in a tag', flip(HEADER_BYTES + CHUNK + 3), /chunk 0 failed authentication/],
      ['a flipped bit in the last chunk', flip(sealed.length - 20), /chunk 2 \(the last\) failed authentication/],
      ['a flipped bit in the salt', flip(20), /chunk 0 failed authentication/],
      ['the last chunk cut off', sealed.subarray(0, HEADER_BYTES + 2 * SEALED_CHUNK), /chunk 1 \(the last\) failed/],
      ['a few bytes cut off', sealed.subarray(0, sealed.length - 3), /failed authentication/],
      ['only the header', sealed.subarray(0, HEADER_BYTES), /truncated/],
      ['less than the header', sealed.subarray(0, 10), /shorter than its header/],
      [
        'chunks swapped',
        Buffer.concat([
          sealed.subarray(0, HEADER_BYTES),
          sealed.subarray(HEADER_BYTES + SEALED_CHUNK, HEADER_BYTES + 2 * SEALED_CHUNK),
          sealed.subarray(HEADER_BYTES, HEADER_BYTES + SEALED_CHUNK),
          sealed.subarray(HEADER_BYTES + 2 * SEALED_CHUNK),
        ]),
        /chunk 0 failed authentication/,
      ],
      ['not an encrypted body at all', randomBytes(5000), /does not start with walbridge's encryption header/],
    ];
    it.each(cases)('%s', async (_what, body, message) => {
      const err = await decrypt(body, key).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DecryptionError);
      expect((err as Error).message).toMatch(message);
    });

    it.each([
      ['another name', { ...context, fileName: '000000010000000000000004' }],
      ['another codec', { ...context, codec: 'lz4' }],
      ['another size', { ...context, size: 124 }],
      ['another hash', { ...context, sha256: 'cd'.repeat(32) }],
    ])('metadata or a name it was not written with: %s', async (_what, other) => {
      await expect(decrypt(sealed, key, other)).rejects.toThrow(/the last\) failed authentication.*another name or metadata/);
    });

    it('the body of one key read with another', async () => {
      const other = newKey();
      await expect(decrypt(sealed, { id: key.id, material: other.material })).rejects.toThrow(/failed authentication/);
      await expect(decrypt(sealed, other)).rejects.toThrow(`the body names key ${key.id}, its metadata key ${other.id}`);
    });

    it('a header claiming a huge chunk size', async () => {
      const copy = Buffer.from(sealed);
      copy.writeUInt32BE(0x7fffffff, HEADER_BYTES - 4);
      await expect(decrypt(copy, key)).rejects.toThrow(/bad chunk size/);
    });
  });
});

describe('keys', () => {
  const base64 = randomBytes(32).toString('base64');
  const hex = randomBytes(32).toString('hex');

  it('reads base64 and hex keys, one per line, the first one current, comments ignored', () => {
    const keys = parseKeys(`# rotated 2026-11\n${base64}\n\n${hex}  # the old one\n`);
    expect(Array.isArray(keys)).toBe(true);
    const [current, old] = keys as EncryptionKey[];
    expect(current!.material.equals(Buffer.from(base64, 'base64'))).toBe(true);
    expect(old!.material.equals(Buffer.from(hex, 'hex'))).toBe(true);
    expect(current!.id).toMatch(/^[0-9a-f]{16}$/);
    expect(keyId(Buffer.from(base64, 'base64'))).toBe(current!.id); // stable
    expect(parseKeys(`${base64}, ${hex}`)).toHaveLength(2);
  });

  it.each([
    ['an empty file', '\n# nothing\n', /no key in it/],
    ['a short key', randomBytes(16).toString('base64'), /line 1: not a key/],
    ['a passphrase', 'correct horse battery staple', /line 1: not a key/],
    ['a long key', randomBytes(48).toString('base64'), /line 1: not a key/],
  ])('refuses %s, without quoting it', (_what, text, message) => {
    const problem = parseKeys(text);
    expect(problem).toMatch(message);
    expect(problem).not.toContain(text.trim().slice(0, 10));
  });

  it('a ring prints and serialises as ids only, and finds its keys by id', async () => {
    const dir = await scratchDir('wb-keys-');
    const file = path.join(dir, 'keys');
    await writeFile(file, `${base64}\n${hex}\n`);
    const ring = new KeyRing({ file }, (await readKeyFile(file)) as EncryptionKey[]);
    expect(JSON.stringify(ring)).not.toContain(base64);
    expect(JSON.stringify(ring)).not.toContain(Buffer.from(base64, 'base64').toString('hex'));
    expect(JSON.stringify(ring)).not.toContain(hex);
    expect(String(ring)).toContain(ring.current.id);
    const second = parseKeys(hex) as EncryptionKey[];
    expect(ring.find(second[0]!.id)?.material.equals(Buffer.from(hex, 'hex'))).toBe(true);
    expect(ring.find('0'.repeat(16))).toBeUndefined();
    expect(await readKeyFile(path.join(dir, 'missing'))).toMatch(/cannot read it: ENOENT/);
  });
});
