/**
 * The waiting restore_command, in the style of pg_standby: asked for a segment that is not
 * archived yet, poll the repository (cheap keyed requests, growing waits up to a cap) until it
 * lands, or until a failover is asked for: a trigger object, SIGUSR1, `pg_ctl promote`, or
 * `--max-wait` without a new segment. Then answer "not found", which ends recovery.
 *
 * A failure ends the wait by its error; what follows (holding under recovery.signal, or the
 * failure's own status) is hold.ts's rule, which waits again from the start: --max-wait
 * counts only time in which a new segment could have been seen.
 */
import type { Settings } from '../../config/settings.js';
import { ExitCode, WalbridgeError } from '../../errors.js';
import { withinTimeout } from '../../storage/retry.js';
import { dataDirOfWalPath, promoteRequested, readRecoverySignal, type RecoverySignal } from '../../wal/datadir.js';
import { formatLsn } from '../../wal/header.js';
import { parseRequestedName, type WalFileName } from '../../wal/names.js';
import type { Delivery } from './delivery.js';
import { namespaceIdentity, type FetchContext } from './download.js';
import type { FailoverRequest } from './failover.js';
import { serverGone, type FetchOutcome } from './hold.js';
import { historyName, pastFork, type Fork } from '../repo/timelines.js';
import { streamedChain } from './streamed.js';
import { Watch, type Sight } from './watch.js';
import type { Trigger } from '../repo/trigger.js';

export type { FetchOutcome } from './hold.js';

export interface WaitOptions {
  readonly pollIntervalMs: number;
  readonly maxPollIntervalMs: number;
  /** No new segment for this long: fast failover. 0 = wait forever. */
  readonly maxWaitMs: number;
  readonly standby: string | undefined;
  readonly failover: FailoverRequest;
  /** Whether whoever asked still waits for the answer (the call's server runs; the fetcher's call is connected). */
  readonly alive: () => boolean;
}

/** A waiting fetch's settings. */
export function waitOptions(settings: Settings): Omit<WaitOptions, 'failover' | 'alive'> {
  return {
    pollIntervalMs: settings.pollInterval * 1000,
    maxPollIntervalMs: settings.maxPollInterval * 1000,
    maxWaitMs: settings.maxWait * 1000,
    standby: settings.standby,
  };
}

/** restore_command without waiting: restore the file, or answer "not found" at once; one operation, within --timeout. */
export function fetchWalFile(ctx: FetchContext, name: string, destination: string, delivery: Delivery): Promise<FetchOutcome> {
  return withinTimeout(ctx.retry, `fetch of ${name}`, () => fetchWithin(ctx, name, destination, delivery));
}

async function fetchWithin(ctx: FetchContext, name: string, destination: string, delivery: Delivery): Promise<FetchOutcome> {
  const file = parseRequestedName(name);
  const identity = await namespaceIdentity(ctx);
  if ((await delivery.restore(ctx, file, destination, identity)) === 'restored') return 'restored';
  // A missing bucket also looks like a missing object; it must not read as "not yet archived".
  await ctx.store.checkBucket();
  ctx.log.info(`${name} is not in the archive`);
  return 'not-found';
}

export async function waitForWalFile(ctx: FetchContext, name: string, destination: string, opts: WaitOptions, delivery: Delivery): Promise<FetchOutcome> {
  const file = parseRequestedName(name);
  const dataDir = dataDirOfWalPath(destination);
  const signal = dataDir ? await readRecoverySignal(dataDir) : undefined;
  const watch = new Watch(ctx, file, destination, { name: opts.standby, dataDir, signal }, opts.maxPollIntervalMs);
  const started = Date.now();
  let interval = opts.pollIntervalMs;
  let bucketChecked = false;
  for (;;) {
    const asked = await failoverAskedHere(opts, dataDir, name);
    if (asked) {
      ctx.log.warn(asked);
      return 'not-found';
    }
    const sight = await watch.look();
    const first = beforeRestoring(file, sight);
    if (first === 'follow-fork') return followNewTimeline(ctx, name, sight.fork!, signal);
    if (first === 'fast-failover') {
      ctx.log.warn(`fast failover (${describeTrigger(sight.trigger!)}): not restoring ${name}, so that recovery ends`);
      return 'not-found';
    }
    if (first === 'restore' && (await delivery.restore(ctx, file, destination, sight.identity)) === 'restored') {
      if (dataDir) await delivery.delivered(file, dataDir);
      return 'restored';
    }
    if (!bucketChecked) {
      // A missing bucket looks like a missing object: make sure once that it is there.
      await ctx.store.checkBucket();
      bucketChecked = true;
    }
    const then = whenAbsent(file, sight.trigger, Date.now() - started, opts.maxWaitMs);
    if (then === 'not-archived') {
      ctx.log.info(`${name} is not in the archive`);
      return 'not-found';
    }
    if (then === 'smart-failover') {
      const outcome = await smartFailover(ctx, file, destination, sight, delivery);
      if (outcome === 'archived') continue; // landed whole meanwhile: the next pass restores it
      return outcome;
    }
    if (then === 'max-wait') {
      ctx.log.warn(
        `FAILOVER: no ${name} for ${Math.round(opts.maxWaitMs / 1000)} s (--max-wait): the primary looks gone; answering "not found" so that recovery ends and this standby is promoted`,
      );
      return 'not-found';
    }
    await opts.failover.sleep(interval);
    interval = nextInterval(interval, opts.maxPollIntervalMs);
  }
}

