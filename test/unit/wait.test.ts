/**
 * The waiting restore_command's logic (src/archive/restore/wait.ts, watch.ts) over the in-memory
 * driver: real pushes of synthesized segments, the real wait loop, triggers, backoff, timeline
 * forks and local failover requests, without a server. The end-to-end files run the same paths
 * through real PostgreSQL standbys and stores.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pushContext, pushWalFile } from '../../src/archive/push/push.js';
import { setTrigger } from '../../src/archive/repo/trigger.js';
import { failoverSwitch } from '../../src/archive/restore/failover.js';
import { readStandbyState } from '../../src/archive/restore/standby-state.js';
import { toDestination } from '../../src/archive/restore/prefetch.js';
import { beforeRestoring, nextInterval, waitForWalFile, whenAbsent, type WaitOptions } from '../../src/archive/restore/wait.js';
import type { Sight } from '../../src/archive/restore/watch.js';
import type { FetchContext } from '../../src/archive/restore/download.js';
import type { Settings } from '../../src/config/settings.js';
import { WalbridgeError } from '../../src/errors.js';
import { retryPolicy, withRetries } from '../../src/storage/retry.js';
import { createMemoryBucket, MemoryStore, removeMemoryBucket, setMemoryFault, type MemoryFault } from '../../src/storage/memory.js';
import { keptLines, SEGMENT, segmentBytes } from '../support/synthetic-wal.js';
import { parseWalFileName, type WalFileName } from '../../src/wal/names.js';
import { scratchDir } from '../support/scratch.js';

const SYSTEM_ID = 7_300_000_000_000_000_001n;
const NS = 'unit';

let dir: string;
let bucket: string;
let pgWal: string;
let requests: { operation: string; key: string }[];
let fault: MemoryFault | undefined;
let store: MemoryStore;
let log: ReturnType<typeof keptLines>;

beforeEach(async () => {
  dir = await scratchDir('wb-wait-');
  pgWal = path.join(dir, 'data', 'pg_wal');
  await mkdir(pgWal, { recursive: true });
  bucket = `wait-${Math.random().toString(36).slice(2)}`;
  createMemoryBucket(bucket);
  requests = [];
  fault = undefined;
  store = new MemoryStore({ bucket, prefix: 'repo' });
  setMemoryFault(bucket, (operation, key) => {
    requests.push({ operation, key });
    return fault?.(operation, key);
  });
  log = keptLines();
});

afterEach(async () => {
  removeMemoryBucket(bucket);
  await rm(dir, { recursive: true, force: true });
});

function ctx(): FetchContext {
  // As a command opens it: behind the one retry layer.
  const retry = retryPolicy(5);
  return { store: withRetries(store, retry), repository: `memory://${bucket}/repo`, namespace: NS, log, retry, prefetch: 0, keys: undefined };
}

/** Archives `name` as archive-push would (identity established by the first one). */
async function archive(name: string, content = segmentBytes(name, SYSTEM_ID)): Promise<Buffer> {
  const source = path.join(dir, 'source', name);
  await mkdir(path.dirname(source), { recursive: true });
  await writeFile(source, content);
  const settings = { namespace: NS, compress: 'none', compressLevel: undefined, encryption: undefined } as unknown as Settings;
  await pushWalFile(pushContext(settings, store, retryPolicy(5), keptLines()), source);
  return content;
}

function options(over: Partial<WaitOptions> = {}): WaitOptions {
  return { pollIntervalMs: 20, maxPollIntervalMs: 100, maxWaitMs: 0, standby: undefined, failover: failoverSwitch(), alive: () => true, ...over };
}

function wait(name: string, over: Partial<WaitOptions> = {}) {
  return waitForWalFile(ctx(), name, path.join(pgWal, 'RECOVERYXLOG'), options(over), toDestination);
}

const FIRST = '000000010000000000000001';
const SECOND = '000000010000000000000002';
const THIRD = '000000010000000000000003';

