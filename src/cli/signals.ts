/**
 * Signals a waiting fetch honours. SIGUSR1 asks for a fast failover. SIGTERM and SIGINT (server
 * shutdown) end the process at once: temp files go, no destination is written, and the process
 * dies by the same signal, which is how PostgreSQL recognises a shutdown of its restore_command.
 */
import type { FailoverRequest } from '../archive/wait.js';
import { removeTempFilesSync } from '../util/temp-files.js';

/** SIGTERM, SIGINT and SIGQUIT end the process by that signal, after removing its temp files. */
export function removeTempFilesOnSignals(): void {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const) {
    process.once(signal, () => {
      removeTempFilesSync();
      process.kill(process.pid, signal); // the listener is gone: the default action ends us
    });
  }
}

export function installSignalHandlers(): FailoverRequest {
  let requested = false;
  const wakers = new Set<() => void>();
  process.on('SIGUSR1', () => {
    requested = true;
    for (const wake of wakers) wake();
  });
  removeTempFilesOnSignals();
  return {
    get requested() {
      return requested;
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
