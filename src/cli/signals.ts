/**
 * Signals a waiting fetch honours. SIGUSR1 asks for a fast failover. SIGTERM and SIGINT (server
 * shutdown) end the process at once: temp files go, no destination is written, and the process
 * dies by the same signal, which is how PostgreSQL recognises a shutdown of its restore_command.
 */
import { failoverSwitch } from '../archive/failover.js';
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

/** SIGUSR1 throws the returned failover switch; SIGTERM, SIGINT and SIGQUIT as above. */
export function installSignalHandlers(): ReturnType<typeof failoverSwitch> {
  const failover = failoverSwitch();
  process.on('SIGUSR1', () => failover.request());
  removeTempFilesOnSignals();
  return failover;
}