describe('waitForWalFile over the in-memory driver', () => {
  it('restores a segment that is archived while it waits, exactly, and records how far the standby got', async () => {
    await archive(FIRST);
    const waiting = wait(SECOND);
    await new Promise((r) => setTimeout(r, 300));
    const stored = await archive(SECOND);
    expect(await waiting).toBe('restored');
    expect((await readFile(path.join(pgWal, 'RECOVERYXLOG'))).equals(stored)).toBe(true);
    expect(await readStandbyState(path.join(dir, 'data'))).toMatchObject({ restoredUpTo: parseWalFileName(SECOND)!.position });
  });

  it('polls with growing waits up to the cap, and reads the triggers half as often as the segment', async () => {
    await archive(FIRST);
    const failover = failoverSwitch();
    const waiting = wait(SECOND, { failover, pollIntervalMs: 20, maxPollIntervalMs: 100 });
    await new Promise((r) => setTimeout(r, 1500));
    failover.request();
    expect(await waiting).toBe('not-found');
    const heads = requests.filter((r) => r.operation === 'head' && r.key.endsWith(SECOND)).length;
    const triggerReads = requests.filter((r) => r.key.includes('/trigger/')).length;
    // 20, 30, 45, 67, 100, 100… ms: about 18 polls in 1.5 s (not 75 at a fixed 20 ms, nor 10 at 100 ms from the start).
    expect(heads).toBeGreaterThanOrEqual(10);
    expect(heads).toBeLessThanOrEqual(20);
    // One trigger object (for "all") read every other cap interval: 200 ms, so about 8 in 1.5 s.
    expect(triggerReads).toBeGreaterThanOrEqual(3);
    expect(triggerReads).toBeLessThanOrEqual(heads / 1.5);
    expect(log.all).toContainEqual(expect.stringMatching(/SIGUSR1 received while waiting for .*02: fast failover/));
  });

  it('answers "not found" at once for a file that is not a segment (a .history lookup must not hang promotion)', async () => {
    await archive(FIRST);
    const started = Date.now();
    expect(await wait('00000002.history')).toBe('not-found');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('fails over fast on a trigger without restoring the segment, but serves again one it restored before', async () => {
    await archive(FIRST);
    await archive(SECOND);
    expect(await wait(SECOND)).toBe('restored'); // restored once, before the trigger
    await setTrigger(store, NS, 'fast', 'all');
    expect(await wait(SECOND)).toBe('restored'); // PostgreSQL asks again for what it replayed: it must get it
    await archive(THIRD);
    expect(await wait(THIRD)).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/fast failover \(trigger for "all".*not restoring .*03/));
  });

  it('fails over smart: every archived segment first, then "not found" for the first one missing', async () => {
    await archive(FIRST);
    await archive(SECOND);
    await setTrigger(store, NS, 'smart', 'all');
    expect(await wait(SECOND)).toBe('restored');
    expect(await wait(THIRD)).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/smart failover .* every archived segment is restored, .*03 is not archived/));
  });

  it('obeys only a trigger for this standby or for all, not one naming another standby', async () => {
    await archive(FIRST);
    await setTrigger(store, NS, 'fast', 'other-standby');
    const failover = failoverSwitch();
    const waiting = wait(SECOND, { standby: 'this-one', failover });
    await new Promise((r) => setTimeout(r, 400));
    await setTrigger(store, NS, 'fast', 'this-one');
    expect(await waiting).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/trigger for "this-one"/));
  });

  it('under recovery.signal ignores a trigger that was there before recovery first looked (a leftover), says so once, and obeys a new one', async () => {
    await writeFile(path.join(dir, 'data', 'recovery.signal'), '');
    await archive(FIRST);
    await setTrigger(store, NS, 'fast', 'all');
    const waiting = wait(SECOND);
    await new Promise((r) => setTimeout(r, 500));
    expect(log.all.filter((l) => l.includes('ignoring the fast trigger'))).toHaveLength(1);
    // A new failover request: cleared and written again after recovery first looked.
    await store.deleteMany([`${NS}/trigger/all.json`]);
    await new Promise((r) => setTimeout(r, 1100)); // the trigger's createdAt is to the second
    await setTrigger(store, NS, 'fast', 'all');
    expect(await waiting).toBe('not-found');
    expect(log.all.filter((l) => l.includes('ignoring the fast trigger'))).toHaveLength(1);
  });

  it('fails over after --max-wait without the segment, and not before', async () => {
    await archive(FIRST);
    const started = Date.now();
    expect(await wait(SECOND, { maxWaitMs: 600 })).toBe('not-found');
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(log.all).toContainEqual(expect.stringMatching(/FAILOVER: no .*02 for 1 s \(--max-wait\)/));
  });

  it('answers "not found" on pg_ctl promote', async () => {
    await archive(FIRST);
    const waiting = wait(SECOND);
    await new Promise((r) => setTimeout(r, 200));
    await writeFile(path.join(dir, 'data', 'promote'), '');
    expect(await waiting).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/promotion requested \(pg_ctl promote\)/));
  });

  it('stops without an answer when the server that asked is gone', async () => {
    await archive(FIRST);
    let alive = true;
    const waiting = wait(SECOND, { alive: () => alive });
    await new Promise((r) => setTimeout(r, 200));
    alive = false;
    await expect(waiting).rejects.toMatchObject({ kind: 'stopServer' });
  });

  it('follows a newer timeline that forked off before the segment: "not found" under standby.signal, exit 200 under recovery.signal', async () => {
    await archive(FIRST);
    await archive(SECOND);
    // Timeline 2 branched off timeline 1 inside segment 2 (at 0/180000, with 1 MiB segments).
    await archive('00000002.history', Buffer.from('1\t0/180000\tno recovery target specified\n'));
    await writeFile(path.join(dir, 'data', 'standby.signal'), '');
    expect(await wait(THIRD)).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/timeline 2 was promoted from timeline 1 at 0\/180000/));
    await rm(path.join(dir, 'data', 'standby.signal'));
    await writeFile(path.join(dir, 'data', 'recovery.signal'), '');
    const err = await wait(THIRD).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WalbridgeError);
    expect((err as WalbridgeError).kind).toBe('stopServer');
  });

  it('says a missing bucket is missing instead of waiting for ever', async () => {
    removeMemoryBucket(bucket);
    await expect(wait(SECOND)).rejects.toMatchObject({ kind: 'no-bucket' });
  });

  it('serves a segment from the store after a transient failure of a poll (the store retried)', async () => {
    await archive(FIRST);
    await archive(SECOND);
    let failures = 2;
    const { StoreError } = await import('../../src/storage/store.js');
    fault = (operation, key) => (operation === 'get' && key.endsWith(SECOND) && failures-- > 0 ? new StoreError('transient', 'connection reset') : undefined);
    expect(await wait(SECOND)).toBe('restored');
    expect(failures).toBe(-1);
  });
});

