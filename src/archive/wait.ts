/**
 * The waiting restore_command, in the style of pg_standby: asked for a segment that is not
 * archived yet, poll the repository (cheap keyed requests, growing waits up to a cap) until it
 * lands, or until a failover is asked for: a trigger object, SIGUSR1, `pg_ctl promote`, or
 * `--max-wait` without a new segment. Then answer "not found", which ends recovery.
 *
 * Under recovery.signal every non-zero exit below 126 ends recovery, so there a store that is
 * unreachable or refusing is waited out and logged, never reported: a standby must not promote
 * because the network blinked. Under standby.signal PostgreSQL retries by itself, so failures
 * are reported with their own exit status.
 */
import { WalbridgeError } from '../errors.js';
import { withinTimeout } from '../storage/retry.js';
import { StoreError } from '../storage/store.js';
import { dataDirOfWalPath, promoteRequested, readRecoverySignal } from '../wal/datadir.js';
import { parseRequestedName, type WalFileName } from '../wal/names.js';
import { namespaceIdentity, restoreStreamed, streamedChain, type FetchContext } from './fetch.js';
import type { ClusterIdentity } from './identity.js';
import { walFileKey } from './layout.js';
import { NotForBackground, restoreWithPrefetch } from './prefetch.js';
import { isSpooled } from './spool.js';
import { readStandbyState, writeStandbyState } from './standby-state.js';
import { ALL_STANDBYS, choose, readTrigger, type Trigger } from './trigger.js';
import type { FailoverRequest } from './failover.js';

export interface WaitOptions {
  readonly pollIntervalMs: number;
  readonly maxPollIntervalMs: number;
  /** No new segment for this long: fast failover. 0 = wait forever. */
  readonly maxWaitMs: number;
  readonly standby: string | undefined;
  readonly failover: FailoverRequest;
  /** Whether whoever asked still waits for the answer (default: our parent, the server, is the same). */
  readonly alive?: () => boolean;
}

/** Wait between attempts while a failure is being waited out. */
const FAILURE_RETRY_MS = 5_000;
/** A failure being waited out is logged again after this long. */
const FAILURE_LOG_EVERY_MS = 60_000;

