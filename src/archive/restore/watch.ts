/**
 * What a waiting restore_command looks at on each poll (wait.ts): whether the segment is there
 * (the prefetch spool, else one keyed request), the failover triggers, and a newer timeline that
 * forked off the requested one. Triggers and timelines are read on the first poll, then at most
 * every other cap interval: the segment is polled twice as often for the same request count.
 */
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import type { RecoverySignal } from '../../wal/datadir.js';
import type { ClusterIdentity } from '../repo/identity.js';
import { walFileKey } from '../repo/layout.js';
import { findFork, type Fork } from '../repo/timelines.js';
import { ALL_STANDBYS, choose, readTrigger, triggerId, type Trigger } from '../repo/trigger.js';
import { namespaceIdentity, type FetchContext } from './download.js';
import { isSpooled, readServedNote } from './spool.js';
import { walDirOf } from '../local-layout.js';
import { readStandbyState, writeStandbyState } from './standby-state.js';

/** One poll's view. */
export interface Sight {
  /** The namespace's identity (undefined while nothing is archived). */
  readonly identity: ClusterIdentity | undefined;
  readonly present: boolean;
  /** The trigger this standby obeys, if any (leftovers of an earlier failover are not obeyed). */
  readonly trigger: Trigger | undefined;
  /** Where a newer timeline branched off the requested one, if one did. */
  readonly fork: Fork | undefined;
  /** How far this standby has restored (restoredSoFar), read for a fast trigger's rule only. */
  readonly restoredUpTo: string | undefined;
}

/** Whether the triggers are due again: the first poll, then every other cap interval. */
export function triggersDue(now: number, readAt: number, maxPollIntervalMs: number): boolean {
  return now - readAt >= 2 * maxPollIntervalMs;
}

export class Watch {
  private identity: ClusterIdentity | undefined;
  private trigger: Trigger | undefined;
  private fork: Fork | undefined;
  private readAt = -Infinity;
  private readonly triggers: Triggers;

  constructor(
    private readonly ctx: FetchContext,
    private readonly file: WalFileName,
    private readonly destination: string,
    private readonly standby: { readonly name: string | undefined; readonly dataDir: string | undefined; readonly signal: RecoverySignal | undefined },
    private readonly maxPollIntervalMs: number,
  ) {
    this.triggers = new Triggers(ctx, standby);
  }

  async look(): Promise<Sight> {
    const ctx = this.ctx;
    const file = this.file;
    this.identity ??= await namespaceIdentity(ctx);
    // Only segments are worth waiting for: anything else answers at once (a waiting .history
    // lookup would hang promotion), and no trigger changes that answer.
    const due = file.kind === 'segment' && triggersDue(Date.now(), this.readAt, this.maxPollIntervalMs);
    // A segment in the prefetch spool was downloaded from this namespace and verified: no need to ask the store.
    const [trigger, present, fork] = await Promise.all([
      due ? this.triggers.toObey(this.standby.signal) : this.trigger,
      isSpooled(ctx, file, this.destination).then(async (spooled) => spooled || (await ctx.store.head(walFileKey(ctx.namespace, file))) !== undefined),
      due ? findFork(ctx.store, ctx.namespace, file.timeline, ctx.keys) : this.fork,
    ]);
    if (due) this.readAt = Date.now();
    this.trigger = trigger;
    this.fork = fork;
    // Needed only for a fast trigger's exception: the state file is not read otherwise.
    const restoredUpTo = trigger?.mode === 'fast' && present && this.standby.dataDir ? await restoredSoFar(this.standby.dataDir, this.destination) : undefined;
    return { identity: this.identity, present, trigger, fork, restoredUpTo };
  }
}

/**
 * How far this standby has restored: its state file, or the segment bin/archive-fetch last served
 * from the spool by itself (it cannot write the state file), whichever is newer.
 */
async function restoredSoFar(dataDir: string, destination: string): Promise<string | undefined> {
  const walDir = walDirOf(destination);
  const [state, note] = await Promise.all([readStandbyState(dataDir), walDir ? readServedNote(walDir) : undefined]);
  const served = note === undefined ? undefined : parseWalFileName(note);
  const fromNote = served?.kind === 'segment' ? served.position : undefined;
  if (fromNote === undefined) return state.restoredUpTo;
  return state.restoredUpTo === undefined || fromNote > state.restoredUpTo ? fromNote : state.restoredUpTo;
}

/**
 * The trigger this standby obeys, if any: one for its name (--standby) or for every standby,
 * except those there before its recovery first looked (leftovers of an earlier failover, said so
 * once). Read by every waiting call's watch, and by the fetcher for bin/archive-fetch (clearance.ts).
 */
export class Triggers {
  private readonly warnedLeftovers = new Set<string>();

  constructor(
    private readonly ctx: FetchContext,
    private readonly standby: { readonly name: string | undefined; readonly dataDir: string | undefined },
  ) {}

  async toObey(signal: RecoverySignal | undefined): Promise<Trigger | undefined> {
    const ctx = this.ctx;
    const targets = this.standby.name ? [this.standby.name, ALL_STANDBYS] : [ALL_STANDBYS];
    const found = (await Promise.all(targets.map((t) => readTrigger(ctx.store, ctx.namespace, t)))).filter((t): t is Trigger => t !== undefined);
    const { obey, leftovers } = choose(found, await this.leftoverTriggers(found, signal));
    for (const t of leftovers) {
      if (this.warnedLeftovers.has(triggerId(t))) continue;
      this.warnedLeftovers.add(triggerId(t));
      ctx.log.warn(
        `ignoring the ${t.mode} trigger for "${t.target}" written at ${t.createdAt} by ${t.createdBy}: it was there before this standby's recovery first looked, a leftover of an earlier failover; remove it with "walbridge trigger clear", and write a new one to fail this standby over`,
      );
    }
    return obey;
  }

  /**
   * The ids of the triggers that were there when this recovery first looked: recorded at that
   * first look (in the standby's state, keyed by its signal file), read back afterwards.
   */
  private async leftoverTriggers(present: readonly Trigger[], signal: RecoverySignal | undefined): Promise<Set<string>> {
    const { dataDir } = this.standby;
    if (!dataDir || !signal) return new Set();
    const state = await readStandbyState(dataDir);
    if (state.recovery?.signal === signal.identity) return new Set(state.recovery.leftoverTriggers);
    const leftoverIds = present.map(triggerId);
    await writeStandbyState(dataDir, { ...state, recovery: { signal: signal.identity, leftoverTriggers: leftoverIds } });
    return new Set(leftoverIds);
  }
}
