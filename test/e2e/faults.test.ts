/**
 * Network faults between walbridge and the store (test/servers/fault-proxy.ts in front of
 * radosgw and of a private GCS test server): push and fetch either succeed after retries or
 * fail within the --timeout bound with a clear message; never report success without a stored,
 * verified object; never leave a partial %p.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backgroundListening } from '../support/background.js';
import { SegmentStreamer } from '../../src/archive/stream/streamer.js';
import { chainEnd, listChunks, longestPrefixChain } from '../../src/archive/repo/stream-chunks.js';
import { ExitCode } from '../../src/errors.js';
import { GcsStore } from '../../src/storage/gcs.js';
import { S3Store } from '../../src/storage/s3.js';
import { retryPolicy, withRetries } from '../../src/storage/retry.js';
import { StoreError, type Store } from '../../src/storage/store.js';
import { parseWalFileName, segmentNumber } from '../../src/wal/names.js';
import { startFaultProxy, type Fault, type FaultProxy } from '../servers/fault-proxy.js';
import { startGcsServer, type GcsTestServer } from '../servers/gcs/server.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli, type CliResult } from '../support/cli.js';
import { createRepo } from '../support/repos.js';
import { fakeDataDir } from '../support/standby-dir.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
beforeAll(async () => {
  wal = await generateWalSegments(3);
}, 180_000);

/** The time bound the tests give walbridge (--timeout), and the slack allowed around it. */
const TIMEOUT_S = 3;
const BOUND_MS = TIMEOUT_S * 1000 * 2 + 5_000;

interface Target {
  /** Environment pointing walbridge at the store through the proxy. */
  env: Record<string, string>;
  /** The same store, directly: what is really stored. */
  direct: Store;
  /** A driver in this process reaching the store through the proxy, as walbridge's would with --timeout `timeoutS`. */
  throughProxy(timeoutS: number): Store;
  proxy: FaultProxy;
  gcs?: GcsTestServer;
}

async function s3Target(): Promise<Target> {
  const repo = await createRepo('s3');
  const endpoint = new URL(repo.env['AWS_ENDPOINT_URL_S3']!);
  const proxy = await startFaultProxy({ host: endpoint.hostname, port: Number(endpoint.port) });
  const bucket = new URL(repo.url).hostname;
  return {
    env: { ...repo.env, WALBRIDGE_REPO: repo.url, AWS_ENDPOINT_URL_S3: proxy.url },
    direct: repo.store(),
    throughProxy: (timeoutS) =>
      new S3Store({ bucket, prefix: 'walbridge', endpoint: proxy.url, pathStyle: true, checksum: 'when-required', idleTimeoutMs: timeoutS * 1000 }),
    proxy,
  };
}

async function gcsTarget(): Promise<Target> {
  const gcs = await startGcsServer();
  gcs.createBucket('faults');
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: gcs.port });
  return {
    env: { WALBRIDGE_REPO: 'gs://faults/wal', STORAGE_EMULATOR_HOST: proxy.url },
    direct: new GcsStore({ bucket: 'faults', prefix: 'wal', endpoint: gcs.url }),
    throughProxy: (timeoutS) => new GcsStore({ bucket: 'faults', prefix: 'wal', endpoint: proxy.url, idleTimeoutMs: timeoutS * 1000 }),
    proxy,
    gcs,
  };
}

