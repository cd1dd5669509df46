/**
 * Network faults between walbridge and the store (test/servers/fault-proxy.ts in front of
 * radosgw and of a private GCS test server): push and fetch either succeed after retries or
 * fail within the --timeout bound with a clear message; never report success without a stored,
 * verified object; never leave a partial %p.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { GcsStore } from '../../src/storage/gcs.js';
import type { Store } from '../../src/storage/store.js';
import { startFaultProxy, type FaultProxy } from '../servers/fault-proxy.js';
import { startGcsServer, type GcsTestServer } from '../servers/gcs/server.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { createRepo } from '../support/repos.js';

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
  proxy: FaultProxy;
  gcs?: GcsTestServer;
}

async function s3Target(): Promise<Target> {
  const repo = await createRepo('s3');
  const endpoint = new URL(repo.env['AWS_ENDPOINT_URL_S3']!);
  const proxy = await startFaultProxy({ host: endpoint.hostname, port: Number(endpoint.port) });
  return { env: { ...repo.env, WALBRIDGE_REPO: repo.url, AWS_ENDPOINT_URL_S3: proxy.url }, direct: repo.store(), proxy };
}

async function gcsTarget(): Promise<Target> {
  const gcs = await startGcsServer();
  gcs.createBucket('faults');
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: gcs.port });
  return {
    env: { WALBRIDGE_REPO: 'gs://faults/wal', STORAGE_EMULATOR_HOST: proxy.url },
    direct: new GcsStore({ bucket: 'faults', prefix: 'wal', endpoint: gcs.url }),
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
    work = await mkdtemp(path.join(tmpdir(), 'wb-faults-'));
  });
  afterAll(async () => {
    await t.proxy.close();
    await t.gcs?.close();
    await rm(work, { recursive: true, force: true });
  });

  const env = (namespace: string) => ({ ...t.env, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_TIMEOUT: String(TIMEOUT_S) });
  const push = (namespace: string, i: number) => runCli('archive-push', [wal.segments[i]!], env(namespace));
  const fetchTo = (namespace: string, i: number, dest: string) => runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[i]!), dest], env(namespace));
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
    const ns = `rst${++n}`;
    t.proxy.set({ kind: 'reset-after', bytes: 16 * 1024, connections: 3 });
    const pushed = await push(ns, 1);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(await stored(ns, 1)).toBe(true);
    t.proxy.set({ kind: 'reset-after', bytes: 16 * 1024, connections: 3 });
    const dest = path.join(work, `rst-${n}`);
    const fetched = await fetchTo(ns, 1, dest);
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
    const fetched = await fetchTo(ns, 2, dest);
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
