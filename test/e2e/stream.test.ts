/**
 * Record-based log shipping with real PostgreSQL (15; 16-18 in their own runs, vitest.config.ts,
 * the kill -9 case through S3 and GCS only): `walbridge stream` ships the segment the
 * primary is writing; after kill -9 of the primary, a smart failover restores the commits that
 * were only in that unfinished segment. Restart of the streamer mid-segment and a segment switch
 * while streaming are part of the run; so are a streamer started while the archiver is behind, a
 * newer timeline (the streamed part is then not used), and a --conninfo reaching another server.
 */
import { chmod, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FetchContext } from '../../src/archive/restore/download.js';
import { restoreStreamed } from '../../src/archive/restore/streamed.js';
import { loadIdentity } from '../../src/archive/repo/identity.js';
import { chunkKey, listChunks } from '../../src/archive/repo/stream-chunks.js';
import { ExitCode } from '../../src/errors.js';
import { retryPolicy } from '../../src/storage/retry.js';
import type { Store } from '../../src/storage/store.js';
import { parseWalFileName } from '../../src/wal/names.js';
import { startFaultProxy } from '../servers/fault-proxy.js';
import { PG_MAJOR, baseBackup, clusterEnv, destroyAll, generateWalSegments, initPrimary, runAsClusterUser } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo } from '../support/repos.js';
import { startStream, stopAllStreamers } from '../support/streamer.js';
import { scratchDir } from '../support/scratch.js';

afterAll(async () => {
  await stopAllStreamers();
  await destroyAll();
});

const RESTORE = 'archive-fetch %f %p %r';
const INTERVAL = 0.2;

async function walbridge(args: string[], env: Record<string, string>) {
  const r = await runAsClusterUser('walbridge', args, { env: clusterEnv(env) });
  return { status: r.code, stdout: r.stdout, stderr: r.stderr };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(condition: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(100);
  }
}

/** A primary archiving with archive_timeout = 60 s, a waiting standby, and a table to count commits in. */
async function primaryAndStandby(name: string, env: Record<string, string>) {
  const primary = await initPrimary({ name, env, archiveCommand: 'archive-push %p', conf: { archive_timeout: '60s' } });
  await primary.psql('create table marks (id int primary key, note text)');
  await primary.psql('select pg_switch_wal()');
  const standby = await baseBackup(primary, {
    name: `${name}-s`,
    recovery: { restoreCommand: RESTORE, signal: 'recovery' },
    conf: { archive_command: '' },
    start: { wait: false },
  });
  const insert = async (from: number, to: number) => {
    for (let i = from; i <= to; i++) await primary.psql(`insert into marks values (${i}, 'row ${i}')`);
  };
  /** Waits until the streamer has shipped a chunk of the segment being written. */
  const streaming = async (store: Store) => {
    const current = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
    await waitUntil(async () => (await listChunks(store, env['WALBRIDGE_NAMESPACE']!, current)).length > 0);
    return current;
  };
  /** kill -9 of the primary, then a failover of the given kind; the standby's count and max id. */
  const failover = async (mode: 'smart' | 'fast') => {
    await primary.kill9();
    expect((await walbridge(['trigger', mode], env)).status).toBe(ExitCode.ok);
    await standby.waitFor('select pg_is_in_recovery()', 'f', 60_000, { intervalMs: 100 });
    return standby.psql('select count(*), max(id) from marks');
  };
  return { primary, standby, insert, streaming, failover };
}

