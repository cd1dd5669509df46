/**
 * Google Cloud Storage driver (JSON API through @google-cloud/storage).
 *
 * Create-if-absent is an upload with `ifGenerationMatch=0`; the MD5 sent in the object resource
 * makes the server refuse a body that arrived damaged. The SDK's own retries are off: retry.ts
 * owns retrying. The SDK takes no abort signal: an operation's deadline destroys its requests and
 * the bodies it hands out through deadline.ts. Credentials are Application Default Credentials; STORAGE_EMULATOR_HOST points
 * the SDK at a local server without credentials, as the SDK documents.
 *
 * With a Cloud KMS key (CMEK), every upload names it (the SDK sends `kmsKeyName` as a query
 * parameter) and the object resource the server answers with must name it too.
 */
import { Storage, type Bucket, type File, type FileMetadata } from '@google-cloud/storage';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SINGLE_REQUEST_LIMIT, bodyBuffer, bodyParts } from './body.js';
import { StoreError, bodySize, joinKey, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';
import { cleanUp } from './deadline.js';
import { untrustedCertificate } from './tls.js';

export interface GcsStoreOptions {
  readonly bucket: string;
  readonly prefix: string;
  /** A custom API endpoint (Private Service Connect and the like); credentials still apply. */
  readonly endpoint?: string;
  /** Objects per listing request (1000 unless a test wants to see pagination). */
  readonly pageSize?: number;
  /** A request with no answer for this long fails (default 30 s; never longer than the command's --timeout). */
  readonly idleTimeoutMs?: number;
  /** Cloud KMS key (projects/…/cryptoKeys/K) for every object written; absent = the bucket's default. */
  readonly kmsKeyName?: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

export class GcsStore implements Store {
  readonly location: string;
  private readonly bucket: Bucket;

  constructor(private readonly opts: GcsStoreOptions) {
    this.location = `gs://${opts.bucket}${opts.prefix ? `/${opts.prefix}` : ''}`;
    const storage = new Storage({
      ...(opts.endpoint ? { apiEndpoint: opts.endpoint, useAuthWithCustomEndpoint: true } : {}),
      retryOptions: { autoRetry: false, maxRetries: 0 },
      timeout: opts.idleTimeoutMs ?? REQUEST_TIMEOUT_MS,
    });
    this.bucket = storage.bucket(opts.bucket);
  }

  async checkBucket(): Promise<void> {
    // A one-object listing under our prefix needs only storage.objects.list, which the
    // namespace roles have; reading the bucket's metadata would need storage.buckets.get.
    try {
      await this.bucket.getFiles({ prefix: this.opts.prefix ? `${this.opts.prefix}/` : undefined, maxResults: 1, autoPaginate: false });
    } catch (err) {
      const mapped = this.mapError(err, `bucket ${this.opts.bucket}`);
      throw mapped.kind === 'not-found' ? new StoreError('no-bucket', `bucket "${this.opts.bucket}" does not exist`) : mapped;
    }
  }

  async putIfAbsent(key: string, request: PutRequest): Promise<'created' | 'exists'> {
    const file = this.bucket.file(this.fullKey(key), { kmsKeyName: this.opts.kmsKeyName });
    const options = {
      validation: false as const, // the server checks md5Hash itself, before the object exists
      preconditionOpts: { ifGenerationMatch: 0 },
      metadata: {
        contentType: 'application/octet-stream',
        md5Hash: request.md5.toString('base64'),
        metadata: { ...request.metadata },
      },
    };
    try {
      let stored: FileMetadata;
      if (bodySize(request.body) <= SINGLE_REQUEST_LIMIT) {
        await file.save(await bodyBuffer(request.body), { ...options, resumable: false });
        stored = file.metadata; // the object resource the upload was answered with
      } else {
        // A resumable upload streamed from the file: memory stays bounded whatever the size.
        await pipeline(Readable.from(bodyParts(request.body, 4 * 1024 * 1024)), file.createWriteStream({ ...options, resumable: true }));
        [stored] = await file.getMetadata();
        // Do not rely on the server having checked md5Hash at finalization: compare what it computed.
        if (stored.md5Hash !== request.md5.toString('base64')) {
          throw await takeBack(
            file,
            stored,
            `${key}: the server stored different bytes than were sent (MD5 ${stored.md5Hash} instead of ${request.md5.toString('base64')})`,
          );
        }
      }
      const problem = this.encryptionProblem(stored.kmsKeyName);
      if (problem) {
        throw await takeBack(
          file,
          stored,
          `${this.location}: ${key}: the server does not store it encrypted as asked (${problem}). Does the server support CMEK? (setting gcs-kms-key-name)`,
        );
      }
      return 'created';
    } catch (err) {
      if (statusOf(err) === 412) return 'exists';
      throw this.mapError(err, key);
    }
  }

  async get(key: string): Promise<{ info: ObjectInfo; body: Readable }> {
    const found = await this.describe(key);
    if (!found) throw new StoreError('not-found', `${this.location}: ${key}: no such object`);
    // Read exactly the generation whose metadata we hold, even if the name is rewritten meanwhile.
    const file = this.bucket.file(this.fullKey(key), { generation: found.generation });
    const download = file.createReadStream({ validation: false });
    // Hand on errors as StoreErrors, so the reader can tell a vanished object from a reset.
    const body = new PassThrough();
    download.on('error', (err) => body.destroy(this.mapError(err, key)));
    download.pipe(body);
    return { info: found.info, body };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    return (await this.describe(key))?.info;
  }

  private async describe(key: string): Promise<{ info: ObjectInfo; generation: number } | undefined> {
    try {
      const [meta] = await this.file(key).getMetadata();
      return {
        info: { key, size: Number(meta.size ?? 0), metadata: stringRecord(meta.metadata), notEncryptedAsAsked: this.encryptionProblem(meta.kmsKeyName) },
        generation: Number(meta.generation),
      };
    } catch (err) {
      const mapped = this.mapError(err, key);
      if (mapped.kind === 'not-found') return undefined;
      throw mapped;
    }
  }

  async *list(prefix: string, startAfter?: string): AsyncIterable<ListedObject> {
    let pageToken: string | undefined;
    do {
      let files: File[];
      let next: { pageToken?: string } | null | undefined;
      try {
        [files, next] = (await this.bucket.getFiles({
          prefix: this.fullKey(prefix),
          // startOffset is inclusive; the key itself is skipped below.
          startOffset: startAfter === undefined ? undefined : this.fullKey(startAfter),
          autoPaginate: false,
          maxResults: this.opts.pageSize ?? 1000,
          pageToken,
        })) as unknown as [File[], { pageToken?: string } | null];
      } catch (err) {
        throw this.mapError(err, prefix);
      }
      for (const f of files) {
        const key = this.relativeKey(f.name);
        if (startAfter !== undefined && key <= startAfter) continue;
        const written = f.metadata.timeCreated ?? f.metadata.updated;
        yield { key, size: Number(f.metadata.size ?? 0), lastModified: written ? new Date(written) : undefined };
      }
      pageToken = next?.pageToken;
    } while (pageToken);
  }

  async listPrefixes(prefix: string): Promise<readonly string[]> {
    const out: string[] = [];
    let pageToken: string | undefined;
    do {
      let next: { pageToken?: string } | null | undefined;
      let response: { prefixes?: string[] } | undefined;
      try {
        [, next, response] = (await this.bucket.getFiles({
          prefix: this.fullKey(prefix),
          delimiter: '/',
          autoPaginate: false,
          maxResults: this.opts.pageSize ?? 1000,
          pageToken,
        })) as unknown as [File[], { pageToken?: string } | null, { prefixes?: string[] }];
      } catch (err) {
        throw this.mapError(err, prefix);
      }
      for (const p of response?.prefixes ?? []) out.push(this.relativeKey(p));
      pageToken = next?.pageToken;
    } while (pageToken);
    return out;
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const queue = [...keys];
    const worker = async () => {
      for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
        try {
          await this.file(key).delete({ ignoreNotFound: true });
        } catch (err) {
          throw this.mapError(err, key);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, queue.length) }, worker));
  }

  /**
   * Why the key an object resource names is not the one asked for, or undefined if it is (or none
   * was asked). Google names the key version that encrypted the object: K/cryptoKeyVersions/N.
   */
  private encryptionProblem(reported: string | undefined): string | undefined {
    const asked = this.opts.kmsKeyName;
    if (asked === undefined || reported === asked || reported?.startsWith(`${asked}/cryptoKeyVersions/`)) return undefined;
    return `Cloud KMS key ${asked} was asked for, the server reports ${reported ?? 'none'}`;
  }

  private file(key: string): File {
    return this.bucket.file(this.fullKey(key));
  }

  private fullKey(key: string): string {
    return joinKey(this.opts.prefix, key);
  }

  private relativeKey(full: string): string {
    return this.opts.prefix === '' ? full : full.slice(this.opts.prefix.length + 1);
  }

  mapError(err: unknown, what: string): StoreError {
    if (err instanceof StoreError) return err;
    const status = statusOf(err);
    // No answer from a server may be credentials that never loaded: then the SDK's message can
    // quote the key file (a JSON parser's snippet), and retrying cannot help.
    const credentials = status === undefined && this.usesCredentials() ? credentialsFileProblem() : undefined;
    if (credentials) return new StoreError('denied', `${this.location}: ${what}: cannot use the Google credentials: ${credentials}`);
    const message = googleMessage(err);
    const detail = `${this.location}: ${what}: ${status ? `HTTP ${status}: ` : ''}${message}${this.kmsHint(message)}`;
    const tls = untrustedCertificate(err);
    if (tls) return new StoreError('permanent', `${this.location}: ${tls}`, { cause: err });
    if (status === 404) {
      if (/bucket does not exist/i.test(message)) return new StoreError('no-bucket', `bucket "${this.opts.bucket}" does not exist`, { cause: err });
      return new StoreError('not-found', detail, { cause: err });
    }
    if (status === 401 || status === 403 || /default credentials|could not load the default|invalid_grant|unauthorized/i.test(message)) {
      return new StoreError('denied', detail, { cause: err });
    }
    if (status === undefined || status === 408 || status === 429 || status >= 500) {
      return new StoreError('transient', detail, { cause: err });
    }
    return new StoreError('permanent', detail, { cause: err });
  }

  /** Whether the SDK authenticates at all (it does not for STORAGE_EMULATOR_HOST without an endpoint). */
  private usesCredentials(): boolean {
    return this.opts.endpoint !== undefined || !process.env['STORAGE_EMULATOR_HOST'];
  }

  /** Google's refusal of a key names no setting: say which key, and who must be allowed to use it. */
  private kmsHint(message: string): string {
    if (!/\bkms\b/i.test(message)) return '';
    const asked = this.opts.kmsKeyName;
    return ` (${asked ? `gcs-kms-key-name ${asked}: ` : ''}the bucket project's Cloud Storage service agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on the key, and the key must be in the bucket's location)`;
  }
}