describe.each([
  ['s3', s3Target],
  ['gcs', gcsTarget],
] as const)('network faults between walbridge and %s', (_backend, makeTarget) => {
  let t: Target;
  let n = 0;
  let work: string;
  beforeAll(async () => {
    t = await makeTarget();
    work = await scratchDir('wb-faults-');
  });
  afterAll(async () => {
    await t.proxy.close();
    await t.gcs?.close();
    await rm(work, { recursive: true, force: true });
  });

  const env = (namespace: string, timeoutS = TIMEOUT_S) => ({ ...t.env, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_TIMEOUT: String(timeoutS) });
  const push = (namespace: string, i: number, timeoutS?: number) => runCli('archive-push', [wal.segments[i]!], env(namespace, timeoutS));
  const fetchTo = (namespace: string, i: number, dest: string, timeoutS?: number) =>
    runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[i]!), dest], env(namespace, timeoutS));
  const stored = async (namespace: string, i: number) => (await t.direct.head(`${namespace}/wal/${path.basename(wal.segments[i]!)}`)) !== undefined;
  /** Pushes segment i with the proxy healthy: a fetch test needs something to fetch. */
  const seed = async (namespace: string, i: number) => {
    t.proxy.set({ kind: 'none' });
    expect((await push(namespace, i)).status).toBe(0);
  };
  const sameAsSegment = async (file: string, i: number) => (await readFile(file)).equals(await readFile(wal.segments[i]!));
  const leftovers = async () => (await readdir(work)).filter((f) => f.startsWith('.'));

  it('added latency (150 ms each way): push and fetch succeed, byte for byte', async () => {
    const ns = `lat${++n}`;
    t.proxy.set({ kind: 'latency', ms: 150 });
    const pushed = await push(ns, 0);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(await stored(ns, 0)).toBe(true);
    const dest = path.join(work, `lat-${n}`);
    expect((await fetchTo(ns, 0, dest)).status).toBe(0);
    expect(await sameAsSegment(dest, 0)).toBe(true);
  });

  it('connections reset after 16 KiB, a few times: retried, then stored and restored verified', async () => {
    // --timeout bounds the whole push or fetch, the 5 MiB transfer after the resets included.
    const ns = `rst${++n}`;
    t.proxy.set({ kind: 'reset-after', bytes: 16 * 1024, connections: 3 });
    const pushed = await push(ns, 1, 15);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(await stored(ns, 1)).toBe(true);
    t.proxy.set({ kind: 'reset-after', bytes: 16 * 1024, connections: 3 });
    const dest = path.join(work, `rst-${n}`);
    const fetched = await fetchTo(ns, 1, dest, 15);
    expect(fetched.status, fetched.stderr).toBe(0);
    expect(await sameAsSegment(dest, 1)).toBe(true);
  });

  it('every connection reset: push and fetch fail within the bound (exit 10), nothing stored, no %p', async () => {
    const ns = `rsta${++n}`;
    await seed(ns, 0);
    t.proxy.set({ kind: 'reset-after', bytes: 1024 });
    let started = Date.now();
    const pushed = await push(ns, 1);
    expect(pushed.status).toBe(ExitCode.storeUnavailable);
    expect(pushed.stderr).toMatch(/ERROR: store unreachable or failing/);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
    expect(await stored(ns, 1)).toBe(false);
    started = Date.now();
    const dest = path.join(work, `rsta-${n}`);
    const fetched = await fetchTo(ns, 0, dest);
    expect(fetched.status).toBe(ExitCode.storeUnavailable);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
    await expect(readFile(dest)).rejects.toThrow(/ENOENT/);
    expect(await leftovers()).toEqual([]);
  });

  it('a black hole (accepts, never answers): push and fetch fail within the bound (exit 10), nothing stored, no %p', async () => {
    const ns = `bh${++n}`;
    await seed(ns, 0);
    t.proxy.set({ kind: 'blackhole' });
    let started = Date.now();
    const pushed = await push(ns, 1);
    expect(pushed.status, pushed.stderr).toBe(ExitCode.storeUnavailable);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
    started = Date.now();
    const dest = path.join(work, `bh-${n}`);
    expect((await fetchTo(ns, 0, dest)).status).toBe(ExitCode.storeUnavailable);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
    await expect(readFile(dest)).rejects.toThrow(/ENOENT/);
    t.proxy.set({ kind: 'none' });
    expect(await stored(ns, 1)).toBe(false);
  });

  it('a slow trickle of answers (2 MiB/s): the fetch completes, verified', async () => {
    const ns = `tr${++n}`;
    await seed(ns, 2);
    t.proxy.set({ kind: 'trickle', bytesPerSecond: 2 * 1024 * 1024 });
    const dest = path.join(work, `tr-${n}`);
    // Bounded by 10 s rather than 3: the trickle alone takes most of 3 s for this segment on a busy machine.
    const fetched = await fetchTo(ns, 2, dest, 10);
    expect(fetched.status, fetched.stderr).toBe(0);
    expect(await sameAsSegment(dest, 2)).toBe(true);
  });
});

