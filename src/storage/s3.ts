/**
 * S3 driver (AWS and S3-compatible servers such as Ceph radosgw and MinIO).
 *
 * Create-if-absent is a PutObject with `If-None-Match: *`; Content-MD5 makes the server reject
 * a body that arrived damaged. The SDK's own retries are off: retry.ts owns retrying, so one
 * deadline bounds each operation, and every request gets that deadline's abort signal.
 * Credentials come from the SDK's default chain only.
 *
 * Server-side encryption (SSE-S3, SSE-KMS) is asked for on every write and confirmed from the
 * answer: some S3-compatible servers take the headers and store the object unencrypted (RGW 16
 * does with AES256). ETags are never compared with MD5s: an SSE-KMS object's ETag is not one.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { SINGLE_REQUEST_LIMIT, bodyBuffer, bodyParts } from './body.js';
import { cleanUp, liveDeadline } from './deadline.js';
import { untrustedCertificate } from './tls.js';
import { StoreError, bodySize, joinKey, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';

export interface S3StoreOptions {
  readonly bucket: string;
  readonly prefix: string;
  readonly region?: string;
  readonly endpoint?: string;
  readonly pathStyle: boolean;
  readonly checksum: 'when-required' | 'when-supported';
  /** Keys per listing request (S3's maximum, 1000, unless a test wants to see pagination). */
  readonly pageSize?: number;
  /** A request with no traffic for this long fails (default 30 s; never longer than the command's --timeout). */
  readonly idleTimeoutMs?: number;
  /** Server-side encryption for every object written; absent = the bucket's default. */
  readonly serverSideEncryption?: S3ServerSideEncryption;
}

export interface S3ServerSideEncryption {
  readonly algorithm: 'AES256' | 'aws:kms';
  /** SSE-KMS only; absent = the bucket's default key, else AWS's aws/s3 key. */
  readonly kmsKeyId?: string;
}

/** What S3 answers about an object's encryption (PutObject, CreateMultipartUpload, HeadObject, GetObject). */
interface ReportedEncryption {
  readonly ServerSideEncryption?: string;
  readonly SSEKMSKeyId?: string;
}

/** Socket timeouts per attempt: a black-holed connection must fail, not hang the archiver. */
const CONNECT_TIMEOUT_MS = 5_000;
const IDLE_TIMEOUT_MS = 30_000;
/**
 * Multipart pieces, S3's smallest but the last: two in flight and the next being read hold
 * 15 MiB of an upload's body (8 MiB parts: the background pusher peaked at 134 instead of
 * 118 MiB pushing 1 GiB segments). Up to 48 GiB in 10,000 parts.
 */
export const PART_BYTES = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;

function md5Base64(data: Buffer): string {
  return createHash('md5').update(data).digest('base64');
}

export class S3Store implements Store {
  readonly location: string;
  private readonly client: S3Client;

  constructor(private readonly opts: S3StoreOptions) {
    this.location = `s3://${opts.bucket}${opts.prefix ? `/${opts.prefix}` : ''}`;
    const mode = opts.checksum === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
    // The SDK's multi-line Node-version notice would land in PostgreSQL's log once per WAL file.
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
    this.client = new S3Client({
      region: opts.region ?? defaultRegion(),
      endpoint: opts.endpoint,
      forcePathStyle: opts.pathStyle,
      maxAttempts: 1,
      requestChecksumCalculation: mode,
      responseChecksumValidation: mode,
      requestHandler: {
        connectionTimeout: Math.min(CONNECT_TIMEOUT_MS, opts.idleTimeoutMs ?? Infinity),
        requestTimeout: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
        // Without it, the SDK only logs a warning and keeps waiting: a black hole hung the archiver.
        throwOnRequestTimeout: true,
      },
      // The SDK's own chain, but reading the shared credentials and config files anew for each
      // store: it caches them per process otherwise, and a waiting restore_command that holds on
      // refused credentials opens a store at every try, so that a mended file is what it uses.
      credentialDefaultProvider: (input: object) => defaultProvider({ ...input, ignoreCache: true }),
    });
  }

