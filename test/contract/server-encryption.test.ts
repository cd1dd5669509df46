/**
 * Server-side encryption in the drivers, on the real servers: radosgw's SSE-KMS (its testing KMS
 * backend knows the keys in inject('s3').kmsKeyIds) and the GCS test server's CMEK (it knows
 * inject('gcsKmsKey')). Every write is stored under the key asked for, or fails with nothing left:
 * a key the server refuses, and a server that takes the request but stores the object unencrypted
 * (radosgw 16 does so with AES256; the GCS test server can be told to ignore kmsKeyName).
 */
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { md5 } from '../../src/codec/hash.js';
import { GcsStore } from '../../src/storage/gcs.js';
import type { Store } from '../../src/storage/store.js';
import { startGcsServer, type GcsTestServer } from '../servers/gcs/server.js';
import { createRepo, s3Client, type TestRepo } from '../support/repos.js';
import { readObject, storeError } from '../support/store-calls.js';

/** A body sent in one request, and one sent in parts (S3 multipart, GCS resumable): both paths must check. */
const BODIES = [
  ['one request', 1000],
  ['parts', 17 * 1024 * 1024],
] as const;

function put(store: Store, key: string, data: Buffer) {
  return store.putIfAbsent(key, { body: data, md5: md5(data), metadata: { 'walbridge-test': 'yes' } });
}

describe('S3 server-side encryption through radosgw', () => {
  let repo: TestRepo;
  const [arnKey, bareKey] = inject('s3').kmsKeyIds as [string, string];
  beforeAll(async () => {
    repo = await createRepo('s3', { prefix: 'sse' });
  });

  /** Multipart uploads still open under the repository: a failed write must not leave parts behind. */
  async function openUploads(): Promise<string[]> {
    const out = await s3Client().send(new ListMultipartUploadsCommand({ Bucket: new URL(repo.url).host, Prefix: 'sse/' }));
    return (out.Uploads ?? []).map((u) => u.Key!);
  }

  describe.each(BODIES)('a body sent in %s', (_path, size) => {
    it.each([arnKey, bareKey])('stores it under SSE-KMS key %s, reads it back exactly', async (keyId) => {
      const store = repo.store({ s3ServerSideEncryption: { algorithm: 'aws:kms', kmsKeyId: keyId } });
      const data = randomBytes(size);
      const key = `kms/${size}/${keyId.replace(/\W/g, '-')}`;
      expect(await put(store, key, data)).toBe('created');
      expect(await repo.atRest(key)).toBe(`aws:kms ${keyId}`);
      expect((await store.head(key))?.notEncryptedAsAsked).toBeUndefined();
      expect((await readObject(store, key)).data.equals(data)).toBe(true);
    });

    it('refuses a KMS key the server does not know: denied, naming the key and the setting, nothing stored', async () => {
      const store = repo.store({ s3ServerSideEncryption: { algorithm: 'aws:kms', kmsKeyId: 'walbridge-no-such-key' } });
      const key = `unknown-key/${size}`;
      const err = await storeError(put(store, key, randomBytes(size)));
      expect(err.kind).toBe('denied'); // radosgw 16 answers 403 (InvalidAccessKeyId, "Failed to retrieve the actual key")
      expect(err.message).toMatch(/the KMS key walbridge-no-such-key was refused: check s3-sse-kms-key-id/);
      expect(await repo.store().head(key)).toBeUndefined();
      expect(await openUploads()).toEqual([]);
    });

    it('fails when the server ignores the encryption asked for (radosgw 16 and AES256), leaving nothing', async () => {
      const store = repo.store({ s3ServerSideEncryption: { algorithm: 'AES256' } });
      const key = `ignored/${size}`;
      const err = await storeError(put(store, key, randomBytes(size)));
      expect(err.kind).toBe('permanent');
      expect(err.message).toMatch(/does not store it encrypted as asked \(AES256 was asked for, the server reports no server-side encryption\)/);
      expect(await repo.store().head(key)).toBeUndefined();
      expect(await openUploads()).toEqual([]);
    });
  });

  it('still has the server check Content-MD5 on an SSE-KMS write', async () => {
    const store = repo.store({ s3ServerSideEncryption: { algorithm: 'aws:kms', kmsKeyId: arnKey } });
    const err = await storeError(store.putIfAbsent('kms/damaged', { body: Buffer.from('sent'), md5: md5(Buffer.from('meant')), metadata: {} }));
    expect(err.message).toMatch(/BadDigest/);
    expect(await repo.store().head('kms/damaged')).toBeUndefined();
  });

  it('tells, on head, an object not stored as this store would write it', async () => {
    const data = Buffer.from('stored without encryption');
    expect(await put(repo.store(), 'plain/a', data)).toBe('created');
    const kms = repo.store({ s3ServerSideEncryption: { algorithm: 'aws:kms', kmsKeyId: arnKey } });
    expect((await kms.head('plain/a'))?.notEncryptedAsAsked).toBe('aws:kms was asked for, the server reports no server-side encryption');
    expect(await put(kms, 'plain/b', data)).toBe('created');
    const otherKey = repo.store({ s3ServerSideEncryption: { algorithm: 'aws:kms', kmsKeyId: bareKey } });
    expect((await otherKey.head('plain/b'))?.notEncryptedAsAsked).toBe(`KMS key ${bareKey} was asked for, the server reports ${arnKey}`);
    expect((await repo.store().head('plain/b'))?.notEncryptedAsAsked).toBeUndefined(); // nothing asked, nothing to tell
  });
});