// HTTP error answers come from the GCS test server itself (radosgw has no switch for them).
describe('GCS error answers', () => {
  let t: Target;
  let n = 0;
  beforeAll(async () => {
    t = await gcsTarget();
  });
  afterAll(async () => {
    await t.proxy.close();
    await t.gcs?.close();
  });
  const env = (namespace: string) => ({ ...t.env, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_TIMEOUT: String(TIMEOUT_S) });
  const push = (namespace: string, i: number) => runCli('archive-push', [wal.segments[i]!], env(namespace));
  const stored = async (namespace: string, i: number) => (await t.direct.head(`${namespace}/wal/${path.basename(wal.segments[i]!)}`)) !== undefined;

  it('503 answers, then recovery: stored after retries; 500 for everything: exit 10 within the bound', async () => {
    const ns = `e5${++n}`;
    t.proxy.set({ kind: 'none' });
    t.gcs!.faults.failNext(3, 503);
    const pushed = await push(ns, 0);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(pushed.stderr).toMatch(/retrying/);
    expect(await stored(ns, 0)).toBe(true);
    t.gcs!.faults.failNext(100_000, 500);
    const started = Date.now();
    const failed = await push(ns, 1);
    t.gcs!.faults.failNext(0, 500);
    expect(failed.status).toBe(ExitCode.storeUnavailable);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
    expect(await stored(ns, 1)).toBe(false);
  });
});

/**
 * --timeout bounds each operation end to end, whatever the path: a push and a fetch without
 * waiting (each also as served by the background pusher or fetcher), one chunk shipment of
 * `walbridge stream`, the listing of `walbridge status`. Two faults each: answers (or a body)
 * trickling in so slowly that the operation cannot finish in time although the connection never
 * idles, and a body cut off midway after moving slowly, so that every attempt takes most of
 * --timeout (before one deadline per operation, retries nested in each other each got a fresh one).
 */
const OP_TIMEOUT_S = 3;
/**
 * How much longer than --timeout a command may take: Node's start and loading the SDK before the
 * operation begins (up to a second on a loaded 2-core machine, two with other test files beside
 * it), the aborted attempt unwinding, the exit.
 */
const OP_MARGIN_MS = 3_000;

type Backend = 's3' | 'gcs';
type Faults = readonly (readonly [string, Fault])[];
const trickle = (bytesPerSecond: number): readonly [string, Fault] => [`its answers trickle in at ${bytesPerSecond} B/s`, { kind: 'trickle', bytesPerSecond }];
const uploadCut: readonly [string, Fault] = [
  'the upload is cut off after 80 KiB sent at 32 KiB/s',
  { kind: 'trickle', upstream: true, bytesPerSecond: 32 * 1024, resetAfter: 80 * 1024 },
];

/*
 * Where answers trickle in, the rate is chosen so that each answer's headers still arrive within
 * --timeout (radosgw's are about 450 bytes, the GCS test server's 170, with longer JSON bodies):
 * what must end the command is its operation's deadline, not some SDK's per-request timeout.
 */
