/**
 * The one interface commands use to reach a repository. Drivers only move bytes: they know
 * nothing of WAL, and the commands know nothing of any SDK.
 *
 * Keys are relative to the repository root (the `prefix` of `s3://bucket/prefix`), use `/` as
 * separator and are produced only by archive/repo/layout.ts.
 */
import type { Readable } from 'node:stream';
import { StoreError } from '../errors.js';

/** Custom metadata kept with an object. Keys are lower-case ASCII; values short ASCII strings. */
export type ObjectMetadata = Readonly<Record<string, string>>;

export interface ObjectInfo {
  readonly key: string;
  /** Stored size in bytes (after compression). */
  readonly size: number;
  readonly metadata: ObjectMetadata;
  /**
   * Why the object is not encrypted at rest the way this store is told to write objects (S3 SSE,
   * GCS CMEK), e.g. it was stored before the setting; undefined when it is, or nothing is asked.
   */
  readonly notEncryptedAsAsked?: string;
}

export interface ListedObject {
  readonly key: string;
  readonly size: number;
  /** When the object was written, where the store says (status and verify show ages). */
  readonly lastModified?: Date;
}

/** Bytes to store: in memory, or a file of known size (large objects are never held whole in memory). */
export type Body = Buffer | FileBody;

export interface FileBody {
  readonly path: string;
  readonly size: number;
}

export function bodySize(body: Body): number {
  return Buffer.isBuffer(body) ? body.length : body.size;
}

export interface PutRequest {
  readonly body: Body;
  /** MD5 of `body`, so the store can verify what it received (Content-MD5, md5Hash). */
  readonly md5: Buffer;
  readonly metadata: ObjectMetadata;
}

export interface Store {
  /** Where this store points, without secrets, for log lines. */
  readonly location: string;
  /**
   * Creates the object only if no object has this key. 'exists' means something is there
   * already: the caller compares; drivers never overwrite.
   */
  putIfAbsent(key: string, request: PutRequest): Promise<'created' | 'exists'>;
  /** Opens an object for reading; throws StoreError 'not-found' if absent. */
  get(key: string): Promise<{ info: ObjectInfo; body: Readable }>;
  /** The object's size and metadata, or undefined if absent. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Objects whose key starts with `prefix`, in key order, strictly after `startAfter` if given. */
  list(prefix: string, startAfter?: string): AsyncIterable<ListedObject>;
  /**
   * The "directories" right under `prefix` ('' or a key prefix ending in '/'): each distinct
   * `prefix + name + '/'` that some key starts with, in key order (S3's and GCS's delimited
   * listing). `walbridge status --all` lists the namespaces of a repository with it.
   */
  listPrefixes(prefix: string): Promise<readonly string[]>;
  /** Deletes these keys; absent keys are not an error. */
  deleteMany(keys: readonly string[]): Promise<void>;
  /** Confirms the bucket (or directory) exists and is reachable; throws StoreError otherwise. */
  checkBucket(): Promise<void>;
  /**
   * What unfinished writes under `prefix` (a top-level directory, `ns/`) left behind, for
   * `walbridge verify`; only stores that keep such things where a listing does not show them
   * (file://: temp files of killed writers) have it.
   */
  leftovers?(prefix: string): Promise<readonly Leftover[]>;
}

/** A temp file of a write that has not finished: in progress, or its writer died. */
export interface Leftover {
  readonly path: string;
  /** The key it was to become, the host and pid of its writer, where its name tells. */
  readonly key: string | undefined;
  readonly host: string | undefined;
  readonly pid: number | undefined;
  readonly modified: Date;
  readonly size: number;
  /** Whether the writer still runs; undefined where that cannot be known (another host). */
  readonly writerAlive: boolean | undefined;
}

// Failures of a store are one of the error kinds every command maps to an exit status (errors.ts).
export { StoreError, type StoreErrorKind } from '../errors.js';

/** Opens an object for reading, or undefined if it is absent (other failures throw). */
export async function getIfPresent(store: Store, key: string): Promise<Awaited<ReturnType<Store['get']>> | undefined> {
  try {
    return await store.get(key);
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'not-found') return undefined;
    throw err;
  }
}

/** The full key of `key` under a repository prefix (which has no leading or trailing slash). */
export function joinKey(root: string, key: string): string {
  return root === '' ? key : `${root}/${key}`;
}
