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
import { ExitCode, WalbridgeError } from '../../errors.js';
import { withinTimeout } from '../../storage/retry.js';
import { dataDirOfWalPath, promoteRequested, readRecoverySignal, type RecoverySignal } from '../../wal/datadir.js';
import { formatLsn } from '../../wal/header.js';
import { parseRequestedName, type WalFileName } from '../../wal/names.js';
import { namespaceIdentity, restoreStreamed, streamedChain, type FetchContext } from './download.js';
import type { FailoverRequest } from './failover.js';
import { serverGone, type FetchOutcome } from './hold.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { walFileKey } from '../repo/layout.js';
import { findFork, historyName, pastFork, type Fork } from '../repo/timelines.js';
import { NotForBackground, restoreWithPrefetch } from './prefetch.js';
import { isSpooled } from './spool.js';
import { readStandbyState, recordRestored, writeStandbyState } from './standby-state.js';
import { ALL_STANDBYS, choose, readTrigger, triggerId, type Trigger } from '../repo/trigger.js';

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

/** restore_command without waiting: restore the file, or answer "not found" at once; one operation, within --timeout. */
export function fetchWalFile(ctx: FetchContext, name: string, destination: string): Promise<FetchOutcome> {
  return withinTimeout(ctx.retry, `fetch of ${name}`, () => fetchWithin(ctx, name, destination));
}

async function fetchWithin(ctx: FetchContext, name: string, destination: string): Promise<FetchOutcome> {
  const file = parseRequestedName(name);
  const identity = await namespaceIdentity(ctx);
  if ((await restoreWithPrefetch(ctx, file, destination, identity)) === 'restored') return 'restored';
  // A missing bucket also looks like a missing object; it must not read as "not yet archived".
  await ctx.store.checkBucket();
  ctx.log.info(`${name} is not in the archive`);
  return 'not-found';
}