/** A failover asked for on this machine (SIGUSR1, `pg_ctl promote`), as the line to log; throws if the server that asked is gone. */
async function failoverAskedHere(opts: WaitOptions, dataDir: string | undefined, name: string): Promise<string | undefined> {
  if (!opts.alive()) throw serverGone(name);
  if (opts.failover.requested) return `SIGUSR1 received while waiting for ${name}: fast failover, answering "not found" so that recovery ends`;
  if (dataDir && (await promoteRequested(dataDir)))
    return `promotion requested (pg_ctl promote) while waiting for ${name}: answering "not found" so that recovery ends`;
  return undefined;
}

/**
 * What a poll does first, from what it saw. Past the point where another standby was promoted
 * this timeline has nothing to give: a segment that reaches past it is, beyond that point, the old
 * primary's (even if stored); the newer timeline's copy holds this timeline's WAL up to the fork.
 * (Seen once the newer history is in the archive: before that, a trigger for every standby still
 * promotes each one that reaches it.) A fast trigger ends recovery now, except for a segment this
 * standby restored before (PostgreSQL asks again for what it has replayed, and must get it).
 */
export function beforeRestoring(file: WalFileName, sight: Sight): 'follow-fork' | 'fast-failover' | 'restore' | 'absent' {
  if (sight.fork && sight.identity && pastFork(file, sight.identity.segmentSize, sight.fork)) return 'follow-fork';
  if (sight.trigger?.mode === 'fast' && !(sight.present && restoredBefore(file, sight.restoredUpTo))) return 'fast-failover';
  return sight.present ? 'restore' : 'absent';
}

/**
 * What a poll does when the file is not there: only segments are waited for; a smart trigger ends
 * recovery once every archived segment is restored; --max-wait without a new segment fails over.
 */
export function whenAbsent(
  file: WalFileName,
  trigger: Trigger | undefined,
  waitedMs: number,
  maxWaitMs: number,
): 'not-archived' | 'smart-failover' | 'max-wait' | 'poll-again' {
  if (file.kind !== 'segment') return 'not-archived';
  if (trigger?.mode === 'smart') return 'smart-failover';
  if (maxWaitMs > 0 && waitedMs >= maxWaitMs) return 'max-wait';
  return 'poll-again';
}

/** Growing waits between polls, up to the cap. */
export function nextInterval(interval: number, maxPollIntervalMs: number): number {
  return Math.min(maxPollIntervalMs, interval * 1.5);
}

/**
 * A smart trigger and the segment is not archived: what `walbridge stream` shipped of it (the
 * last commits before the primary died), else "not found". 'archived': it landed whole meanwhile.
 */
async function smartFailover(ctx: FetchContext, file: WalFileName, destination: string, sight: Sight, delivery: Delivery): Promise<FetchOutcome | 'archived'> {
  const chain = await streamedChain(ctx, file, sight.identity);
  if (chain.length > 0) {
    const outcome = await delivery.restoreStreamed(ctx, file, destination, sight.identity!, chain).catch((err: unknown) => {
      // The streamed part is a bonus: a damaged one, or one sealed with a key not given here,
      // must not hold the failover up.
      if (!(err instanceof WalbridgeError) || !['corrupt', 'foreignCluster', 'encryptionKey'].includes(err.kind)) throw err;
      ctx.log.error(`cannot use the streamed part of ${file.name}: ${err.message}; recovery ends at the last archived segment`);
      return 'unusable' as const;
    });
    if (outcome !== 'unusable') return outcome;
  }
  ctx.log.warn(
    `smart failover (${describeTrigger(sight.trigger!)}): every archived segment is restored, ${file.name} is not archived; answering "not found" so that recovery ends`,
  );
  return 'not-found';
}

function describeTrigger(trigger: Trigger): string {
  return `trigger for "${trigger.target}" written at ${trigger.createdAt} by ${trigger.createdBy}`;
}

/**
 * Another standby was promoted: the timeline this standby follows ended before `name`. Under
 * standby.signal, "not found" makes PostgreSQL look for the newer timeline's history and switch
 * to it. Under recovery.signal "not found" would promote this standby too (a second primary),
 * and PostgreSQL switches timelines only when it starts: the server is stopped (exit 200, FATAL),
 * and started again it follows the newer timeline (recovery_target_timeline = 'latest').
 */
function followNewTimeline(ctx: FetchContext, name: string, fork: Fork, signal: RecoverySignal | undefined): FetchOutcome {
  const what = `timeline ${fork.newer} was promoted from timeline ${fork.timeline} at ${formatLsn(fork.switchpoint)} (${historyName(fork.newer)}), so ${name} will never be archived`;
  if (signal?.mode !== 'recovery') {
    ctx.log.warn(`${what}: answering "not found", so that PostgreSQL switches to timeline ${fork.newer}`);
    return 'not-found';
  }
  throw new WalbridgeError(
    'stopServer',
    `${what}. Under recovery.signal PostgreSQL switches timelines only when it starts, and "not found" would promote this standby too: exiting ${ExitCode.stopServer} so that it stops instead. Start it again (systemd's Restart=on-failure does) and it follows timeline ${fork.newer} (recovery_target_timeline = 'latest')`,
  );
}

/** Has this standby restored `file`'s position already? (A fast trigger still serves those.) */
function restoredBefore(file: WalFileName, restoredUpTo: string | undefined): boolean {
  return restoredUpTo !== undefined && file.position !== undefined && file.position <= restoredUpTo;
}