describe.each(BACKENDS)('walbridge stream through %s', (backend) => {
  it('after kill -9 of the primary, a smart failover keeps the commits of the unfinished segment', async () => {
    const repo = await createRepo(backend);
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream', ...repo.env };
    const { primary, standby, insert, streaming, failover } = await primaryAndStandby(`stream-${backend}`, env);
    let streamer = startStream(primary, env, INTERVAL);

    await insert(1, 20);
    // A segment switch while streaming: the old segment is finished, then archived, and its chunks go.
    const switched = await streaming(repo.store());
    await primary.psql('select pg_switch_wal()');
    await insert(21, 40);
    await sleep(1000);

    // The streamer restarts mid-segment and resumes where its chunks end.
    const first = await streamer.stop();
    expect(first.stderr).toMatch(/walbridge stream: stopped \(at [0-9A-F]{24} up to /);
    await insert(41, 60);
    streamer = startStream(primary, env, INTERVAL);
    await insert(61, 80);
    await sleep(2000); // ten intervals: everything committed is shipped

    const status = await walbridge(['status', '--json'], env);
    const shown = JSON.parse(status.stdout) as { streamChunks: number; stream: { timeline: number; bytesAheadOfArchive: number; newestAgeSeconds: number } };
    expect(shown.streamChunks).toBeGreaterThan(0);
    // What only the chunks hold: the rows after the switched segment.
    expect(shown.stream).toMatchObject({ timeline: 1, bytesAheadOfArchive: expect.any(Number) });
    expect(shown.stream.bytesAheadOfArchive).toBeGreaterThan(0);
    expect(shown.stream.newestAgeSeconds).toBeLessThan(30);
    // Without the streamed part the standby would stop at row 20 (the switched segment).
    expect(await failover('smart')).toBe('80|80');
    const stopped = await streamer.stop();
    expect(first.stderr + stopped.stderr).toMatch(/resuming [0-9A-F]{24} at offset \d+/);
    expect(first.stderr + stopped.stderr).toMatch(new RegExp(`${switched} is archived: removed its \\d+ streamed chunks?`));
    expect(await standby.log()).toMatch(/restored the streamed part of [0-9A-F]{24}: \d+ bytes in \d+ chunks?/);
    // The promoted standby writes on a new timeline.
    await standby.psql("insert into marks values (81, 'after failover')");
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);
});

/** walbridge's own logic, not the server's: once, on Debian's PostgreSQL 15. */
const ONCE = PG_MAJOR === 15;

describe.runIf(ONCE)('walbridge stream, faults and fast failover', () => {
  it('a store that resets every connection for a while: the streamer catches up, nothing is lost', async () => {
    const repo = await createRepo('s3');
    const endpoint = new URL(repo.env['AWS_ENDPOINT_URL_S3']!);
    const proxy = await startFaultProxy({ host: endpoint.hostname, port: Number(endpoint.port) });
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream-fault', ...repo.env };
    const { primary, standby, insert, streaming, failover } = await primaryAndStandby('stream-fault', env);
    const streamer = startStream(primary, { ...env, AWS_ENDPOINT_URL_S3: proxy.url, WALBRIDGE_TIMEOUT: '2' }, INTERVAL);
    try {
      await insert(1, 10);
      await streaming(repo.store());
      proxy.set({ kind: 'reset-after', bytes: 1 });
      proxy.resetAll();
      await insert(11, 30);
      await sleep(3000); // longer than the streamer's --timeout: its uploads fail outright
      proxy.set({ kind: 'none' });
      await insert(31, 40);
      await sleep(2500);
      expect(await failover('smart')).toBe('40|40');
      const out = await streamer.stop();
      expect(out.stderr).toMatch(/ERROR: cannot stream: .*retrying/);
      expect(out.stderr).toMatch(/streaming again after \d+ s/);
    } finally {
      await proxy.close();
    }
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);

  it('a fast failover ignores streamed chunks', async () => {
    const repo = await createRepo('file');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream-fast', ...repo.env };
    const { primary, standby, insert, streaming, failover } = await primaryAndStandby('stream-fast', env);
    // A streamer pointed at another server of the cluster (here the standby) refuses to start.
    const wrong = await runAsClusterUser('walbridge', ['stream', primary.dataDir], { env: clusterEnv({ ...env, ...standby.connectionEnv() }) });
    expect(wrong.code).toBe(ExitCode.config);
    expect(wrong.stderr).toMatch(/the server that --conninfo \(or libpq's PG\* variables\) reaches is not the one running in .*: connect to the local primary/);
    const streamer = startStream(primary, env, INTERVAL);
    await insert(1, 10);
    await streaming(repo.store());
    await sleep(1000);
    expect(await failover('fast')).toBe('0|'); // only what was archived: the table, no row
    await streamer.stop();
    expect(await standby.log()).not.toMatch(/restored the streamed part/);
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);

  it('a streamer started while the archiver is behind ships the segments not archived yet', async () => {
    const repo = await createRepo('file');
    // No background pusher: it would store the ready segments the stopped archiver left behind.
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream-behind', WALBRIDGE_PUSH_CONCURRENCY: '1', ...repo.env };
    const { primary, standby, insert, streaming, failover } = await primaryAndStandby('stream-behind', env);
    await primary.psql('create table warmup (i int)'); // something to switch away from
    const last = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
    await primary.psql('select pg_switch_wal()');
    await waitUntil(async () => (await primary.psql('select last_archived_wal from pg_stat_archiver')) === last);
    // The archiver stops working; two segments are completed and one begun with no streamer running.
    await primary.psql("alter system set archive_command = 'false'");
    await primary.psql('select pg_reload_conf()');
    await insert(1, 10);
    await primary.psql('select pg_switch_wal()');
    await insert(11, 20);
    await primary.psql('select pg_switch_wal()');
    await insert(21, 30);
    const streamer = startStream(primary, env, INTERVAL);
    await streaming(repo.store());
    await sleep(1000);
    // Starting at the flush position would lose rows 1-20: they are only in the unarchived segments.
    expect(await failover('smart')).toBe('30|30');
    await streamer.stop();
    // The two segments completed while the archiver stopped and the one begun: from streamed parts
    // (PostgreSQL may ask for the last one again at the end of recovery).
    const streamed = new Set([...(await standby.log()).matchAll(/restored the streamed part of ([0-9A-F]{24})/g)].map((m) => m[1]));
    expect(streamed.size).toBe(3);
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);

  it('once another server was promoted: the streamer beside the old primary exits 16, the waiting standby stops (exit 200) instead of promoting, even when triggered', async () => {
    const repo = await createRepo('file');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream-fork', ...repo.env };
    const { primary, standby, insert, streaming } = await primaryAndStandby('stream-fork', env);
    const streamer = startStream(primary, env, INTERVAL);
    await insert(1, 10);
    await streaming(repo.store());
    await sleep(1000);
    // Another server of the cluster was promoted to timeline 2 (here: its history file only),
    // before the segment the standby waits for and the one being streamed.
    const dir = await scratchDir('walbridge-fork-');
    await chmod(dir, 0o755);
    await writeFile(path.join(dir, '00000002.history'), '1\t0/1000000\tno recovery target specified\n', { mode: 0o644 });
    expect((await walbridge(['push', path.join(dir, '00000002.history')], env)).status).toBe(ExitCode.ok);
    expect((await walbridge(['trigger', 'smart'], env)).status).toBe(ExitCode.ok);
    const streamed = await streamer.exited;
    expect(streamed.code, streamed.stderr).toBe(ExitCode.fenced);
    expect(streamed.stderr).toMatch(
      /refusing to stream [0-9A-F]{24} up to [0-9A-F]+\/[0-9A-F]+: timeline 1 ended at 0\/1000000 when timeline 2 was promoted from it/,
    );
    for (let i = 0; standby.isRunning(); i++) {
      expect(i, 'the standby stopped').toBeLessThan(300);
      await sleep(100);
    }
    const log = await standby.log();
    expect(log).toMatch(
      /timeline 2 was promoted from timeline 1 at 0\/1000000 \(00000002\.history\), so [0-9A-F]{24} will never be archived\. Under recovery\.signal .*exiting 200/,
    );
    expect(log).not.toMatch(/selected new timeline ID|archive recovery complete|the streamed part of/);
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);
});

describe.runIf(ONCE)('a streamed part whose chunks vanish while a failover reads them', () => {
  it('is the archived segment if it landed meanwhile, else unusable; nothing is written', async () => {
    const wal = await generateWalSegments(2);
    const repo = await createRepo('file');
    const namespace = 'vanish';
    const [landed, never] = wal.segments.map((f) => parseWalFileName(path.basename(f))!);
    expect((await runCli('archive-push', [wal.segments[0]!], { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: namespace, ...repo.env })).status).toBe(0);
    const store = repo.store();
    const identity = (await loadIdentity(store, namespace))!;
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
    const ctx: FetchContext = { store, repository: 'test', namespace, log: quiet, retry: retryPolicy(2), prefetch: 0, keys: undefined };
    // Chains as listed a moment before the streamer removed the chunks.
    const vanished = (segment: string) => [{ start: 0, end: 8192, key: chunkKey(namespace, segment, { start: 0, end: 8192 }) }];
    const dir = await scratchDir('walbridge-vanish-');
    expect(await restoreStreamed(ctx, landed!, path.join(dir, landed!.name), identity, vanished(landed!.name))).toBe('archived');
    await expect(restoreStreamed(ctx, never!, path.join(dir, never!.name), identity, vanished(never!.name))).rejects.toMatchObject({
      kind: 'corrupt',
      message: expect.stringMatching(/the streamed part of [0-9A-F]{24} is incomplete: a chunk of it vanished while it was read/),
    });
    expect(await readdir(dir)).toEqual([]);
  }, 180_000);
});
