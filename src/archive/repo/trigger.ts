/**
 * Failover by trigger object. An operator writes `<namespace>/trigger/<standby>` (or `all`);
 * waiting fetches see it within one poll interval.
 *
 * smart: keep restoring what is archived; answer "not found" at the first absent segment.
 * fast:  answer "not found" for anything not restored yet.
 *
 * Leftover rule: a trigger that was already there when a standby's recovery first looked is a
 * leftover of an earlier failover and never concerns it (restore/watch.ts remembers which those were, per
 * recovery, in standby-state.ts); a trigger written after that first look does. No clock of one
 * host is compared with another's.
 */
import { hostname, userInfo } from 'node:os';
import { WalbridgeError } from '../../errors.js';
import type { Store } from '../../storage/store.js';
import { createJsonObject, readJsonObject } from './json-object.js';
import { triggerKey, triggerPrefix } from './layout.js';

export type TriggerMode = 'smart' | 'fast';
export const ALL_STANDBYS = 'all';

export interface Trigger {
  readonly format: 1;
  readonly mode: TriggerMode;
  /** A standby name, or `all`. */
  readonly target: string;
  readonly createdAt: string;
  readonly createdBy: string;
}

export async function setTrigger(store: Store, namespace: string, mode: TriggerMode, target: string): Promise<Trigger> {
  const key = triggerKey(namespace, target);
  const trigger: Trigger = { format: 1, mode, target, createdAt: new Date().toISOString(), createdBy: whoAmI() };
  // A newer trigger replaces an older one (smart, then fast when smart takes too long).
  await store.deleteMany([key]);
  if ((await createJsonObject(store, key, trigger)) === 'exists') {
    throw new WalbridgeError('conflict', `another trigger for ${target} was written at the same moment; check "walbridge trigger status"`);
  }
  return trigger;
}

/** Removes the trigger for `target`; reports whether there was one. */
export async function clearTrigger(store: Store, namespace: string, target: string): Promise<boolean> {
  const key = triggerKey(namespace, target);
  const existed = (await store.head(key)) !== undefined;
  await store.deleteMany([key]);
  return existed;
}

export async function readTrigger(store: Store, namespace: string, target: string): Promise<Trigger | undefined> {
  const key = triggerKey(namespace, target);
  const value = await readJsonObject(store, key);
  if (value === undefined) return undefined;
  const t = value as Partial<Trigger>;
  if (t.format !== 1 || (t.mode !== 'smart' && t.mode !== 'fast') || typeof t.createdAt !== 'string' || Number.isNaN(Date.parse(t.createdAt))) {
    throw new WalbridgeError('corrupt', `${store.location}/${key} is not a valid trigger; clear it with "walbridge trigger clear"`);
  }
  return t as Trigger;
}

/** Every trigger of the namespace, for `trigger status`. */
export async function listTriggers(store: Store, namespace: string): Promise<Trigger[]> {
  const out: Trigger[] = [];
  for await (const entry of store.list(triggerPrefix(namespace))) {
    const trigger = await readTrigger(store, namespace, entry.key.slice(triggerPrefix(namespace).length));
    if (trigger) out.push(trigger);
  }
  return out;
}

/** What names one writing of a trigger (a trigger written again is another one). */
export function triggerId(trigger: Trigger): string {
  return `${trigger.target}/${trigger.mode}/${trigger.createdAt}/${trigger.createdBy}`;
}

/** Of the triggers that are not leftovers (by triggerId), the one to obey: fast wins over smart. */
export function choose(triggers: readonly (Trigger | undefined)[], leftoverIds: ReadonlySet<string>): { obey?: Trigger; leftovers: Trigger[] } {
  const present = triggers.filter((t): t is Trigger => t !== undefined);
  const applicable = present.filter((t) => !leftoverIds.has(triggerId(t)));
  const obey = applicable.find((t) => t.mode === 'fast') ?? applicable[0];
  return { obey, leftovers: present.filter((t) => !applicable.includes(t)) };
}

function whoAmI(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers)
  }
  return `${user}@${hostname()}`;
}