describe('GCS CMEK through the GCS test server', () => {
  let repo: TestRepo;
  const kmsKey = inject('gcsKmsKey');
  beforeAll(async () => {
    repo = await createRepo('gcs', { prefix: 'cmek' });
  });

  describe.each(BODIES)('a body sent in %s', (_path, size) => {
    it('stores it under the Cloud KMS key (the object names the key version), reads it back exactly', async () => {
      const store = repo.store({ gcsKmsKeyName: kmsKey });
      const data = randomBytes(size);
      const key = `kms/${size}`;
      expect(await put(store, key, data)).toBe('created');
      expect(await repo.atRest(key)).toBe(`${kmsKey}/cryptoKeyVersions/1`);
      expect((await store.head(key))?.notEncryptedAsAsked).toBeUndefined();
      expect((await readObject(store, key)).data.equals(data)).toBe(true);
    });

    it('refuses a key the service agent cannot use: denied, naming the key and who needs it, nothing stored', async () => {
      const unknown = kmsKey.replace(/cryptoKeys\/.*/, 'cryptoKeys/no-such-key');
      const store = repo.store({ gcsKmsKeyName: unknown });
      const key = `unknown-key/${size}`;
      const err = await storeError(put(store, key, randomBytes(size)));
      expect(err.kind).toBe('denied');
      expect(err.message).toMatch(/Permission denied on Cloud KMS key/);
      expect(err.message).toContain(
        `gcs-kms-key-name ${unknown}: the bucket project's Cloud Storage service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter`,
      );
      expect(await repo.store().head(key)).toBeUndefined();
    });
  });

  it('tells, on head, an object not stored under the key asked for', async () => {
    expect(await put(repo.store(), 'plain/a', Buffer.from('x'))).toBe('created');
    expect((await repo.store({ gcsKmsKeyName: kmsKey }).head('plain/a'))?.notEncryptedAsAsked).toBe(
      `Cloud KMS key ${kmsKey} was asked for, the server reports none`,
    );
  });

  describe('a server that takes kmsKeyName and stores the object unencrypted', () => {
    let ignoring: GcsTestServer;
    beforeAll(async () => {
      ignoring = await startGcsServer({ ignoreKmsKeyName: true });
      ignoring.createBucket('ignoring');
    });
    afterAll(() => ignoring.close());

    /** The SDK reads STORAGE_EMULATOR_HOST when a client is made: this store's, then the shared server's again. */
    function ignoringStore(): GcsStore {
      const shared = process.env['STORAGE_EMULATOR_HOST'];
      process.env['STORAGE_EMULATOR_HOST'] = ignoring.url;
      try {
        return new GcsStore({ bucket: 'ignoring', prefix: 'cmek', kmsKeyName: kmsKey });
      } finally {
        process.env['STORAGE_EMULATOR_HOST'] = shared;
      }
    }

    it.each(BODIES)('fails a body sent in %s, and takes the object back', async (_path, size) => {
      const store = ignoringStore();
      const err = await storeError(put(store, `ignored/${size}`, randomBytes(size)));
      expect(err.kind).toBe('permanent');
      expect(err.message).toMatch(/does not store it encrypted as asked \(Cloud KMS key .* was asked for, the server reports none\).*; it was removed$/);
      expect([...ignoring.objects('ignoring').keys()]).toEqual([]);
    });
  });
});
