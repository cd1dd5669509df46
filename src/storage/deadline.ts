/**
 * One deadline per operation (--timeout): every attempt, retry and wait of an operation ends
 * when its deadline passes, however deeply the code nests its retries, and what is in flight
 * then is aborted, even a body that is still arriving (or leaving) slowly, so that nothing keeps
 * running in a long-lived background process after its caller gave up.
 *
 * The deadline travels with the operation's async context (AsyncLocalStorage): an operation
 * started inside another one joins it instead of starting a clock of its own. Requests are tied
 * to it three ways: the S3 driver hands its signal to the SDK (abortSignal); every HTTP request
 * Node starts inside an operation is destroyed when it passes, through Node's
 * `http.client.request.start` diagnostics channel (the GCS SDK takes no abort signal); and the
 * body a get hands out is destroyed then, whichever driver made it (retry.ts).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe } from 'node:diagnostics_channel';
import { setMaxListeners } from 'node:events';
import type { ClientRequest } from 'node:http';
import { StoreError } from './store.js';

/** What an operation answers once its deadline has passed: transient (exit 10), naming the operation. */
export class DeadlineExpired extends StoreError {
  constructor(message: string) {
    super('transient', message);
  }
}

/** After the deadline, how long an aborted attempt may take to unwind (temp files removed, a multipart upload aborted). */
const UNWIND_MS = 1_000;

export class Deadline {
  /** Epoch milliseconds. */
  readonly at: number;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  /** Requests and bodies tied to the deadline that may outlive the operation's own code. */
  private holds = 0;
  private ended = false;
  /** The last transient failure an attempt met, for the message at the deadline. */
  lastError: StoreError | undefined;

  constructor(
    readonly budgetMs: number,
    /** The operation, for the message at the deadline ("push of 000000010000000000000002"). */
    readonly what: string,
  ) {
    this.at = Date.now() + budgetMs;
    // Every request of the operation listens (a prefetch runs many at once): Node's warning at
    // 11 would land in PostgreSQL's log as noise.
    setMaxListeners(256, this.controller.signal);
    this.timer = setTimeout(() => this.controller.abort(), budgetMs);
    this.timer.unref();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * By the clock, not only by the timer: attempts that fail without yielding to the event loop
   * (a rejection in a microtask) would otherwise retry forever, the timer never getting its turn.
   */
  get passed(): boolean {
    return this.controller.signal.aborted || Date.now() >= this.at;
  }

  /** Whether the operation that owns it still runs (a new attempt joins only a live deadline). */
  get live(): boolean {
    return !this.ended;
  }

  remainingMs(): number {
    return Math.max(0, this.at - Date.now());
  }

  expired(): DeadlineExpired {
    const seconds = Number((this.budgetMs / 1000).toFixed(3));
    const last = this.lastError ? `; last error: ${this.lastError.message}` : '';
    return new DeadlineExpired(`${this.what} did not complete within --timeout ${seconds} s${last}`);
  }

  /**
   * Calls `onExpiry` when the deadline passes (at once if it has), until the returned release is
   * called; meanwhile the deadline's timer runs even after its operation ended.
   */
  hold(onExpiry: () => void): () => void {
    if (this.passed) {
      queueMicrotask(onExpiry); // not inside the caller's own set-up (a request's constructor)
      return () => undefined;
    }
    this.holds++;
    let held = true;
    const listener = () => onExpiry();
    this.signal.addEventListener('abort', listener, { once: true });
    return () => {
      if (!held) return;
      held = false;
      this.signal.removeEventListener('abort', listener);
      this.holds--;
      this.settle();
    };
  }

  /** The operation is over: no new attempt joins it; the timer stops once nothing is held. */
  end(): void {
    this.ended = true;
    this.settle();
  }

  private settle(): void {
    if (this.ended && this.holds === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  /**
   * Runs one attempt; if the deadline passes first, the attempt's requests are being aborted:
   * it gets a moment to unwind, then DeadlineExpired is thrown.
   */
  async race<T>(attempt: () => Promise<T>): Promise<T> {
    if (this.passed) throw this.expired();
    const outcome = attempt().then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    let onAbort = () => undefined as void;
    const expiry = new Promise<'expired'>((resolve) => {
      onAbort = () => resolve('expired');
      this.signal.addEventListener('abort', onAbort, { once: true });
    });
    let first;
    try {
      first = await Promise.race([outcome, expiry]);
    } finally {
      this.signal.removeEventListener('abort', onAbort);
    }
    if (first !== 'expired') {
      if ('error' in first) throw first.error;
      return first.value;
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([outcome, new Promise((resolve) => (timer = setTimeout(resolve, UNWIND_MS)))]);
    clearTimeout(timer);
    throw this.expired();
  }

  /** Waits `ms`, or less if the deadline passes first. */
  async sleep(ms: number): Promise<void> {
    const wait = Math.min(ms, this.remainingMs());
    if (wait <= 0 || this.passed) return;
    let onAbort = () => undefined as void;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      onAbort = resolve;
      timer = setTimeout(resolve, wait);
      this.signal.addEventListener('abort', onAbort, { once: true });
    });
    clearTimeout(timer);
    this.signal.removeEventListener('abort', onAbort);
  }
}

const ambient = new AsyncLocalStorage<Deadline>();

/** The deadline of the operation running in this async context, if it is still running. */
export function liveDeadline(): Deadline | undefined {
  const deadline = ambient.getStore();
  return deadline?.live ? deadline : undefined;
}

/**
 * Runs `fn` as one operation: within the live deadline of an enclosing operation if there is
 * one, else under a new deadline `budgetMs` from now.
 */
export async function withinDeadline<T>(budgetMs: number, what: string, fn: (deadline: Deadline) => Promise<T>): Promise<T> {
  const joined = liveDeadline();
  if (joined) return fn(joined);
  const deadline = new Deadline(budgetMs, what);
  try {
    return await ambient.run(deadline, () => fn(deadline));
  } finally {
    deadline.end();
  }
}

/** Runs `fn` outside any operation's deadline: work that outlives the operation it was started in. */
export function outsideDeadline<T>(fn: () => T): T {
  return ambient.exit(fn);
}

/** How long removing what a failed write left behind may take, on a deadline of its own. */
const CLEANUP_MS = 2_000;

/**
 * Clean-up after a failed write (an unfinished multipart upload, an object stored unencrypted):
 * it runs even when the operation's deadline has passed (which may be why it failed), on a short
 * deadline of its own.
 */
export function cleanUp<T>(what: string, fn: () => Promise<T>): Promise<T> {
  return outsideDeadline(() => withinDeadline(CLEANUP_MS, what, fn));
}

/** Destroys `stream` (with DeadlineExpired) if the live deadline passes before the stream closes. */
export function bindToDeadline<S extends NodeJS.ReadableStream & { destroy(error?: Error): unknown; once(event: 'close', listener: () => void): unknown }>(
  stream: S,
): S {
  const deadline = liveDeadline();
  if (deadline)
    stream.once(
      'close',
      deadline.hold(() => stream.destroy(deadline.expired())),
    );
  return stream;
}

// Every HTTP request started inside an operation (any SDK, credentials included) is destroyed
// when the operation's deadline passes; a request that completed is left alone.
subscribe('http.client.request.start', (message) => {
  const deadline = liveDeadline();
  if (!deadline) return;
  const request = (message as { request: ClientRequest }).request;
  request.once(
    'close',
    deadline.hold(() => request.destroy(deadline.expired())),
  );
});
