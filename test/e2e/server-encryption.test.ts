/**
 * Server-side encryption as a DBA configures it: archive-push with an SSE-KMS key (radosgw) or a
 * Cloud KMS key (GCS test server) stores every object it writes under that key, archive-fetch
 * restores the exact bytes, and a key the server refuses, a server that ignores the request, or an
 * unencrypted copy already under the name fail the push with a one-line error.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { createRepo, type Backend, type TestRepo } from '../support/repos.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
let work: string;

beforeAll(async () => {
  wal = await generateWalSegments(2);
  work = await scratchDir('wb-sse-');
}, 180_000);

interface Case {
  readonly backend: Backend;
  /** The environment that asks for a key the server knows. */
  readonly withKey: () => Record<string, string>;
  /** What the server says about an object stored under that key. */
  readonly storedUnder: () => string;
  /** The environment that asks for a key the server refuses, and what the error must say. */
  readonly refusedKey: () => Record<string, string>;
  readonly refusal: RegExp;
}

const CASES: readonly Case[] = [
  {
    backend: 's3',
    withKey: () => ({ WALBRIDGE_S3_SSE_KMS_KEY_ID: inject('s3').kmsKeyIds[0]! }),
    storedUnder: () => `aws:kms ${inject('s3').kmsKeyIds[0]!}`,
    refusedKey: () => ({ WALBRIDGE_S3_SSE_KMS_KEY_ID: 'walbridge-no-such-key' }),
    refusal: /access denied: .*the KMS key walbridge-no-such-key was refused: check s3-sse-kms-key-id/,
  },
  {
    backend: 'gcs',
    withKey: () => ({ WALBRIDGE_GCS_KMS_KEY_NAME: inject('gcsKmsKey') }),
    storedUnder: () => `${inject('gcsKmsKey')}/cryptoKeyVersions/1`,
    refusedKey: () => ({ WALBRIDGE_GCS_KMS_KEY_NAME: 'projects/walbridge-test/locations/us/keyRings/walbridge/cryptoKeys/no-such-key' }),
    refusal:
      /access denied: .*Permission denied on Cloud KMS key.*gcs-kms-key-name projects\/walbridge-test\/locations\/us\/keyRings\/walbridge\/cryptoKeys\/no-such-key: the bucket project's Cloud Storage service agent needs/,
  },
];

describe.each(CASES)('server-side encryption through $backend', (c) => {
  let repo: TestRepo;
  let namespace = 0;
  const ns = () => `sse${namespace}`;
  const env = (extra: Record<string, string> = {}) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: ns(), ...repo.env, ...extra });
  const push = (file: string, extra?: Record<string, string>) => runCli('archive-push', [file], env(extra));
  /** Every object in this test's namespace: WAL, and the identity record the first push writes. */
  async function namespaceObjects(): Promise<string[]> {
    const keys: string[] = [];
    for await (const entry of repo.store().list(`${ns()}/`)) keys.push(entry.key);
    return keys;
  }

  beforeAll(async () => {
    repo = await createRepo(c.backend);
  });
  beforeEach(() => {
    namespace++;
  });

  it('stores every object a push writes under the key, and fetch restores the exact bytes', async () => {
    for (const segment of wal.segments) {
      const pushed = await push(segment, c.withKey());
      expect(pushed.stderr).toMatch(/archived/);
      expect(pushed.status).toBe(0);
    }
    const objects = await namespaceObjects();
    expect(objects).toHaveLength(wal.segments.length + 1); // and identity.json
    for (const key of objects) expect(await repo.atRest(key), key).toBe(c.storedUnder());

    // Reading needs no setting: the server decrypts for whoever may read (and, on AWS, use the key).
    const dest = path.join(await mkdtemp(path.join(work, `${c.backend}-`)), 'RECOVERYXLOG');
    const fetched = await runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[0]!), dest], env());
    expect(fetched.status).toBe(0);
    expect((await readFile(dest)).equals(await readFile(wal.segments[0]!))).toBe(true);
  });

  it('fails a push with a key the server refuses: exit 11, the key and what to check named, nothing stored', async () => {
    const pushed = await push(wal.segments[0]!, c.refusedKey());
    expect(pushed.status).toBe(ExitCode.storeAccess);
    expect(pushed.stderr).toMatch(c.refusal);
    expect(pushed.stderr.trim().split('\n')).toHaveLength(1);
    expect(await namespaceObjects()).toEqual([]);
  });

  it('refuses to count an unencrypted copy already under the name as archived (exit 13)', async () => {
    expect((await push(wal.segments[0]!)).status).toBe(0); // before encryption was configured
    const again = await push(wal.segments[0]!, c.withKey());
    expect(again.status).toBe(ExitCode.storeError);
    expect(again.stderr).toMatch(
      /refusing to count \w+ as archived: .* holds identical content under its name, but .* was asked for, the server reports (no server-side encryption|none);/,
    );
  });
});

describe('a server that ignores the encryption asked for', () => {
  it('fails the push (radosgw 16 takes AES256 and stores plaintext): exit 13, nothing left', async () => {
    const repo = await createRepo('s3');
    const pushed = await runCli('archive-push', [wal.segments[0]!], {
      WALBRIDGE_REPO: repo.url,
      WALBRIDGE_NAMESPACE: 'aes',
      ...repo.env,
      WALBRIDGE_S3_SSE: 'AES256',
    });
    expect(pushed.status).toBe(ExitCode.storeError);
    expect(pushed.stderr).toMatch(
      /does not store it encrypted as asked \(AES256 was asked for, the server reports no server-side encryption\); it was removed/,
    );
    const left: string[] = [];
    for await (const entry of repo.store().list('aes/')) left.push(entry.key);
    expect(left).toEqual([]);
  });
});

describe('settings that do not fit the repository', () => {
  it('refuses an S3 key with a gs:// repository instead of ignoring it (exit 3)', async () => {
    const r = await runCli('archive-push', [wal.segments[0]!], {
      WALBRIDGE_REPO: 'gs://some-bucket/p',
      WALBRIDGE_NAMESPACE: 'n',
      WALBRIDGE_S3_SSE_KMS_KEY_ID: 'alias/wal',
    });
    expect(r.status).toBe(ExitCode.config);
    expect(r.stderr).toMatch(/WALBRIDGE_S3_SSE_KMS_KEY_ID is set, but the repository is gs:\/\/; it applies to s3:\/\/ repositories only/);
  });
});