export type FetchOutcome = 'restored' | 'not-found';

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
  const holdOnFailure = signal?.mode === 'recovery';
  const state = dataDir ? await readStandbyState(dataDir) : {};
  const parent = process.ppid;
  let started = Date.now();
  let interval = opts.pollIntervalMs;
  let identity: ClusterIdentity | undefined;
  let identityLoaded = false;
  let bucketChecked = false;
  let failingSince: number | undefined;
  let lastFailureLog = 0;
  const warnedLeftovers = new Set<string>();
  let trigger: Trigger | undefined;
  let triggersReadAt = -Infinity;

  const triggerToObey = async (): Promise<Trigger | undefined> => {
    const targets = opts.standby ? [opts.standby, ALL_STANDBYS] : [ALL_STANDBYS];
    const found = await Promise.all(targets.map((t) => readTrigger(ctx.store, ctx.namespace, t)));
    const { obey, leftovers } = choose(found, signal?.since);
    for (const t of leftovers) {
      if (warnedLeftovers.has(t.createdAt)) continue;
      warnedLeftovers.add(t.createdAt);
      ctx.log.warn(
        `ignoring the ${t.mode} trigger for "${t.target}" written at ${t.createdAt}: it is older than this standby's setup (${signal!.since.toISOString()}), a leftover of an earlier failover; remove it with "walbridge trigger clear"`,
      );
    }
    return obey;
  };

  for (;;) {
    if (opts.alive ? !opts.alive() : process.ppid !== parent) throw new WalbridgeError('internal', `the server that asked for ${name} is gone; stopping`);
    if (opts.failover.requested) {
      ctx.log.warn(`SIGUSR1 received while waiting for ${name}: fast failover, answering "not found" so that recovery ends`);
      return 'not-found';
    }
    if (dataDir && (await promoteRequested(dataDir))) {
      ctx.log.warn(`pg_ctl promote requested while waiting for ${name}: answering "not found" so that recovery ends`);
      return 'not-found';
    }
    try {
      if (!identityLoaded) {
        identity = await namespaceIdentity(ctx);
        identityLoaded = identity !== undefined;
      }
      // Only segments are worth waiting for: anything else answers at once (a waiting
      // .history lookup would hang promotion), and no trigger changes that answer.
      // Triggers are read on the first poll, then at most every other cap interval: the
      // segment is polled twice as often as the trigger objects for the same request count.
      const readTriggers = file.kind === 'segment' && Date.now() - triggersReadAt >= 2 * opts.maxPollIntervalMs;
      // A segment in the prefetch spool was downloaded from this namespace and verified: no need to ask the store.
      const [fresh, present] = await Promise.all([readTriggers ? triggerToObey() : trigger, isSpooled(ctx, file, destination).then(async (spooled) => spooled || (await ctx.store.head(key)) !== undefined)]);
      if (readTriggers) triggersReadAt = Date.now();
      trigger = fresh;
      if (trigger?.mode === 'fast' && !(present && restoredBefore(file, state.restoredUpTo))) {
        ctx.log.warn(`fast failover (trigger for "${trigger.target}" written at ${trigger.createdAt} by ${trigger.createdBy}): not restoring ${name}, so that recovery ends`);
        return 'not-found';
      }
      if (present && (await restoreWithPrefetch(ctx, file, destination, identity)) === 'restored') {
        if (dataDir && file.kind === 'segment' && !restoredBefore(file, state.restoredUpTo)) {
          await writeStandbyState(dataDir, { ...state, restoredUpTo: file.position });
        }
        if (failingSince !== undefined) ctx.log.info(`the repository answers again after ${Math.round((Date.now() - failingSince) / 1000)} s`);
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
      if (failingSince !== undefined) {
        ctx.log.info(`the repository answers again after ${Math.round((Date.now() - failingSince) / 1000)} s`);
        failingSince = undefined;
        started = Date.now(); // --max-wait counts only time in which a new segment could have been seen
      }
    } catch (err) {
      if (!holdOnFailure || !isWaitable(err)) throw err;
      const now = Date.now();
      failingSince ??= now;
      if (now - lastFailureLog >= FAILURE_LOG_EVERY_MS) {
        lastFailureLog = now;
        ctx.log.error(
          `cannot restore ${name}: ${(err as Error).message}; still waiting, so that recovery does not end (under recovery.signal any failure would promote this standby). Fix the cause, or fail over with "walbridge trigger fast" or SIGUSR1`,
        );
      }
    }
    if (opts.maxWaitMs > 0 && Date.now() - started >= opts.maxWaitMs && failingSince === undefined) {
      ctx.log.warn(
        `FAILOVER: no ${name} for ${Math.round(opts.maxWaitMs / 1000)} s (--max-wait): the primary looks gone; answering "not found" so that recovery ends and this standby is promoted`,
      );
      return 'not-found';
    }
    await opts.failover.sleep(failingSince === undefined ? interval : FAILURE_RETRY_MS);
    interval = Math.min(opts.maxPollIntervalMs, interval * 1.5);
  }
}

/** Has this standby restored `file`'s position already? (A fast trigger still serves those.) */
function restoredBefore(file: WalFileName, restoredUpTo: string | undefined): boolean {
  return restoredUpTo !== undefined && file.position !== undefined && file.position <= restoredUpTo;
}

/** Failures that an operator can fix while the standby waits: the store's, damaged objects, a missing key. */
function isWaitable(err: unknown): boolean {
  if (err instanceof StoreError) return true;
  return err instanceof WalbridgeError && ['corrupt', 'encryptionKey', 'foreignCluster', 'storeUnavailable', 'storeAccess', 'storeMissing', 'storeError'].includes(err.kind);
}