const pushFaults = (backend: Backend): Faults => [trickle(backend === 's3' ? 300 : 400), uploadCut];
const fetchFaults: Faults = [
  ['the segment trickles in at 256 KiB/s', { kind: 'trickle', bytesPerSecond: 256 * 1024 }],
  ['the download is cut off after 160 KiB received at 64 KiB/s', { kind: 'trickle', bytesPerSecond: 64 * 1024, resetAfter: 160 * 1024 }],
];
/** A chunk's answer is its headers alone: slower than --timeout allows. */
const streamFaults: Faults = [trickle(60), uploadCut];
const statusFaults = (backend: Backend): Faults => [
  trickle(backend === 's3' ? 300 : 70),
  ['each answer is cut off after 1000 B received at 400 B/s', { kind: 'trickle', bytesPerSecond: 400, resetAfter: 1000 }],
];

/** How long each path took to give up, shown with WALBRIDGE_SHOW_TIMINGS=1. */
const timings: string[] = [];
afterAll(() => {
  if (process.env['WALBRIDGE_SHOW_TIMINGS']) console.log(`giving up against --timeout ${OP_TIMEOUT_S} s:\n${timings.join('\n')}`);
});

describe.each([
  ['s3', s3Target],
  ['gcs', gcsTarget],
] as const)('--timeout bounds each operation end to end through %s', (backend, makeTarget) => {
  let t: Target;
  let n = 0;
  let work: string;
  beforeAll(async () => {
    t = await makeTarget();
    work = await scratchDir('wb-deadline-');
  });
  afterAll(async () => {
    await t.proxy.close();
    await t.gcs?.close();
    await rm(work, { recursive: true, force: true });
  });

  const env = (namespace: string, extra: Record<string, string> = {}) => ({
    ...t.env,
    WALBRIDGE_NAMESPACE: namespace,
    WALBRIDGE_TIMEOUT: String(OP_TIMEOUT_S),
    WALBRIDGE_BACKGROUND_IDLE: '10',
    ...extra,
  });
  const name = (i: number) => path.basename(wal.segments[i]!);
  /** Puts `fault` on every connection from now on, the kept-alive ones of background processes included. */
  const inject = (fault: Fault) => {
    t.proxy.set(fault);
    t.proxy.resetAll();
  };
  const heal = () => inject({ kind: 'none' });
  const pushDirect = (namespace: string, i: number, ...flags: string[]) =>
    runCli('archive-push', ['--push-concurrency', '1', ...flags, wal.segments[i]!], env(namespace));
  // Setting the stage, and what follows a healed fault, is not what is measured: a healthy call
  // gets a --timeout a busy machine cannot miss (a Node start, the SDK and a 16 MiB fetch can take
  // 3 s on two loaded cores).
  const HEALTHY = ['--timeout', '30'];
  const seed = async (namespace: string, i: number) => expect((await pushDirect(namespace, i, ...HEALTHY)).status).toBe(0);
  /** The stored segment, fetched with a healthy store, is byte for byte the one pushed. */
  const restoresIntact = async (namespace: string, i: number) => {
    const dest = path.join(work, `check-${namespace}-${i}`);
    const r = await runCli('archive-fetch', ['--no-wait', ...HEALTHY, name(i), dest], env(namespace));
    expect(r.status, r.stderr).toBe(0);
    expect((await readFile(dest)).equals(await readFile(wal.segments[i]!))).toBe(true);
  };
  const until = async (condition: () => boolean | Promise<boolean>, what: string) => {
    for (const deadline = Date.now() + 15_000; !(await condition()); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > deadline) throw new Error(`${what} did not happen in time`);
    }
  };

  /**
   * Runs `run` with `fault` in force: it must give up within --timeout and the margin, exit 10,
   * and say in one line what did not complete within --timeout.
   */
  async function givesUpInTime(label: string, fault: Fault, run: () => Promise<CliResult>): Promise<CliResult> {
    inject(fault);
    const started = Date.now();
    const r = await run();
    const ms = Date.now() - started;
    heal();
    timings.push(`${backend} ${label}: ${ms} ms`);
    expect(r.status, r.stderr).toBe(ExitCode.storeUnavailable);
    expect(ms, r.stderr).toBeLessThan(OP_TIMEOUT_S * 1000 + OP_MARGIN_MS);
    const errors = r.stderr.split('\n').filter((line) => line.includes(': ERROR: '));
    expect(errors, r.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`ERROR: store unreachable or failing: .* did not complete within --timeout ${OP_TIMEOUT_S} s`));
    return r;
  }

  it.each(pushFaults(backend))('archive-push gives up in time when %s: exit 10, no partial object; a healthy store then takes it', async (label, fault) => {
    const ns = `dlpush${++n}`;
    const r = await givesUpInTime(`push, ${label}`, fault, () => pushDirect(ns, 0));
    expect(r.stderr).toMatch(new RegExp(`push of ${name(0)} did not complete`));
    // A partial or different object under the name would now be refused (exit 8), not confirmed.
    const again = await pushDirect(ns, 0, ...HEALTHY);
    expect(again.status, again.stderr).toBe(0);
    await restoresIntact(ns, 0);
  });

  it.each(fetchFaults)('archive-fetch --no-wait gives up in time when %s: exit 10, no destination file; then it restores', async (label, fault) => {
    const ns = `dlfetch${++n}`;
    await seed(ns, 0);
    const dest = path.join(work, `dlfetch-${n}`);
    const r = await givesUpInTime(`fetch, ${label}`, fault, () => runCli('archive-fetch', ['--no-wait', name(0), dest], env(ns)));
    expect(r.stderr).toMatch(new RegExp(`fetch of ${name(0)} did not complete`));
    await expect(readFile(dest)).rejects.toThrow(/ENOENT/);
    expect((await readdir(work)).filter((f) => f.startsWith('.'))).toEqual([]);
    await restoresIntact(ns, 0);
  });

  it.each(pushFaults(backend))('a push served by the background pusher gives up in time when %s; the call does not wait on', async (label, fault) => {
    const ns = `dlpusher${++n}`;
    const dir = await mkdtemp(path.join(work, 'primary-'));
    const walDir = path.join(dir, 'pg_wal');
    await mkdir(walDir);
    for (const i of [0, 1]) await copyFile(wal.segments[i]!, path.join(walDir, name(i)));
    const e = env(ns, { WALBRIDGE_PUSH_CONCURRENCY: '2' });
    // The first call pushes by itself and starts the pusher; the next one is served by it.
    expect((await runCli('archive-push', [`pg_wal/${name(0)}`], e, { cwd: dir })).status).toBe(0);
    await until(() => backgroundListening(walDir, 'pusher'), 'the background pusher listening');
    const r = await givesUpInTime(`push via the pusher, ${label}`, fault, () => runCli('archive-push', [`pg_wal/${name(1)}`], e, { cwd: dir }));
    expect(r.stderr).toMatch(new RegExp(`push of ${name(1)} did not complete`));
    expect((await readdir(walDir)).sort()).toEqual([name(0), name(1), 'walbridge']); // no spilled body left
    const again = await runCli('archive-push', [...HEALTHY, `pg_wal/${name(1)}`], e, { cwd: dir });
    expect(again.status, again.stderr).toBe(0);
    await restoresIntact(ns, 1);
  });

  it.each(
    fetchFaults,
  )('a fetch --no-wait served by the background fetcher gives up in time when %s: no destination file, nothing half in the spool', async (label, fault) => {
    const ns = `dlfetcher${++n}`;
    await seed(ns, 0);
    const standby = await fakeDataDir('standby');
    const walDir = path.join(standby.dir, 'pg_wal');
    const fetch = (i: number, ...flags: string[]) =>
      runCli('archive-fetch', ['--no-wait', ...flags, name(i), 'pg_wal/RECOVERYXLOG'], env(ns), { cwd: standby.dir });
    // The first call restores by itself and starts the fetcher; the next one is served by it.
    expect((await fetch(0)).status).toBe(0);
    await rm(standby.destination);
    await until(() => backgroundListening(walDir, 'fetcher'), 'the background fetcher listening');
    await seed(ns, 1);
    const r = await givesUpInTime(`fetch via the fetcher, ${label}`, fault, () => fetch(1));
    expect(r.stderr).toMatch(new RegExp(`fetch of ${name(1)} did not complete`));
    await expect(readFile(standby.destination)).rejects.toThrow(/ENOENT/);
    const spool = path.join(walDir, 'walbridge', 'prefetch');
    // The spool directories (prefetch/ also holds bin/archive-fetch's front-end and served files).
    for (const dir of (await readdir(spool, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name)) {
      expect((await readdir(path.join(spool, dir))).filter((f) => f === name(1) || f.startsWith('.'))).toEqual([]);
    }
    const again = await fetch(1, ...HEALTHY);
    expect(again.status, again.stderr).toBe(0);
    expect((await readFile(standby.destination)).equals(await readFile(wal.segments[1]!))).toBe(true);
    await rm(standby.dir, { recursive: true, force: true });
  });

  it.each(streamFaults)('one chunk shipment of walbridge stream gives up in time when %s; a chunk is stored whole or not at all', async (label, fault) => {
    const ns = `dlstream${++n}`;
    const retry = retryPolicy(OP_TIMEOUT_S);
    const store = withRetries(t.throughProxy(OP_TIMEOUT_S), retry);
    const segmentSize = 16 * 1024 * 1024;
    const file = parseWalFileName(name(0))!;
    const start = segmentNumber(file, segmentSize) * BigInt(segmentSize);
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const streamer = new SegmentStreamer({
      store,
      namespace: ns,
      walDir: path.dirname(wal.segments[0]!),
      segmentSize,
      codec: 'zstd',
      level: undefined,
      encryption: undefined,
      retry,
      log: quiet,
    });
    const shipped = async () => chainEnd(longestPrefixChain(await listChunks(t.direct, ns, name(0))));
    heal();
    await streamer.advance({ timeline: file.timeline, lsn: start + 64n * 1024n });
    expect(await shipped()).toBe(64 * 1024);
    // The next shipment: 2 MiB more of the segment, one chunk.
    inject(fault);
    const started = Date.now();
    const failure = await streamer.advance({ timeline: file.timeline, lsn: start + 2n * 1024n * 1024n }).then(
      () => undefined,
      (err: unknown) => err,
    );
    const ms = Date.now() - started;
    heal();
    timings.push(`${backend} stream shipment (in process), ${label}: ${ms} ms`);
    expect(failure).toBeInstanceOf(StoreError);
    expect(failure).toMatchObject({
      kind: 'transient',
      message: expect.stringMatching(new RegExp(`store ${name(0)}.* did not complete within --timeout ${OP_TIMEOUT_S} s`)),
    });
    expect(ms).toBeLessThan(OP_TIMEOUT_S * 1000 + OP_MARGIN_MS);
    expect([64 * 1024, 2 * 1024 * 1024]).toContain(await shipped());
    await streamer.advance({ timeline: file.timeline, lsn: start + 2n * 1024n * 1024n });
    expect(await shipped()).toBe(2 * 1024 * 1024);
  });

  it.each(statusFaults(backend))('walbridge status gives up in time when %s; then it lists', async (label, fault) => {
    const ns = `dlstatus${++n}`;
    for (const i of [0, 1, 2]) await seed(ns, i);
    const r = await givesUpInTime(`status, ${label}`, fault, () => runCli('walbridge', ['status'], env(ns)));
    expect(r.stdout).toBe('');
    const again = await runCli('walbridge', ['status', ...HEALTHY], env(ns));
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/3 segments/);
  });
});