/**
 * The object just created is not what was asked for: take back this generation (no other writer's)
 * and fail. A writer without delete permission leaves it; the error says so.
 */
async function takeBack(file: File, stored: FileMetadata, problem: string): Promise<StoreError> {
  const removal = await cleanUp(`remove ${file.name}`, () => file.delete({ ifGenerationMatch: stored.generation })).then(
    () => 'it was removed',
    (err: unknown) => `removing it failed (${(err as Error).message}): delete it by hand`,
  );
  return new StoreError('permanent', `${problem}; ${removal}`);
}

/** The HTTP status: an ApiError carries it in `code`; a GaxiosError (a resumable upload's start) in `status`. */
function statusOf(err: unknown): number | undefined {
  const { code, status } = err as { code?: unknown; status?: unknown };
  return typeof code === 'number' ? code : typeof status === 'number' ? status : undefined;
}

/** Google's own message where the error carries it (a GaxiosError's says only "Request failed with status code N"). */
function googleMessage(err: unknown): string {
  const answered = (err as { response?: { data?: { error?: { message?: unknown } } } }).response?.data?.error?.message;
  return typeof answered === 'string' ? answered : ((err as Error).message ?? String(err));
}

function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) out[k] = String(v);
  }
  return out;
}

/**
 * What makes the Application Default Credentials file unusable, if one is named (or gcloud's is
 * there): which variable or file to fix, and never a byte of its content (it holds a private key).
 */
