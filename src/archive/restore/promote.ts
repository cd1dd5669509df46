/**
 * `walbridge promote`: a fast failover asked for on the standby itself, without the bucket.
 *
 * It does what `pg_ctl promote` does — writes the data directory's `promote` file and signals
 * the postmaster (a standby.signal server then promotes by itself) — and also signals exactly
 * the archive-fetch call that waits for a segment, which `pg_wal/walbridge/waiting.pid` names
 * (pid and start time, so a reused pid is never signalled), so that it answers at once. The
 * `promote` file is the request that cannot be lost: a waiting call looks for it at every poll,
 * and a call between two segments sees it when PostgreSQL asks for the next one. `pkill -USR1
 * -f archive-fetch` would also hit the `sh -c` that PostgreSQL runs the command in, and the
 * server would stop instead of promoting.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { readFileSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { WalbridgeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { fsyncDir } from '../../util/durable.js';
import { readRecoverySignal } from '../../wal/datadir.js';
import { formatServer, parseServer, processRunning, runningServer, thisProcess } from '../../wal/server.js';
import { pidFile, walbridgeDir } from '../local-layout.js';

/** Names this call in `waiting.pid` while it runs (best effort: the promote file is what counts). */
export async function registerWaitingCall(walDir: string, log: Logger): Promise<void> {
  const me = thisProcess();
  if (!me) return;
  const file = pidFile(walDir, 'waiting');
  try {
    await mkdir(walbridgeDir(walDir), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await writeFile(file, `${formatServer(me)}\n`);
  } catch (err) {
    log.warn(`cannot record this call in ${file} (walbridge promote will not signal it; it still sees the promote file): ${(err as Error).message}`);
    return;
  }
  process.once('exit', () => {
    try {
      if (readFileSync(file, 'utf8').trim() === formatServer(me)) unlinkSync(file);
    } catch {
      // gone already, or another call's by now
    }
  });
}

/** pg_control's DBState values (src/include/catalog/pg_control.h; the same from PostgreSQL 9.x to 18). */
const DB_IN_PRODUCTION = 6;

export interface PromoteOutcome {
  /** The waiting archive-fetch call that was signalled, if one waited. */
  readonly signalledCall?: number;
  /** Whether the server left recovery within the wait (undefined: not waited for). */
  readonly promoted?: boolean;
}

export async function promoteStandby(dataDir: string, opts: { waitMs: number; log: Logger }): Promise<PromoteOutcome> {
  const signal = await readRecoverySignal(dataDir);
  const server = await runningServer(dataDir);
  if (!server)
    throw new WalbridgeError('config', `no server runs in ${dataDir} (no live postmaster in postmaster.pid): start it, or give the standby's data directory`);
  if (!signal) throw new WalbridgeError('config', `${dataDir} is not in recovery (no recovery.signal or standby.signal): there is nothing to promote`);
  // The request first, durably: whatever happens to the signals below, the next look sees it.
  const promote = path.join(dataDir, 'promote');
  await writeFile(`${promote}.walbridge`, '');
  await rename(`${promote}.walbridge`, promote);
  await fsyncDir(dataDir);
  process.kill(server.pid, 'SIGUSR1'); // as pg_ctl promote: a standby.signal server acts on it
  const waiting = parseServer((await readFile(pidFile(path.join(dataDir, 'pg_wal'), 'waiting'), 'utf8').catch(() => '')).trim());
  let signalledCall: number | undefined;
  if (waiting && processRunning(waiting)) {
    process.kill(waiting.pid, 'SIGUSR1');
    signalledCall = waiting.pid;
  }
  opts.log.info(
    `promotion requested for ${dataDir} (the promote file, and SIGUSR1 to the postmaster ${server.pid}${signalledCall ? ` and to the waiting archive-fetch ${signalledCall}` : '; no archive-fetch was waiting'})`,
  );
  if (opts.waitMs <= 0) return { signalledCall };
  const deadline = Date.now() + opts.waitMs;
  while (Date.now() < deadline) {
    if ((await controlState(dataDir)) === DB_IN_PRODUCTION) return { signalledCall, promoted: true };
    if (!processRunning(server)) throw new WalbridgeError('internal', `the server in ${dataDir} stopped instead of promoting: see its log`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { signalledCall, promoted: false };
}

/** pg_control's state (after the system identifier and two version numbers), as pg_ctl reads it. */
async function controlState(dataDir: string): Promise<number | undefined> {
  try {
    const control = await readFile(path.join(dataDir, 'global', 'pg_control'));
    return control.length >= 20 ? control.readInt32LE(16) : undefined;
  } catch {
    return undefined;
  }
}
