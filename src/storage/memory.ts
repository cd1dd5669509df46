/**
 * memory://bucket/prefix: buckets in this process's memory, for tests of the archive logic
 * without a server. It passes the same contract suite as the other drivers (test/contract/).
 * It is not in the registry a command sees (a repository that vanishes with the process would
 * lose WAL): tests register it (registry.ts registerDriver).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { formatBucketLocation, parseBucketLocation, type Driver } from './driver.js';
import { StoreError, joinKey, type ListedObject, type ObjectInfo, type ObjectMetadata, type PutRequest, type Store } from './store.js';

interface StoredObject {
  readonly data: Buffer;
  readonly metadata: ObjectMetadata;
  readonly lastModified: Date;
}

/**
 * What a test may make an operation on a bucket do instead, as a failing server would: throw
 * this error, or wait first. Also sees every operation (for counting requests).
 */
export type MemoryFault = (operation: 'put' | 'get' | 'head' | 'list' | 'delete' | 'check', key: string) => StoreError | Promise<void> | undefined;

interface Bucket {
  readonly objects: Map<string, StoredObject>;
  fault?: MemoryFault | undefined;
}

/** The buckets of this process, by name. */
const BUCKETS = new Map<string, Bucket>();

export function createMemoryBucket(name: string): void {
  if (!BUCKETS.has(name)) BUCKETS.set(name, { objects: new Map() });
}

/** Every store on bucket `name` (opened before or after) meets `fault`; undefined heals it. */
export function setMemoryFault(name: string, fault: MemoryFault | undefined): void {
  const bucket = BUCKETS.get(name);
  if (bucket) bucket.fault = fault;
}

export function removeMemoryBucket(name: string): void {
  BUCKETS.delete(name);
}

export interface MemoryStoreOptions {
  readonly bucket: string;
  readonly prefix: string;
  readonly pageSize?: number | undefined;
}

export class MemoryStore implements Store {
  readonly location: string;

  constructor(private readonly opts: MemoryStoreOptions) {
    this.location = formatBucketLocation({ scheme: 'memory', bucket: opts.bucket, prefix: opts.prefix });
  }

  private async objects(operation: Parameters<MemoryFault>[0], key: string): Promise<Map<string, StoredObject>> {
    const bucket = BUCKETS.get(this.opts.bucket);
    const fault = bucket?.fault?.(operation, key);
    if (fault instanceof StoreError) throw fault;
    await fault;
    if (!bucket) throw new StoreError('no-bucket', `bucket ${this.opts.bucket} does not exist (memory)`);
    return bucket.objects;
  }

  private full(key: string): string {
    return joinKey(this.opts.prefix, key);
  }

  async putIfAbsent(key: string, request: PutRequest): Promise<'created' | 'exists'> {
    const objects = await this.objects('put', key);
    const data = Buffer.isBuffer(request.body) ? Buffer.from(request.body) : await readFile(request.body.path);
    if (!createHash('md5').update(data).digest().equals(request.md5))
      throw new StoreError('permanent', `${this.location}/${key}: the body does not match its Content-MD5`);
    if (objects.has(this.full(key))) return 'exists';
    objects.set(this.full(key), { data, metadata: { ...request.metadata }, lastModified: new Date() });
    return 'created';
  }

  async get(key: string): Promise<{ info: ObjectInfo; body: Readable }> {
    const object = (await this.objects('get', key)).get(this.full(key));
    if (!object) throw new StoreError('not-found', `${this.location}/${key} does not exist`);
    return { info: { key, size: object.data.length, metadata: object.metadata }, body: Readable.from([object.data]) };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const object = (await this.objects('head', key)).get(this.full(key));
    return object && { key, size: object.data.length, metadata: object.metadata };
  }

  async *list(prefix: string, startAfter?: string): AsyncIterable<ListedObject> {
    const root = this.opts.prefix === '' ? '' : `${this.opts.prefix}/`;
    const objects = await this.objects('list', prefix);
    // Pages, as a server gives them: objects stored meanwhile may or may not be seen.
    let after = startAfter;
    for (;;) {
      const page = [...objects.keys()]
        .filter((full) => full.startsWith(root + prefix) && (after === undefined || full.slice(root.length) > after))
        .sort()
        .slice(0, this.opts.pageSize ?? 1000);
      for (const full of page) yield { key: full.slice(root.length), size: objects.get(full)?.data.length ?? 0, lastModified: objects.get(full)?.lastModified };
      if (page.length < (this.opts.pageSize ?? 1000)) return;
      after = page[page.length - 1]!.slice(root.length);
    }
  }

  async listPrefixes(prefix: string): Promise<readonly string[]> {
    const found = new Set<string>();
    for await (const { key } of this.list(prefix)) {
      const slash = key.indexOf('/', prefix.length);
      if (slash >= 0) found.add(key.slice(0, slash + 1));
    }
    return [...found].sort();
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const key of keys) (await this.objects('delete', key)).delete(this.full(key));
  }

  async checkBucket(): Promise<void> {
    await this.objects('check', '');
  }
}

export const memoryDriver: Driver<Record<string, never>> = {
  scheme: 'memory',
  urlForm: 'memory://bucket/prefix',
  parseLocation: parseBucketLocation,
  formatLocation: formatBucketLocation,
  settings: [],
  options: () => ({}),
  environment: /^$/,
  endpoint: () => undefined,
  open: async (location) => new MemoryStore({ bucket: location['bucket']!, prefix: location['prefix']! }),
};