describe('a poll decides', () => {
  const segment = parseWalFileName(SECOND)!;
  const history = parseWalFileName('00000002.history')!;
  const identity = { systemIdentifier: String(SYSTEM_ID), segmentSize: SEGMENT } as Sight['identity'];
  const trigger = (mode: 'fast' | 'smart') => ({ mode, target: 'all', createdAt: '', createdBy: '' }) as unknown as NonNullable<Sight['trigger']>;
  const sight = (over: Partial<Sight>): Sight => ({ identity, present: false, trigger: undefined, fork: undefined, restoredUpTo: undefined, ...over });
  const at = (f: WalFileName) => f;

  it.each([
    ['an archived segment is restored', sight({ present: true }), 'restore'],
    ['a missing one is looked for further', sight({}), 'absent'],
    ['a fast trigger ends recovery, archived or not', sight({ present: true, trigger: trigger('fast') }), 'fast-failover'],
    ['a fast trigger still serves a segment restored before', sight({ present: true, trigger: trigger('fast'), restoredUpTo: segment.position }), 'restore'],
    ['a smart trigger restores what is archived', sight({ present: true, trigger: trigger('smart') }), 'restore'],
    [
      'a segment past a fork follows the newer timeline, even if stored',
      sight({ present: true, fork: { timeline: 1, newer: 2, switchpoint: 0x100000n } as Sight['fork'] }),
      'follow-fork',
    ],
    ['a segment before the fork is restored', sight({ present: true, fork: { timeline: 1, newer: 2, switchpoint: 0x300000n } as Sight['fork'] }), 'restore'],
  ])('before restoring: %s', (_, s, step) => {
    expect(beforeRestoring(at(segment), s)).toBe(step);
  });

  it.each([
    ['a file that is not a segment is not waited for', history, undefined, 0, 0, 'not-archived'],
    ['a smart trigger ends the wait', segment, trigger('smart'), 0, 0, 'smart-failover'],
    ['--max-wait ends it once passed', segment, undefined, 5000, 5000, 'max-wait'],
    ['and not before', segment, undefined, 4999, 5000, 'poll-again'],
    ['--max-wait 0 waits for ever', segment, undefined, 1e9, 0, 'poll-again'],
  ] as const)('when absent: %s', (_, file, t, waited, maxWait, step) => {
    expect(whenAbsent(file, t, waited, maxWait)).toBe(step);
  });

  it('grows the pause between polls by half up to the cap', () => {
    const pauses = [50];
    for (let i = 0; i < 8; i++) pauses.push(nextInterval(pauses[pauses.length - 1]!, 1000));
    expect(pauses).toEqual([50, 75, 112.5, 168.75, 253.125, 379.6875, 569.53125, 854.296875, 1000]);
  });
});

