/** A failover asked for locally, while a fetch waits: SIGUSR1 to the call, or a message from it to the background fetcher. */

/** A local request to fail over now (SIGUSR1), and a sleep it cuts short. */
export interface FailoverRequest {
  readonly requested: boolean;
  sleep(ms: number): Promise<void>;
}

/** A FailoverRequest thrown by `request()` (a signal handler, a message from the call). */
export function failoverSwitch(): FailoverRequest & { request(): void; whenRequested(then: () => void): void } {
  let requested = false;
  const wakers = new Set<() => void>();
  return {
    get requested() {
      return requested;
    },
    request() {
      requested = true;
      for (const wake of [...wakers]) wake();
    },
    whenRequested(then) {
      if (requested) then();
      else wakers.add(then);
    },
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        wakers.add(done);
      }),
  };
}