function credentialsFileProblem(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const named = env['GOOGLE_APPLICATION_CREDENTIALS'];
  const file = named || path.join(env['CLOUDSDK_CONFIG'] || path.join(homedir(), '.config', 'gcloud'), 'application_default_credentials.json');
  const where = named ? `GOOGLE_APPLICATION_CREDENTIALS (${file})` : `gcloud's credentials file ${file}`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    if (!named && code === 'ENOENT') return undefined; // none: the SDK looks elsewhere (metadata server)
    return `${where} cannot be read (${code})`;
  }
  const fix = 'replace it with the key file Google issued, or point the variable at the right file';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return `${where} is not JSON: ${fix}`; // the parser's own message quotes the file
  }
  if (typeof json !== 'object' || json === null) return `${where} is not a JSON object: ${fix}`;
  const c = json as Record<string, unknown>;
  const missing = (fields: string[]) => fields.filter((f) => typeof c[f] !== 'string' || c[f] === '');
  if (c['type'] === 'service_account') {
    const absent = missing(['client_email', 'private_key']);
    if (absent.length > 0) return `${where}: a service account key without ${absent.join(' and ')}: ${fix}`;
    try {
      createPrivateKey(c['private_key'] as string);
    } catch {
      return `${where}: its private_key is not a valid PEM private key (damaged or cut short?): ${fix}`;
    }
  } else if (c['type'] === 'authorized_user') {
    const absent = missing(['client_id', 'client_secret', 'refresh_token']);
    if (absent.length > 0) return `${where}: user credentials without ${absent.join(', ')}: run gcloud auth application-default login again`;
  } else if (typeof c['type'] !== 'string') {
    return `${where} has no "type": ${fix}`;
  }
  return undefined;
}
