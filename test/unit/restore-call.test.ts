/**
 * One restore_command call (src/archive/restore/call.ts) over the in-memory driver: the settings
 * read at every attempt, the hold-or-stop rule under recovery.signal, the spool answered before
 * any store is opened, cleanup after a restore. Settings resolve as a command's do, with
 * memory:// registered for this file only (commands never see it). No background fetcher is
 * involved (--prefetch 0): its socket path is e2e's (waiting-fetch, prefetch, lifetimes).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pushContext, pushWalFile } from '../../src/archive/push/push.js';
import { setTrigger } from '../../src/archive/repo/trigger.js';
import { restoreCall, type RestoreCall } from '../../src/archive/restore/call.js';
import { failoverSwitch } from '../../src/archive/restore/failover.js';
import { toDestination } from '../../src/archive/restore/prefetch.js';
import { waitForWalFile } from '../../src/archive/restore/wait.js';
import { resolveSettings, type Settings } from '../../src/config/settings.js';
import { WalbridgeError } from '../../src/errors.js';
import { createMemoryBucket, MemoryStore, memoryDriver, removeMemoryBucket, setMemoryFault } from '../../src/storage/memory.js';
import { registerDriver } from '../../src/storage/registry.js';
import { retryPolicy, withRetries } from '../../src/storage/retry.js';
import { StoreError } from '../../src/storage/store.js';
import { keptLines, segmentBytes } from '../support/synthetic-wal.js';
import { scratchDir } from '../support/scratch.js';

const SYSTEM_ID = 7_300_000_000_000_000_002n;
const NS = 'call';
const FIRST = '000000010000000000000001';
const SECOND = '000000010000000000000002';
const THIRD = '000000010000000000000003';

let dir: string;
let dataDir: string;
let bucket: string;
let log: ReturnType<typeof keptLines>;
let requests: string[];

beforeAll(() => registerDriver(memoryDriver));

beforeEach(async () => {
  dir = await scratchDir('wb-call-');
  dataDir = path.join(dir, 'data');
  await mkdir(path.join(dataDir, 'pg_wal'), { recursive: true });
  bucket = `call-${Math.random().toString(36).slice(2)}`;
  createMemoryBucket(bucket);
  requests = [];
  setMemoryFault(bucket, (operation, key) => void requests.push(`${operation} ${key}`));
  log = keptLines();
});

afterEach(async () => {
  removeMemoryBucket(bucket);
  await rm(dir, { recursive: true, force: true });
});

const flags = (over: Record<string, string> = {}) => ({
  repo: `memory://${bucket}/repo`,
  namespace: NS,
  prefetch: '0',
  'poll-interval': '0.02',
  'max-poll-interval': '0.1',
  ...over,
});
const settingsOf =
  (over: Record<string, string> = {}) =>
  () =>
    resolveSettings({ flags: flags(over), env: {}, command: 'fetch' });

async function archive(name: string): Promise<void> {
  const source = path.join(dir, 'source', name);
  await mkdir(path.dirname(source), { recursive: true });
  await writeFile(source, segmentBytes(name, SYSTEM_ID));
  const store = withRetries(new MemoryStore({ bucket, prefix: 'repo' }), retryPolicy(5));
  await pushWalFile(pushContext((await settingsOf()()) as Settings, store, retryPolicy(5), keptLines()), source);
}

/** `name` restored to %p as a call with --prefetch 1 does it, leaving the next segment in the spool; returns %p. */
async function restoredWithPrefetch(name: string): Promise<string> {
  const store = withRetries(new MemoryStore({ bucket, prefix: 'repo' }), retryPolicy(5));
  const ctx = { store, repository: `memory://${bucket}/repo`, namespace: NS, log, retry: retryPolicy(5), prefetch: 1, keys: undefined };
  const destination = path.join(dataDir, 'pg_wal', 'RECOVERYXLOG');
  const wait = { pollIntervalMs: 20, maxPollIntervalMs: 100, maxWaitMs: 0, standby: undefined, failover: failoverSwitch(), alive: () => true };
  expect(await waitForWalFile(ctx, name, destination, wait, toDestination)).toBe('restored');
  return destination;
}

function call(walFile: string, over: Partial<RestoreCall> = {}): Promise<'restored' | 'not-found'> {
  return restoreCall({
    walFile,
    destination: path.join(dataDir, 'pg_wal', 'RECOVERYXLOG'),
    restart: undefined,
    wait: true,
    cleanup: false,
    includeBackup: false,
    log,
    failover: failoverSwitch(),
    settings: settingsOf(),
    env: {},
    ...over,
  });
}

