/**
 * The one rule for how a waiting restore_command may end under recovery.signal.
 *
 * There PostgreSQL ends recovery and promotes the standby when restore_command exits with any
 * status from 1 to 125, and stops (FATAL) above 125. So only a failover someone asked for (a
 * trigger object, SIGUSR1 to the call, `pg_ctl promote` / `walbridge promote`, --max-wait)
 * answers "not found" (1). Every other failure either
 *
 *   holds: the call keeps waiting, tries again with growing pauses, and says once a minute what
 *          is wrong and what to fix; every attempt reads the config file, the key file and the
 *          credentials again and opens the store anew, so mending the cause resumes the standby
 *          by itself — the store (unreachable, refusing, missing bucket), a damaged or foreign
 *          object, a missing key, a local disk problem (a full pg_wal), a bad config or key file,
 *          a codec package missing (an install in progress); or
 *   stops: where nothing outside the process can mend it — bad arguments, a bad file name, a
 *          setting given as a flag or environment variable, a bug, a module of walbridge itself
 *          missing (replaced by an upgrade under the call), its server gone — it exits
 *          with ExitCode.stopServer (200), and PostgreSQL stops the standby instead of promoting it.
 *
 * Under standby.signal, or without waiting (--no-wait), PostgreSQL retries by itself: failures
 * end the call with their own status.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ExitCode, WalbridgeError, describeFailure, mendableOutside } from '../../errors.js';
import type { Logger } from '../../log.js';
import { dataDirOfWalPath } from '../../wal/datadir.js';
import { calledBy } from '../../wal/server.js';
import type { FailoverRequest } from './failover.js';
import { meterHolding } from '../../metrics/calls.js';

export type FetchOutcome = 'restored' | 'not-found';

/**
 * Whether a failure can be waited out (something outside the process may mend it) or must stop
 * the server. A module of walbridge missing is not waited out: Node keeps a failed import for
 * the life of the process, and an upgrade renames the bundle's chunks, so no later try could load
 * it (a codec package is another matter: it is loaded with require(), tried again each time,
 * and fails as a mendable WalbridgeError).
 */
export function verdictOn(err: unknown): 'hold' | 'stop' {
  return mendableOutside(err) ? 'hold' : 'stop';
}

/** The failure that stops the server instead of promoting it (exit 200), saying why. */
export function stopServer(err: unknown): WalbridgeError {
  if (err instanceof WalbridgeError && err.kind === 'stopServer') return err;
  const { status, message } = describeFailure(err);
  return new WalbridgeError(
    'stopServer',
    `${message} — this cannot be mended while the call waits, and exit status ${status} would end recovery and promote this standby: exiting ${ExitCode.stopServer} so that PostgreSQL stops instead (mend it, then start the server)`,
  );
}

/** The server that asked is gone: nobody wants the answer, and no status may promote. */
export function serverGone(name: string): WalbridgeError {
  return new WalbridgeError('stopServer', `the server that asked for ${name} is gone; stopping without writing anything`);
}

/**
 * Whether a restore_command invoked with `argv` (in the data directory `cwd`, as PostgreSQL
 * runs it) waits under recovery.signal. Light and synchronous: the exit path uses it for any
 * status, even when the arguments could not be parsed.
 */
export function waitsUnderRecoverySignal(argv: readonly string[], cwd = process.cwd()): boolean {
  if (argv.includes('--no-wait') || calledBy('pg_rewind')) return false;
  const dataDir = argv.map((arg) => (arg.startsWith('-') ? undefined : dataDirOfWalPath(arg))).find((d) => d !== undefined) ?? cwd;
  return existsSync(path.join(dataDir, 'recovery.signal')) && !existsSync(path.join(dataDir, 'standby.signal'));
}

export interface HoldOptions {
  readonly log: Logger;
  /** The file PostgreSQL asked for. */
  readonly name: string;
  /** Waiting under recovery.signal: failures are held or stop the server (see above). */
  readonly holding: boolean;
  readonly failover: FailoverRequest;
  /**
   * `pg_ctl promote` / `walbridge promote` asked the server to end recovery. Synchronous: a
   * thread pool held up by a hung file system (a config file on a dead NFS mount) must not keep
   * a failover from being seen.
   */
  readonly promoteRequested: () => boolean;
  /** Whether the server that asked still runs. */
  readonly serverAlive: () => boolean;
}

const FIRST_PAUSE_MS = 1_000;
const CHECK_EVERY_MS = 1_000;
const MAX_PAUSE_MS = 15_000;
/** A failure being held is said again after this long (or at once when it changes). */
const SAY_EVERY_MS = 60_000;

/** Runs `attempt` until it answers, holding failures while `opts.holding` as the rule says. */
export async function holdingFailures(opts: HoldOptions, attempt: () => Promise<FetchOutcome>): Promise<FetchOutcome> {
  let heldSince: number | undefined;
  let said = { at: -Infinity, message: '' };
  let pause = FIRST_PAUSE_MS;
  for (;;) {
    try {
      const outcome = await attempt();
      if (heldSince !== undefined) opts.log.info(`${opts.name}: going on after ${Math.round((Date.now() - heldSince) / 1000)} s of holding`);
      return outcome;
    } catch (err) {
      if (!opts.holding) throw err;
      if (verdictOn(err) === 'stop') throw stopServer(err);
      heldSince ??= Date.now();
      const { status, message } = describeFailure(err);
      meterHolding(status);
      if (message !== said.message || Date.now() - said.at >= SAY_EVERY_MS) {
        said = { at: Date.now(), message };
        opts.log.error(
          `cannot restore ${opts.name}: ${message}; holding: under recovery.signal any other answer would end recovery and promote this standby. ` +
            `Mend the cause and it goes on by itself (tried again every ${MAX_PAUSE_MS / 1000} s at most), or fail over with "walbridge trigger fast" or "walbridge promote"`,
        );
      }
    }
    // The pause, a second at a time: a failover request or the server's end is seen within one.
    for (const until = Date.now() + pause; Date.now() < until; ) {
      await opts.failover.sleep(Math.min(CHECK_EVERY_MS, until - Date.now()));
      if (!opts.serverAlive()) throw serverGone(opts.name);
      if (opts.failover.requested) {
        opts.log.warn(`SIGUSR1 received while holding on ${opts.name}: fast failover, answering "not found" so that recovery ends`);
        return 'not-found';
      }
      if (opts.promoteRequested()) {
        opts.log.warn(`promotion requested (pg_ctl promote) while holding on ${opts.name}: answering "not found" so that recovery ends`);
        return 'not-found';
      }
    }
    pause = Math.min(pause * 2, MAX_PAUSE_MS);
  }
}
