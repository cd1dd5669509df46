/**
 * Test repositories on each backend: a fresh bucket (or directory) per call, the environment a
 * walbridge child process needs to reach it, and a driver for looking at or damaging objects.
 */
import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { inject } from 'vitest';
import { FsStore } from '../../src/storage/fs.js';
import { GcsStore } from '../../src/storage/gcs.js';
import { md5 } from '../../src/codec/hash.js';
import { createMemoryBucket, MemoryStore, removeMemoryBucket } from '../../src/storage/memory.js';
import { S3Store, type S3ServerSideEncryption } from '../../src/storage/s3.js';
import type { Store } from '../../src/storage/store.js';
import { scratchDir } from './scratch.js';

/** 'memory' (the in-process driver) serves the contract suite and unit tests only: a walbridge child process cannot reach it. */
export type Backend = 'file' | 's3' | 'gcs' | 'memory';
const ALL_BACKENDS: readonly Backend[] = ['file', 's3', 'gcs'];
/** The backends a file runs its cases through: all three, or those WALBRIDGE_TEST_BACKENDS names (vitest.config.ts's runs on newer PostgreSQL majors). */
export const BACKENDS: readonly Backend[] = process.env.WALBRIDGE_TEST_BACKENDS
  ? ALL_BACKENDS.filter((b) => process.env.WALBRIDGE_TEST_BACKENDS!.split(',').includes(b))
  : ALL_BACKENDS;

export interface TestRepo {
  readonly backend: Backend;
  /** The WALBRIDGE_REPO value. */
  readonly url: string;
  /** What a walbridge process needs in its environment to reach the repository. */
  readonly env: Record<string, string>;
  /** A driver on the same repository, for inspecting and damaging objects directly. */
  store(opts?: StoreOptions): Store;
  /** Stores bytes under a key as another tool would: no walbridge metadata (file://: no header line). */
  putForeign(key: string, data: Buffer): Promise<void>;
  /** Replaces an object's stored bytes but keeps its metadata: what bit rot would look like. */
  tamper(key: string, change: (stored: Buffer) => Buffer): Promise<void>;
  /**
   * How the server itself says an object is encrypted at rest, asked without the driver under test:
   * S3 `"aws:kms <key id>"` or `"AES256"`, GCS the `kmsKeyName`; undefined for none (and for file://).
   */
  atRest(key: string): Promise<string | undefined>;
  cleanup(): Promise<void>;
}

export interface StoreOptions {
  readonly pageSize?: number;
  /** Another bucket (or directory) name than the repository's, e.g. one that does not exist. */
  readonly bucket?: string;
  /** Server-side encryption the driver asks for (S3 only). */
  readonly s3ServerSideEncryption?: S3ServerSideEncryption;
  /** Cloud KMS key the driver asks for (GCS only). */
  readonly gcsKmsKeyName?: string;
}

