/**
 * Retries of transient store failures (5xx, throttling, resets, timeouts) with growing,
 * jittered waits, inside a time budget per operation so PostgreSQL always gets an answer in
 * bounded time. Permanent failures (403, missing bucket, bad credentials) are never retried.
 */
import pRetry from 'p-retry';
import { StoreError, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';

export interface RetryPolicy {
  /** Milliseconds after an operation's first attempt when no new attempt starts. */
  readonly budgetMs: number;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly onRetry?: (what: string, error: StoreError, attempt: number) => void;
}

export function retryPolicy(timeoutSeconds: number, onRetry?: RetryPolicy['onRetry']): RetryPolicy {
  return { budgetMs: timeoutSeconds * 1000, minDelayMs: 100, maxDelayMs: 5000, onRetry };
}

function isTransient(error: unknown): error is StoreError {
  return error instanceof StoreError && error.kind === 'transient';
}

/** Runs `fn`, repeating it after transient StoreErrors until the policy's budget is spent. */
export async function retryTransient<T>(policy: RetryPolicy, what: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  let attempts = 0;
  try {
    return await pRetry(
      () => {
        attempts++;
        return fn();
      },
      {
        retries: 10_000,
        factor: 2,
        minTimeout: policy.minDelayMs,
        maxTimeout: policy.maxDelayMs,
        randomize: true,
        maxRetryTime: policy.budgetMs,
        shouldRetry: ({ error }) => isTransient(error),
        onFailedAttempt: ({ error, attemptNumber }) => {
          if (isTransient(error)) policy.onRetry?.(what, error, attemptNumber);
        },
      },
    );
  } catch (err) {
    if (isTransient(err) && attempts > 1) {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      throw new StoreError('transient', `${what}: gave up after ${attempts} attempts in ${seconds} s; last error: ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}

/** The same store, with every call retried under `policy`. */
export function withRetries(store: Store, policy: RetryPolicy): Store {
  return {
    location: store.location,
    putIfAbsent: (key: string, request: PutRequest) => retryTransient(policy, `store ${key}`, () => store.putIfAbsent(key, request)),
    get: (key: string) => retryTransient(policy, `read ${key}`, () => store.get(key)),
    head: (key: string): Promise<ObjectInfo | undefined> => retryTransient(policy, `inspect ${key}`, () => store.head(key)),
    deleteMany: (keys: readonly string[]) => retryTransient(policy, `delete ${keys.length} objects`, () => store.deleteMany(keys)),
    checkBucket: () => retryTransient(policy, 'check the bucket', () => store.checkBucket()),
    list: (prefix: string, startAfter?: string) => listWithRetries(store, policy, prefix, startAfter),
    ...(store.leftovers && { leftovers: (prefix: string) => retryTransient(policy, `look for leftovers under ${prefix}`, () => store.leftovers!(prefix)) }),
  };
}

/** A listing that, after a transient failure, resumes after the last key it produced. */
async function* listWithRetries(store: Store, policy: RetryPolicy, prefix: string, startAfter?: string): AsyncIterable<ListedObject> {
  let after = startAfter;
  for (;;) {
    const page: ListedObject[] = [];
    const done = await retryTransient(policy, `list ${prefix}`, async () => {
      page.length = 0;
      // Pull a bounded batch per attempt so a failure repeats little work.
      for await (const entry of store.list(prefix, after)) {
        page.push(entry);
        if (page.length === 1000) return false;
      }
      return true;
    });
    for (const entry of page) {
      yield entry;
      after = entry.key;
    }
    if (done) return;
  }
}