export async function waitForWalFile(ctx: FetchContext, name: string, destination: string, opts: WaitOptions): Promise<FetchOutcome> {
  const file = parseRequestedName(name);
  const key = walFileKey(ctx.namespace, file);
  const dataDir = dataDirOfWalPath(destination);
  const signal = dataDir ? await readRecoverySignal(dataDir) : undefined;
  const started = Date.now();
  let interval = opts.pollIntervalMs;
  let identity: ClusterIdentity | undefined;
  let bucketChecked = false;
  const warnedLeftovers = new Set<string>();
  let trigger: Trigger | undefined;
  let triggersReadAt = -Infinity;
  /** Where a newer timeline branched off the requested one, if one did: looked up with the triggers. */
  let fork: Fork | undefined;

  const triggerToObey = async (): Promise<Trigger | undefined> => {
    const targets = opts.standby ? [opts.standby, ALL_STANDBYS] : [ALL_STANDBYS];
    const found = (await Promise.all(targets.map((t) => readTrigger(ctx.store, ctx.namespace, t)))).filter((t): t is Trigger => t !== undefined);
    const { obey, leftovers } = choose(found, await leftoverTriggers(dataDir, signal, found));
    for (const t of leftovers) {
      if (warnedLeftovers.has(triggerId(t))) continue;
      warnedLeftovers.add(triggerId(t));
      ctx.log.warn(
        `ignoring the ${t.mode} trigger for "${t.target}" written at ${t.createdAt} by ${t.createdBy}: it was there before this standby's recovery first looked, a leftover of an earlier failover; remove it with "walbridge trigger clear", and write a new one to fail this standby over`,
      );
    }
    return obey;
  };

  for (;;) {
    if (!opts.alive()) throw serverGone(name);
    if (opts.failover.requested) {
      ctx.log.warn(`SIGUSR1 received while waiting for ${name}: fast failover, answering "not found" so that recovery ends`);
      return 'not-found';
    }
    if (dataDir && (await promoteRequested(dataDir))) {
      ctx.log.warn(`promotion requested (pg_ctl promote) while waiting for ${name}: answering "not found" so that recovery ends`);
      return 'not-found';
    }
    identity ??= await namespaceIdentity(ctx);
    // Only segments are worth waiting for: anything else answers at once (a waiting
    // .history lookup would hang promotion), and no trigger changes that answer.
    // Triggers are read on the first poll, then at most every other cap interval: the
    // segment is polled twice as often as the trigger objects for the same request count.
    const readTriggers = file.kind === 'segment' && Date.now() - triggersReadAt >= 2 * opts.maxPollIntervalMs;
    // A segment in the prefetch spool was downloaded from this namespace and verified: no need to ask the store.
    const [fresh, present, newer] = await Promise.all([
      readTriggers ? triggerToObey() : trigger,
      isSpooled(ctx, file, destination).then(async (spooled) => spooled || (await ctx.store.head(key)) !== undefined),
      readTriggers ? findFork(ctx.store, ctx.namespace, file.timeline, ctx.keys) : fork,
    ]);
    if (readTriggers) triggersReadAt = Date.now();
    trigger = fresh;
    fork = newer;
    // Past the point where another standby was promoted this timeline has nothing to give: a
    // segment that reaches past it is, beyond that point, the old primary's (even if stored); the
    // newer timeline's copy of the segment holds this timeline's WAL up to the fork. (Seen once
    // the newer history is in the archive: before that, a trigger for every standby still
    // promotes each one that reaches it.)
    if (fork && identity && pastFork(file, identity.segmentSize, fork)) {
      return followNewTimeline(ctx, name, fork, signal);
    }
    const restoredUpTo = dataDir ? (await readStandbyState(dataDir)).restoredUpTo : undefined;
    if (trigger?.mode === 'fast' && !(present && restoredBefore(file, restoredUpTo))) {
      ctx.log.warn(`fast failover (trigger for "${trigger.target}" written at ${trigger.createdAt} by ${trigger.createdBy}): not restoring ${name}, so that recovery ends`);
      return 'not-found';
    }
    if (present && (await restoreWithPrefetch(ctx, file, destination, identity)) === 'restored') {
      // In the background fetcher the segment is only spooled: the call records it once it published %p.
      if (dataDir && file.kind === 'segment' && file.position && !ctx.background) await recordRestored(dataDir, file.position);
      return 'restored';
    }
    if (!bucketChecked) {
      // A missing bucket looks like a missing object: make sure once that it is there.
      await ctx.store.checkBucket();
      bucketChecked = true;
    }
    if (file.kind !== 'segment') {
      ctx.log.info(`${name} is not in the archive`);
      return 'not-found';
    }
    if (trigger?.mode === 'smart') {
      // What `walbridge stream` shipped of a segment never archived: the last commits before the primary died.
      const chain = await streamedChain(ctx, file, identity);
      if (chain.length > 0) {
        // Only a live call writes %p, and the spool holds archived segments only.
        if (ctx.background) throw new NotForBackground(`the streamed part of ${name} is restored by the call itself`);
        const outcome = await restoreStreamed(ctx, file, destination, identity!, chain).catch((err: unknown) => {
          // The streamed part is a bonus: a damaged one, or one sealed with a key not given here,
          // must not hold the failover up.
          if (!(err instanceof WalbridgeError) || !['corrupt', 'foreignCluster', 'encryptionKey'].includes(err.kind)) throw err;
          ctx.log.error(`cannot use the streamed part of ${name}: ${err.message}; recovery ends at the last archived segment`);
          return 'unusable' as const;
        });
        if (outcome === 'restored') return 'restored';
        if (outcome === 'archived') continue; // landed whole meanwhile: the next pass restores it
      }
      ctx.log.warn(`smart failover (trigger for "${trigger.target}" written at ${trigger.createdAt} by ${trigger.createdBy}): every archived segment is restored, ${name} is not archived; answering "not found" so that recovery ends`);
      return 'not-found';
    }
    if (opts.maxWaitMs > 0 && Date.now() - started >= opts.maxWaitMs) {
      ctx.log.warn(
        `FAILOVER: no ${name} for ${Math.round(opts.maxWaitMs / 1000)} s (--max-wait): the primary looks gone; answering "not found" so that recovery ends and this standby is promoted`,
      );
      return 'not-found';
    }
    await opts.failover.sleep(interval);
    interval = Math.min(opts.maxPollIntervalMs, interval * 1.5);
  }
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

/**
 * The ids of the triggers that were there when this recovery first looked: recorded at that
 * first look (in the standby's state, keyed by its signal file), read back afterwards.
 */
async function leftoverTriggers(dataDir: string | undefined, signal: RecoverySignal | undefined, present: readonly Trigger[]): Promise<Set<string>> {
  if (!dataDir || !signal) return new Set();
  const state = await readStandbyState(dataDir);
  if (state.recovery?.signal === signal.identity) return new Set(state.recovery.leftoverTriggers);
  const leftoverIds = present.map(triggerId);
  await writeStandbyState(dataDir, { ...state, recovery: { signal: signal.identity, leftoverTriggers: leftoverIds } });
  return new Set(leftoverIds);
}

/** Has this standby restored `file`'s position already? (A fast trigger still serves those.) */
function restoredBefore(file: WalFileName, restoredUpTo: string | undefined): boolean {
  return restoredUpTo !== undefined && file.position !== undefined && file.position <= restoredUpTo;
}