  async checkBucket(): Promise<void> {
    // A one-key listing under our prefix needs only the list permission a role has anyway
    // (HeadBucket would need more), and a missing bucket answers NoSuchBucket.
    try {
      await this.client.send(
        new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: this.opts.prefix ? `${this.opts.prefix}/` : undefined, MaxKeys: 1 }),
        this.abortable(),
      );
    } catch (err) {
      const mapped = this.mapError(err, `bucket ${this.opts.bucket}`);
      throw mapped.kind === 'not-found' ? new StoreError('no-bucket', `bucket "${this.opts.bucket}" does not exist`) : mapped;
    }
  }

  async putIfAbsent(key: string, request: PutRequest): Promise<'created' | 'exists'> {
    try {
      if (bodySize(request.body) > SINGLE_REQUEST_LIMIT) return await this.putInParts(key, request);
      const body = await bodyBuffer(request.body);
      const out = await this.client.send(
        new PutObjectCommand({
          Bucket: this.opts.bucket,
          Key: this.fullKey(key),
          Body: body,
          ContentLength: body.length,
          ContentMD5: request.md5.toString('base64'),
          ContentType: 'application/octet-stream',
          IfNoneMatch: '*',
          Metadata: { ...request.metadata },
          ...this.encryptionHeaders(),
        }),
        this.abortable(),
      );
      const problem = this.encryptionProblem(out);
      if (problem) throw await this.takeBackUnencrypted(key, problem);
      return 'created';
    } catch (err) {
      if (httpStatus(err) === 412) return 'exists';
      throw this.mapError(err, key);
    }
  }

  private encryptionHeaders(): { ServerSideEncryption?: 'AES256' | 'aws:kms'; SSEKMSKeyId?: string } {
    const asked = this.opts.serverSideEncryption;
    return asked ? { ServerSideEncryption: asked.algorithm, SSEKMSKeyId: asked.kmsKeyId } : {};
  }

  /** Why what the server reports is not the encryption asked for, or undefined if it is (or none was asked). */
  private encryptionProblem(reported: ReportedEncryption): string | undefined {
    const asked = this.opts.serverSideEncryption;
    if (!asked) return undefined;
    if (reported.ServerSideEncryption !== asked.algorithm) {
      return `${asked.algorithm} was asked for, the server reports ${reported.ServerSideEncryption ?? 'no server-side encryption'}`;
    }
    if (asked.kmsKeyId !== undefined && !sameKmsKey(asked.kmsKeyId, reported.SSEKMSKeyId)) {
      return `KMS key ${asked.kmsKeyId} was asked for, the server reports ${reported.SSEKMSKeyId ?? 'none'}`;
    }
    return undefined;
  }

  /**
   * The object we just created (If-None-Match: it is ours) is not encrypted as asked: remove it,
   * so no unencrypted copy stays behind, and fail. A primary allowed no deletes leaves it; the next
   * push then finds it and refuses it as a duplicate that is not encrypted as asked.
   */
  private async takeBackUnencrypted(key: string, problem: string): Promise<StoreError> {
    const removal = await cleanUp(`remove ${key}`, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: this.fullKey(key) }), this.abortable()),
    ).then(
      () => 'it was removed',
      (err: unknown) => `removing it failed (${(err as Error).name}): delete it by hand`,
    );
    return this.notEncrypted(key, problem, removal);
  }

  private notEncrypted(key: string, problem: string, outcome: string): StoreError {
    return new StoreError(
      'permanent',
      `${this.location}: ${key}: the server does not store it encrypted as asked (${problem}); ${outcome}. Does the server support this encryption? (settings s3-sse, s3-sse-kms-key-id)`,
    );
  }

  /**
   * A multipart upload for a large body: each part carries its own Content-MD5, at most
   * PARTS_IN_FLIGHT parts are in memory, and completion is conditional (If-None-Match: *).
   * A failed upload is aborted so no parts linger (the lifecycle rule catches what an abort misses).
   */
  private async putInParts(key: string, request: PutRequest): Promise<'created' | 'exists'> {
    const Bucket = this.opts.bucket;
    const Key = this.fullKey(key);
    const created = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket,
        Key,
        ContentType: 'application/octet-stream',
        Metadata: { ...request.metadata },
        ...this.encryptionHeaders(),
      }),
      this.abortable(),
    );
    const { UploadId } = created;
    try {
      // The upload's encryption is fixed here, before any part is sent (RGW 16 reports it only here, not on completion).
      const problem = this.encryptionProblem(created);
      if (problem) throw this.notEncrypted(key, problem, 'nothing was stored');
      const parts: { PartNumber: number; ETag: string }[] = [];
      const inFlight = new Set<Promise<void>>();
      const whole = createHash('md5');
      let failure: unknown;
      let PartNumber = 0;
      for await (const part of bodyParts(request.body, PART_BYTES)) {
        if (failure) break;
        whole.update(part);
        const number = ++PartNumber;
        const upload = this.client
          .send(
            new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: number, Body: part, ContentLength: part.length, ContentMD5: md5Base64(part) }),
            this.abortable(),
          )
          .then(
            (out) => void parts.push({ PartNumber: number, ETag: out.ETag! }),
            (err: unknown) => void (failure ??= err), // kept: a lost part must never go unnoticed
          );
        const tracked = upload.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
        if (inFlight.size >= PARTS_IN_FLIGHT) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      if (failure) throw failure;
      // Every part stored, and together they are the body the caller hashed (the body may be
      // re-read from a file): only then may the object come into existence.
      if (parts.length !== PartNumber) throw new StoreError('permanent', `${key}: ${PartNumber - parts.length} of ${PartNumber} parts were not stored`);
      if (!whole.digest().equals(request.md5)) throw new StoreError('permanent', `${key}: the body changed while it was being uploaded (MD5 mismatch)`);
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, IfNoneMatch: '*', MultipartUpload: { Parts: parts } }),
        this.abortable(),
      );
      return 'created';
    } catch (err) {
      await cleanUp(`abort the upload of ${key}`, () => this.client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }), this.abortable())).catch(
        () => undefined,
      );
      throw err;
    }
  }

  async get(key: string): Promise<{ info: ObjectInfo; body: Readable }> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.fullKey(key) }), this.abortable());
      return { info: this.objectInfo(key, out), body: out.Body as Readable };
    } catch (err) {
      throw this.mapError(err, key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.fullKey(key) }), this.abortable());
      return this.objectInfo(key, out);
    } catch (err) {
      const mapped = this.mapError(err, key);
      if (mapped.kind === 'not-found') return undefined;
      throw mapped;
    }
  }

  async *list(prefix: string, startAfter?: string): AsyncIterable<ListedObject> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.opts.bucket,
            Prefix: this.fullKey(prefix),
            StartAfter: startAfter === undefined || token ? undefined : this.fullKey(startAfter),
            ContinuationToken: token,
            MaxKeys: this.opts.pageSize ?? 1000,
          }),
          this.abortable(),
        );
      } catch (err) {
        throw this.mapError(err, prefix);
      }
      for (const item of out.Contents ?? []) {
        if (item.Key) yield { key: this.relativeKey(item.Key), size: item.Size ?? 0, lastModified: item.LastModified };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async listPrefixes(prefix: string): Promise<readonly string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.opts.bucket,
            Prefix: this.fullKey(prefix),
            Delimiter: '/',
            ContinuationToken: token,
            MaxKeys: this.opts.pageSize ?? 1000,
          }),
          this.abortable(),
        );
      } catch (err) {
        throw this.mapError(err, prefix);
      }
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) out.push(this.relativeKey(p.Prefix));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      let out;
      try {
        out = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.opts.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.fullKey(k) })), Quiet: true },
          }),
          this.abortable(),
        );
      } catch (err) {
        throw this.mapError(err, `${batch.length} objects`);
      }
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        const first = failed[0]!;
        const kind = first.Code === 'AccessDenied' ? 'denied' : first.Code === 'InternalError' || first.Code === 'SlowDown' ? 'transient' : 'permanent';
        throw new StoreError(kind, `delete of ${failed.length} objects failed, first ${first.Key}: ${first.Code} ${first.Message ?? ''}`);
      }
    }
  }

  private objectInfo(key: string, out: ReportedEncryption & { ContentLength?: number; Metadata?: Record<string, string> }): ObjectInfo {
    return { key, size: out.ContentLength ?? 0, metadata: out.Metadata ?? {}, notEncryptedAsAsked: this.encryptionProblem(out) };
  }

  /** The operation's deadline aborts the request (deadline.ts), even while its body is still moving. */
  private abortable(): { abortSignal?: AbortSignal } {
    const deadline = liveDeadline();
    return deadline ? { abortSignal: deadline.signal } : {};
  }

  private fullKey(key: string): string {
    return joinKey(this.opts.prefix, key);
  }

  private relativeKey(full: string): string {
    return this.opts.prefix === '' ? full : full.slice(this.opts.prefix.length + 1);
  }

  private mapError(err: unknown, what: string): StoreError {
    if (err instanceof StoreError) return err; // already ours (a multipart check): keep its kind
    const e = err as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
    const status = httpStatus(err);
    const name = e.name ?? 'Error';
    const detail =
      `${this.location}: ${what}: ${name}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? ''}`.trim() + this.kmsHint(`${name} ${e.message ?? ''}`);
    const tls = untrustedCertificate(err);
    if (tls) return new StoreError('permanent', `${this.location}: ${tls}`, { cause: err });
    if (name === 'NoSuchBucket') return new StoreError('no-bucket', `bucket "${this.opts.bucket}" does not exist`, { cause: err });
    if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new StoreError('not-found', detail, { cause: err });
    if (name === 'CredentialsProviderError') {
      // The SDK's message names no file; ours names where it looked, never what a file holds.
      return new StoreError('denied', `${this.location}: ${what}: no usable AWS credentials: ${credentialSources()}`, { cause: err });
    }
    if (status === 401 || status === 403 || DENIED.has(name)) {
      return new StoreError('denied', detail, { cause: err });
    }
    if (status === 301 || name === 'PermanentRedirect' || name === 'AuthorizationHeaderMalformed') {
      return new StoreError('permanent', `${detail} (is the bucket in another region? set AWS_REGION or --s3-region)`, { cause: err });
    }
    if (/Region is missing/i.test(e.message ?? '')) {
      const profile = process.env['AWS_PROFILE'] || 'default';
      return new StoreError(
        'permanent',
        `no AWS region configured: set AWS_REGION or --s3-region (or region in profile "${profile}" of ${awsFile('AWS_CONFIG_FILE', 'config')})`,
        { cause: err },
      );
    }
    if (status === undefined || status === 408 || status === 409 || status === 429 || status >= 500 || TRANSIENT.has(name)) {
      return new StoreError('transient', detail, { cause: err });
    }
    return new StoreError('permanent', detail, { cause: err });
  }

  /**
   * A KMS key refused looks like any access or argument error (RGW 16 even says InvalidAccessKeyId):
   * say which key and what it needs. Its kind stays what the server's status says.
   */
  private kmsHint(answer: string): string {
    if (!/\bkms\b/i.test(answer)) return '';
    const asked = this.opts.serverSideEncryption?.kmsKeyId;
    const which = asked ? `the KMS key ${asked} was refused: check s3-sse-kms-key-id` : 'a KMS problem: set s3-sse-kms-key-id if the server needs a key id';
    return ` (${which}, and that these credentials may use the key: kms:GenerateDataKey to write, kms:Decrypt to read)`;
  }
}