describe('the prefetch spool, over the in-memory driver', () => {
  it('fills the window after a restored segment, and serves the next one from it without a request for it', async () => {
    for (const name of [FIRST, SECOND, THIRD]) await archive(name);
    const withPrefetch = { ...ctx(), prefetch: 2 };
    const destination = path.join(pgWal, 'RECOVERYXLOG');
    expect(await waitForWalFile(withPrefetch, FIRST, destination, options(), toDestination)).toBe('restored');
    requests.length = 0;
    expect(await waitForWalFile(withPrefetch, SECOND, destination, options(), toDestination)).toBe('restored');
    expect((await readFile(destination)).equals(segmentBytes(SECOND, SYSTEM_ID))).toBe(true);
    // Neither a GET nor a HEAD of the segment: it was in the spool, verified when it arrived.
    expect(requests.filter((r) => r.key.endsWith(SECOND))).toEqual([]);
  });

  it('refuses a spooled segment damaged on disk, removes it, and the next try fetches it from the store', async () => {
    for (const name of [FIRST, SECOND]) await archive(name);
    const withPrefetch = { ...ctx(), prefetch: 1 };
    const destination = path.join(pgWal, 'RECOVERYXLOG');
    expect(await waitForWalFile(withPrefetch, FIRST, destination, options(), toDestination)).toBe('restored');
    const spooled = (await readdirRecursive(path.join(pgWal, 'walbridge', 'prefetch'))).find((f) => f.endsWith(SECOND))!;
    const damaged = segmentBytes(SECOND, SYSTEM_ID);
    damaged.writeBigUInt64LE(SYSTEM_ID + 1n, 24); // another cluster's header
    await writeFile(spooled, damaged);
    // A failure (held under recovery.signal by the call, restore/hold.ts), never the damaged bytes.
    await expect(waitForWalFile(withPrefetch, SECOND, destination, options(), toDestination)).rejects.toMatchObject({ kind: 'foreignCluster' });
    await expect(readFile(destination)).resolves.toSatisfy((b: Buffer) => b.equals(segmentBytes(FIRST, SYSTEM_ID)));
    expect(await waitForWalFile(withPrefetch, SECOND, destination, options(), toDestination)).toBe('restored');
    expect((await readFile(destination)).equals(segmentBytes(SECOND, SYSTEM_ID))).toBe(true);
  });
});

async function readdirRecursive(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  return (await readdir(dir, { recursive: true })).map((f) => path.join(dir, String(f)));
}