describe('restoreCall over the in-memory driver', () => {
  it('restores an archived segment to %p, exactly', async () => {
    await archive(FIRST);
    expect(await call(FIRST)).toBe('restored');
    expect((await readFile(path.join(dataDir, 'pg_wal', 'RECOVERYXLOG'))).equals(segmentBytes(FIRST, SYSTEM_ID))).toBe(true);
  });

  it('under recovery.signal holds while the store fails, says so, and goes on by itself once it answers', async () => {
    await writeFile(path.join(dataDir, 'recovery.signal'), '');
    await archive(FIRST);
    setMemoryFault(bucket, () => new StoreError('denied', 'AccessDenied (the role lost its permission)'));
    const started = Date.now();
    const answer = call(FIRST);
    await new Promise((r) => setTimeout(r, 2500));
    expect(log.all).toContainEqual(expect.stringMatching(/cannot restore .*01: access denied: AccessDenied.*; holding: under recovery\.signal/));
    setMemoryFault(bucket, undefined);
    expect(await answer).toBe('restored');
    expect(Date.now() - started).toBeGreaterThanOrEqual(2500);
    expect(log.all).toContainEqual(expect.stringMatching(/going on after \d+ s of holding/));
  });

  it('under recovery.signal reads the settings again at each attempt: a config file mended while it holds resumes it', async () => {
    await writeFile(path.join(dataDir, 'recovery.signal'), '');
    await archive(FIRST);
    let reads = 0;
    const settings = async () => {
      reads++;
      if (reads < 3) throw new WalbridgeError('config', 'bad compress in /etc/walbridge.conf', { mendableOutside: true });
      return settingsOf()();
    };
    expect(await call(FIRST, { settings })).toBe('restored');
    expect(reads).toBe(3);
  });

  it('under recovery.signal stops the server (200) on what nothing can mend while it waits, never "not found"', async () => {
    await writeFile(path.join(dataDir, 'recovery.signal'), '');
    const err = await call(FIRST, { settings: settingsOf({ timeout: '0' }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WalbridgeError);
    expect((err as WalbridgeError).kind).toBe('stopServer');
    expect((err as WalbridgeError).message).toMatch(/--timeout/);
  });

  it('under recovery.signal answers "not found" to SIGUSR1 while it holds', async () => {
    await writeFile(path.join(dataDir, 'recovery.signal'), '');
    setMemoryFault(bucket, () => new StoreError('transient', 'connection refused'));
    const failover = failoverSwitch();
    const answer = call(FIRST, { failover, settings: settingsOf({ timeout: '1' }) });
    await new Promise((r) => setTimeout(r, 1500));
    failover.request();
    expect(await answer).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/SIGUSR1 received while holding/));
  });

  it('under standby.signal reports a store failure with its own status (PostgreSQL retries by itself)', async () => {
    await writeFile(path.join(dataDir, 'standby.signal'), '');
    setMemoryFault(bucket, () => new StoreError('denied', 'AccessDenied'));
    await expect(call(FIRST)).rejects.toMatchObject({ kind: 'denied' });
  });

  it('without waiting answers a spooled segment before any store is opened', async () => {
    for (const name of [FIRST, SECOND]) await archive(name);
    const destination = await restoredWithPrefetch(FIRST);
    requests.length = 0;
    expect(await call(SECOND, { wait: false })).toBe('restored');
    expect(requests).toEqual([]);
    expect((await readFile(destination)).equals(segmentBytes(SECOND, SYSTEM_ID))).toBe(true);
    expect(log.all).toContainEqual(expect.stringMatching(/restored .*02 from the prefetch spool/));
  });

  it('waiting, looks at the triggers before the spool: a fast trigger is obeyed even for a spooled segment', async () => {
    for (const name of [FIRST, SECOND]) await archive(name);
    await restoredWithPrefetch(FIRST);
    await setTrigger(new MemoryStore({ bucket, prefix: 'repo' }), NS, 'fast', 'all');
    expect(await call(SECOND)).toBe('not-found');
    expect(log.all).toContainEqual(expect.stringMatching(/fast failover .*not restoring .*02/));
  });

  it('with --cleanup deletes the segments before %r once after a restore, and never fails the restore for it', async () => {
    for (const name of [FIRST, SECOND, THIRD]) await archive(name);
    expect(await call(THIRD, { cleanup: true, restart: SECOND })).toBe('restored');
    const left: string[] = [];
    for await (const o of new MemoryStore({ bucket, prefix: 'repo' }).list(`${NS}/wal/`)) left.push(path.basename(o.key));
    expect(left).toEqual([SECOND, THIRD]);
    // The same %r again: no listing, no delete.
    requests.length = 0;
    expect(await call(THIRD, { cleanup: true, restart: SECOND })).toBe('restored');
    expect(requests.filter((r) => r.startsWith('list') || r.startsWith('delete'))).toEqual([]);
  });
});
