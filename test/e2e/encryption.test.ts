/**
 * Client-side encryption through each backend, as PostgreSQL runs the commands: what is stored is
 * ciphertext bound to its name and metadata, keys rotate, and a missing key, a wrong key or a
 * tampered object is a clear error with nothing handed to PostgreSQL.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CIPHER_NAME, headerKeyId } from '../../src/codec/encryption.js';
import { META } from '../../src/codec/envelope.js';
import { keyId } from '../../src/codec/keys.js';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
let work: string;

beforeAll(async () => {
  wal = await generateWalSegments(3, { timelineSwitch: true });
  work = await scratchDir('wb-crypt-');
}, 180_000);

interface TestKey {
  readonly text: string;
  readonly id: string;
}

function newKey(): TestKey {
  const material = randomBytes(32);
  return { text: material.toString('base64'), id: keyId(material) };
}

async function keyFile(...keys: TestKey[]): Promise<string> {
  const file = path.join(work, `keys-${randomBytes(4).toString('hex')}`);
  await writeFile(file, `${keys.map((k) => k.text).join('\n')}\n`, { mode: 0o600 });
  return file;
}

const exists = (file: string) =>
  access(file).then(
    () => true,
    () => false,
  );

describe.each(BACKENDS)('client-side encryption through %s', (backend) => {
  let repo: TestRepo;
  let n = 0;
  const first = newKey();
  const second = newKey();
  const secrets = [first.text, second.text];
  const env = (extra: Record<string, string> = {}) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: `crypt${n}`, ...repo.env, ...extra });
  const push = (file: string, extra: Record<string, string>) => runCli('archive-push', [file], env(extra), { secrets });
  const fetch = (name: string, dest: string, extra: Record<string, string>) => runCli('archive-fetch', ['--no-wait', name, dest], env(extra), { secrets });
  const withKeys = async (...keys: TestKey[]) => ({ WALBRIDGE_ENCRYPTION_KEY_FILE: await keyFile(...keys) });
  const segmentKey = (file: string) => `crypt${n}/wal/${path.basename(file)}`;

  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  beforeEach(() => {
    n++;
  });

  it('stores ciphertext named by its key id and restores the exact bytes', async () => {
    const keys = await withKeys(first);
    const segment = wal.segments[0]!;
    const pushed = await push(segment, keys);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(pushed.stderr).toContain(`encrypted with key ${first.id}`);

    const { info, body } = await repo.store().get(segmentKey(segment));
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    const stored = Buffer.concat(chunks);
    expect(info.metadata[META.cipher]).toBe(CIPHER_NAME);
    expect(info.metadata[META.keyId]).toBe(first.id);
    expect(headerKeyId(stored)).toBe(first.id);
    const plain = await readFile(segment);
    expect(stored.includes(plain.subarray(0, 40))).toBe(false); // not even the page header shows

    const dest = path.join(await mkdtemp(path.join(work, 'rt-')), 'RECOVERYXLOG');
    const fetched = await fetch(path.basename(segment), dest, keys);
    expect(fetched.status, fetched.stderr).toBe(0);
    expect((await readFile(dest)).equals(plain)).toBe(true);

    // A repeated push of the same file (a crash before PostgreSQL heard back) is recognised.
    const again = await push(segment, keys);
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/already archived with identical content/);
  });

  it('takes the keys from WALBRIDGE_ENCRYPTION_KEY, but not from two places at once', async () => {
    const history = wal.historyFiles[0]!;
    const pushed = await push(history, { WALBRIDGE_ENCRYPTION_KEY: first.text });
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(pushed.stderr).toContain(`encrypted with key ${first.id}`);
    const dest = path.join(await mkdtemp(path.join(work, 'env-')), 'RECOVERYHISTORY');
    expect((await fetch(path.basename(history), dest, { WALBRIDGE_ENCRYPTION_KEY: first.text })).status).toBe(0);
    expect((await readFile(dest)).equals(await readFile(history))).toBe(true);

    const both = await push(history, { WALBRIDGE_ENCRYPTION_KEY: first.text, ...(await withKeys(first)) });
    expect(both.status).toBe(ExitCode.config);
    expect(both.stderr).toMatch(/both WALBRIDGE_ENCRYPTION_KEY_FILE and WALBRIDGE_ENCRYPTION_KEY are set/);
  });

  it('refuses to restore without the right key, naming the key to add, and writes nothing', async () => {
    const segment = wal.segments[1]!;
    expect((await push(segment, await withKeys(first))).status).toBe(0);
    const dest = path.join(await mkdtemp(path.join(work, 'nokey-')), 'RECOVERYXLOG');

    const without = await fetch(path.basename(segment), dest, {});
    expect(without.status).toBe(ExitCode.encryptionKey);
    expect(without.stderr).toContain(`is encrypted with key ${first.id}, and no key is given: set encryption-key-file or WALBRIDGE_ENCRYPTION_KEY`);
    expect(without.stderr.trim().split('\n')).toHaveLength(1);

    const wrong = await fetch(path.basename(segment), dest, await withKeys(second));
    expect(wrong.status).toBe(ExitCode.encryptionKey);
    expect(wrong.stderr).toContain(`encrypted with key ${first.id}, which is not among the keys given (${second.id} from encryption-key-file`);
    expect(await exists(dest)).toBe(false);
  });

  it('rotates: a new first key encrypts, older keys still decrypt; plaintext only when allowed', async () => {
    const [old, fresh] = [wal.segments[0]!, wal.segments[1]!];
    expect((await push(old, await withKeys(first))).status).toBe(0);
    const rotated = await withKeys(second, first);
    const pushed = await push(fresh, rotated);
    expect(pushed.stderr).toContain(`encrypted with key ${second.id}`);
    const dir = await mkdtemp(path.join(work, 'rot-'));
    for (const file of [old, fresh]) {
      const dest = path.join(dir, path.basename(file));
      const fetched = await fetch(path.basename(file), dest, rotated);
      expect(fetched.status, fetched.stderr).toBe(0);
      expect((await readFile(dest)).equals(await readFile(file))).toBe(true);
    }
    // An object stored in the clear is refused while a key is set (it could be a replacement
    // with forged metadata), unless objects from before encryption are declared acceptable.
    const plainOne = wal.segments[2]!;
    expect((await push(plainOne, {})).status).toBe(0);
    const refused = await fetch(path.basename(plainOne), path.join(dir, 'plain'), rotated);
    expect(refused.status).toBe(ExitCode.corrupt);
    expect(refused.stderr).toMatch(
      /it is stored unencrypted, but an encryption key is set \(a replaced object\?\); if it was archived before encryption was turned on, set encryption-allow-plaintext/,
    );
    expect(await exists(path.join(dir, 'plain'))).toBe(false);
    expect((await fetch(path.basename(plainOne), path.join(dir, 'plain'), { ...rotated, WALBRIDGE_ENCRYPTION_ALLOW_PLAINTEXT: '1' })).status).toBe(0);
  });

  it('refuses a tampered object, one copied under another name, and edited metadata', async () => {
    const keys = await withKeys(first);
    const [a, b] = [wal.segments[0]!, wal.segments[1]!];
    expect((await push(a, keys)).status).toBe(0);
    const dir = await mkdtemp(path.join(work, 'tamper-'));
    const store = repo.store();

    // The object of segment a stored under segment b's name, metadata and all.
    const original = await store.get(segmentKey(a));
    const chunks: Buffer[] = [];
    for await (const c of original.body) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const { createHash } = await import('node:crypto');
    const md5 = createHash('md5').update(body).digest();
    await store.putIfAbsent(segmentKey(b), { body, md5, metadata: original.info.metadata });
    const renamed = await fetch(path.basename(b), path.join(dir, 'b'), keys);
    expect(renamed.status).toBe(ExitCode.corrupt);
    expect(renamed.stderr).toMatch(/does not decrypt: chunk \d+ \(the last\) failed authentication/);

    // Metadata promising other content (a plain hash made to match a forged file).
    n++;
    await store.putIfAbsent(segmentKey(a), { body, md5, metadata: { ...original.info.metadata, [META.sha256]: 'ab'.repeat(32) } });
    const edited = await fetch(path.basename(a), path.join(dir, 'a-meta'), keys);
    expect(edited.status).toBe(ExitCode.corrupt);
    expect(edited.stderr).toMatch(/does not decrypt/);

    // One flipped bit in the middle of the stored bytes.
    n++;
    expect((await push(a, keys)).status).toBe(0);
    await repo.tamper(segmentKey(a), (stored) => {
      const copy = Buffer.from(stored);
      copy[Math.floor(copy.length / 2)]! ^= 0x10;
      return copy;
    });
    const flipped = await fetch(path.basename(a), path.join(dir, 'a-flip'), keys);
    expect(flipped.status).toBe(ExitCode.corrupt);
    expect(flipped.stderr).toMatch(/does not decrypt: chunk \d+ .*failed authentication/);
    expect(await exists(path.join(dir, 'b'))).toBe(false);
    expect(await exists(path.join(dir, 'a-meta'))).toBe(false);
    expect(await exists(path.join(dir, 'a-flip'))).toBe(false);

    // verify --deep finds it with the key, and says which key it lacks without one.
    const deep = await runCli('walbridge', ['verify', '--deep'], env(keys), { secrets });
    expect(deep.status).toBe(ExitCode.problems);
    expect(deep.stdout).toMatch(/PROBLEM \(corrupt\): .*failed authentication/);
    const keyless = await runCli('walbridge', ['verify', '--deep'], env(), { secrets });
    expect(keyless.stdout).toContain(`is encrypted with key ${first.id}, and no key is given`);
  });
});