function uniqueName(): string {
  return `wb-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** Environment for S3 through radosgw; also applied to this process for in-process drivers. */
function s3Env(): Record<string, string> {
  const s3 = inject('s3');
  return {
    AWS_ACCESS_KEY_ID: s3.accessKey,
    AWS_SECRET_ACCESS_KEY: s3.secretKey,
    AWS_REGION: s3.region,
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    WALBRIDGE_S3_PATH_STYLE: '1',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}

export function s3Client(): S3Client {
  const s3 = inject('s3');
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export async function createRepo(backend: Backend, opts: { prefix?: string } = {}): Promise<TestRepo> {
  const prefix = opts.prefix ?? 'walbridge';
  switch (backend) {
    case 'memory': {
      const bucket = uniqueName();
      createMemoryBucket(bucket);
      const store = (o: StoreOptions = {}) => new MemoryStore({ bucket: o.bucket ?? bucket, prefix, pageSize: o.pageSize });
      const put = (key: string, data: Buffer, metadata: Record<string, string>) => store().putIfAbsent(key, { body: data, md5: md5(data), metadata });
      return {
        backend,
        url: `memory://${bucket}/${prefix}`,
        env: {},
        store,
        putForeign: async (key, data) => void (await put(key, data, {})),
        tamper: async (key, change) => {
          const { info, body } = await store().get(key);
          const chunks: Buffer[] = [];
          for await (const c of body) chunks.push(c as Buffer);
          await store().deleteMany([key]);
          await put(key, change(Buffer.concat(chunks)), { ...info.metadata });
        },
        atRest: async () => undefined,
        cleanup: async () => removeMemoryBucket(bucket),
      };
    }
    case 'file': {
      const dir = await scratchDir('wb-repo-');
      // PostgreSQL's archive_command runs as another user in the end-to-end tests.
      await chmod(dir, 0o777);
      return {
        backend,
        url: `file://${dir}`,
        env: {},
        store: (o: StoreOptions = {}) => new FsStore(o.bucket ? path.join(dir, o.bucket) : dir),
        putForeign: async (key, data) => {
          await mkdir(path.dirname(path.join(dir, key)), { recursive: true });
          await writeFile(path.join(dir, key), data);
        },
        tamper: async (key, change) => {
          const file = path.join(dir, key);
          const content = await readFile(file);
          const headerEnd = content.indexOf(0x0a) + 1;
          await writeFile(file, Buffer.concat([content.subarray(0, headerEnd), change(content.subarray(headerEnd))]));
        },
        atRest: async () => undefined,
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    }
    case 's3': {
      const env = s3Env();
      Object.assign(process.env, env);
      const bucket = uniqueName();
      const client = s3Client();
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      const store = (o: StoreOptions = {}) =>
        new S3Store({
          bucket: o.bucket ?? bucket,
          prefix,
          endpoint: env.AWS_ENDPOINT_URL_S3,
          pathStyle: true,
          checksum: 'when-required',
          pageSize: o.pageSize,
          serverSideEncryption: o.s3ServerSideEncryption,
        });
      return {
        backend,
        url: `s3://${bucket}/${prefix}`,
        env,
        store,
        putForeign: async (key, data) => {
          await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}`, Body: data }));
        },
        tamper: async (key, change) => {
          const current = await store().get(key);
          const chunks: Buffer[] = [];
          for await (const c of current.body) chunks.push(c as Buffer);
          await client.send(
            new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}`, Body: change(Buffer.concat(chunks)), Metadata: { ...current.info.metadata } }),
          );
        },
        atRest: async (key) => {
          const out = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}` }));
          return out.ServerSideEncryption === undefined ? undefined : [out.ServerSideEncryption, out.SSEKMSKeyId].filter(Boolean).join(' ');
        },
        cleanup: async () => undefined, // radosgw's memstore goes away with the run
      };
    }
    case 'gcs': {
      const url = inject('gcsUrl');
      const env = { STORAGE_EMULATOR_HOST: url };
      Object.assign(process.env, env);
      const bucket = uniqueName();
      const created = await fetch(`${url}/storage/v1/b?project=test`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: bucket }),
      });
      if (!created.ok) throw new Error(`creating GCS test bucket failed: ${created.status} ${await created.text()}`);
      const store = (o: StoreOptions = {}) => new GcsStore({ bucket: o.bucket ?? bucket, prefix, pageSize: o.pageSize, kmsKeyName: o.gcsKmsKeyName });
      return {
        backend,
        url: `gs://${bucket}/${prefix}`,
        env,
        store,
        putForeign: async (key, data) => {
          const { Storage } = await import('@google-cloud/storage');
          await new Storage().bucket(bucket).file(`${prefix}/${key}`).save(data, { resumable: false });
        },
        tamper: async (key, change) => {
          const { Storage } = await import('@google-cloud/storage');
          const file = new Storage().bucket(bucket).file(`${prefix}/${key}`);
          const [content] = await file.download();
          const [meta] = await file.getMetadata();
          await file.save(change(content), { resumable: false, metadata: { metadata: meta.metadata } });
        },
        atRest: async (key) => {
          const { Storage } = await import('@google-cloud/storage');
          const [meta] = await new Storage().bucket(bucket).file(`${prefix}/${key}`).getMetadata();
          return meta.kmsKeyName;
        },
        cleanup: async () => undefined,
      };
    }
  }
}