const DENIED = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'Forbidden']);
const TRANSIENT = new Set(['SlowDown', 'RequestTimeout', 'InternalError', 'ServiceUnavailable', 'TimeoutError', 'RequestTimeTooSkewed']);

/**
 * AWS reports a key's ARN whichever form was asked for (id, ARN, alias); an alias cannot be
 * resolved without KMS's API, so any key is taken for it. RGW and others echo what was asked.
 */
function sameKmsKey(asked: string, reported: string | undefined): boolean {
  if (reported === undefined) return false;
  return reported === asked || reported.endsWith(`:key/${asked}`) || /^alias\/|:alias\//.test(asked);
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/**
 * AWS_REGION, else the AWS profile's region (the SDK reads ~/.aws/config itself), else
 * us-east-1, which S3-compatible servers accept.
 */
function defaultRegion(): string | undefined {
  const fromEnv = process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'];
  if (fromEnv) return fromEnv;
  const configFile = process.env['AWS_CONFIG_FILE'] ?? path.join(homedir(), '.aws', 'config');
  return existsSync(configFile) ? undefined : 'us-east-1';
}

/** A file of the AWS SDK's: the variable that names it and its path, or its default path. */
function awsFile(variable: 'AWS_SHARED_CREDENTIALS_FILE' | 'AWS_CONFIG_FILE', name: string): string {
  const named = process.env[variable];
  return named ? `${variable} (${named})` : path.join(homedir(), '.aws', name);
}

/** Where the SDK's default chain looked, so the message says what to fix (a file's content is never quoted). */
function credentialSources(): string {
  const profile = process.env['AWS_PROFILE'] || 'default';
  return (
    `none in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, in profile "${profile}" of ${awsFile('AWS_SHARED_CREDENTIALS_FILE', 'credentials')} ` +
    `or ${awsFile('AWS_CONFIG_FILE', 'config')} (a malformed file counts as none), nor from web identity or an instance role: fix the one meant to be used`
  );
}
