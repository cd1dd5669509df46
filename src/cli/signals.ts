/**
 * Signals a waiting fetch honours. SIGUSR1 asks for a fast failover. SIGTERM and SIGINT (server
 * shutdown) end the process at once: temp files go, no destination is written, and the process
 * dies by the same signal, which is how PostgreSQL recognises a shutdown of its restore_command.
 *
 * SIGUSR1 is walbridge's from the first line of every executable (bin/launch.js counts the ones
 * that arrive before a command's own handler, so that an early request is not lost), and never
 * Node's inspector: the executables start Node with an inspector address that cannot be bound.
 */
import { failoverSwitch } from '../archive/restore/failover.js';
import { removeTempFilesSync } from '../util/temp-files.js';

/** What bin/launch.js leaves on globalThis: its SIGUSR1 listener and the signals it caught. */
interface EarlySigusr1 {
  count: number;
  readonly listener: () => void;
}
const EARLY = Symbol.for('walbridge.sigusr1');

/** SIGTERM, SIGINT and SIGQUIT end the process by that signal, after removing its temp files. */
export function removeTempFilesOnSignals(): void {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const) {
    process.once(signal, () => {
      removeTempFilesSync();
      process.kill(process.pid, signal); // the listener is gone: the default action ends us
    });
  }
}

/** SIGUSR1 (also one caught before this) throws the returned failover switch; SIGTERM, SIGINT and SIGQUIT as above. */
export function installSignalHandlers(): ReturnType<typeof failoverSwitch> {
  const failover = failoverSwitch();
  process.on('SIGUSR1', () => failover.request());
  const early = (globalThis as { [EARLY]?: EarlySigusr1 })[EARLY];
  if (early) {
    process.off('SIGUSR1', early.listener);
    if (early.count > 0) failover.request();
  }
  removeTempFilesOnSignals();
  return failover;
}

/** walbridge stream: SIGTERM and SIGINT ask it to stop cleanly (one more pass, then exit 0). */
export function stopSwitch(): ReturnType<typeof failoverSwitch> {
  const stop = failoverSwitch();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => stop.request());
  return stop;
}
