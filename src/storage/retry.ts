/**
 * Retries of transient store failures (5xx, throttling, resets, timeouts) with growing,
 * jittered waits, within one deadline per operation (deadline.ts) so PostgreSQL always gets an
 * answer in bounded time. Permanent failures (403, missing bucket, bad credentials) are never
 * retried.
 *
 * An operation is bounded end to end: retries nested inside it (a download retried whole around
 * a get the store wrapper retries too) share its deadline instead of starting their own clock, and
 * an attempt still running when the deadline passes is aborted, not waited for.
 */
import { DeadlineExpired, bindToDeadline, liveDeadline, withinDeadline, type Deadline } from './deadline.js';

// The time bound's one home for the code above storage: operations, retries, and work outside them.
export { outsideDeadline } from './deadline.js';

/**
 * For work that waits its turn before running: a check, bound to the running operation's
 * deadline now, that gives the error to stop with once that deadline has passed (its caller
 * has been answered already).
 */
export function deadlineCheck(): () => DeadlineExpired | undefined {
  const deadline = liveDeadline();
  return () => (deadline?.passed ? deadline.expired() : undefined);
}
import { StoreError, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';

export interface RetryPolicy {
  /** Milliseconds an operation may take from its start, every attempt and wait included (--timeout). */
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

/**
 * Runs `fn` as one operation under `policy` (or as part of the operation it is called in): the
 * store calls it makes share one deadline, and fail with a transient StoreError naming `what`
 * once it passes.
 */
export function withinTimeout<T>(policy: RetryPolicy, what: string, fn: () => Promise<T>): Promise<T> {
  return withinDeadline(policy.budgetMs, what, () => fn());
}

/** Runs `fn`, repeating it after transient StoreErrors until the operation's deadline. */
export function retryTransient<T>(policy: RetryPolicy, what: string, fn: () => Promise<T>): Promise<T> {
  return withinDeadline(policy.budgetMs, what, (deadline) => attempts(deadline, policy, what, fn));
}

async function attempts<T>(deadline: Deadline, policy: RetryPolicy, what: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await deadline.race(fn);
    } catch (err) {
      if (err instanceof DeadlineExpired || !isTransient(err)) throw err;
      deadline.lastError = err;
      if (deadline.passed) throw deadline.expired();
      policy.onRetry?.(what, err, attempt);
      await deadline.sleep(backoff(policy, attempt));
    }
  }
}

/** p-retry's schedule: doubling from minDelayMs up to maxDelayMs, times a random factor in [1, 2). */
function backoff(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.maxDelayMs, Math.round((Math.random() + 1) * policy.minDelayMs * 2 ** (attempt - 1)));
}

/** The same store, with every call retried under `policy`, as an operation of its own or part of the one it is called in. */
export function withRetries(store: Store, policy: RetryPolicy): Store {
  return {
    location: store.location,
    putIfAbsent: (key: string, request: PutRequest) => retryTransient(policy, `store ${key}`, () => store.putIfAbsent(key, request)),
    // The body is read after get returns: it is destroyed too if the deadline passes first.
    get: (key: string) =>
      retryTransient(policy, `read ${key}`, async () => {
        const opened = await store.get(key);
        return { info: opened.info, body: bindToDeadline(opened.body) };
      }),
    head: (key: string): Promise<ObjectInfo | undefined> => retryTransient(policy, `inspect ${key}`, () => store.head(key)),
    deleteMany: (keys: readonly string[]) => retryTransient(policy, `delete ${keys.length} objects`, () => store.deleteMany(keys)),
    checkBucket: () => retryTransient(policy, 'check the bucket', () => store.checkBucket()),
    list: (prefix: string, startAfter?: string) => listWithRetries(store, policy, prefix, startAfter),
    listPrefixes: (prefix: string) => retryTransient(policy, `list the prefixes under ${JSON.stringify(prefix)}`, () => store.listPrefixes(prefix)),
    ...(store.leftovers && { leftovers: (prefix: string) => retryTransient(policy, `look for leftovers under ${prefix}`, () => store.leftovers!(prefix)) }),
  };
}

/**
 * A listing that, after a transient failure, resumes after the last key it produced. Each batch
 * of up to 1000 keys is an operation of its own (unless the listing is part of one): a namespace
 * of any size can be listed, and no batch takes longer than --timeout.
 */
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
