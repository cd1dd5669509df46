/**
 * Record-based log shipping with real PostgreSQL 15: `walbridge stream` ships the segment the
 * primary is writing; after kill -9 of the primary, a smart failover restores the commits that
 * were only in that unfinished segment. Restart of the streamer mid-segment and a segment switch
 * while streaming are part of the run.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { listChunks } from '../../src/archive/stream-chunks.js';
import { ExitCode } from '../../src/errors.js';
import { baseBackup, clusterEnv, destroyAll, initPrimary, runAsClusterUser, type PgCluster, type RunResult } from '../servers/postgres.js';
import { BACKENDS, createRepo } from '../support/repos.js';

afterAll(destroyAll);

const RESTORE = 'archive-fetch %f %p %r';
const INTERVAL = 0.2;

interface Streamer {
  readonly exited: Promise<RunResult>;
  /** SIGTERM, as systemd stops it; resolves with its result. */
  stop(): Promise<RunResult>;
}

function startStream(primary: PgCluster, env: Record<string, string>): Streamer {
  let signal: (s: NodeJS.Signals) => void = () => undefined;
  const exited = runAsClusterUser('walbridge', ['stream', primary.dataDir], {
    env: clusterEnv({ ...env, ...primary.connectionEnv(), WALBRIDGE_STREAM_INTERVAL: String(INTERVAL) }),
    timeoutMs: 300_000,
    started: (s) => (signal = s),
  });
  return {
    exited,
    stop: async () => {
      signal('SIGTERM');
      return exited;
    },
  };
}

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

describe.each(BACKENDS)('walbridge stream through %s', (backend) => {
  it('after kill -9 of the primary, a smart failover keeps the commits of the unfinished segment', async () => {
    const repo = await createRepo(backend);
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'stream', ...repo.env };
    const primary = await initPrimary({ name: `stream-${backend}`, env, archiveCommand: 'archive-push %p', conf: { archive_timeout: '60s' } });
    await primary.psql('create table marks (id int primary key, note text)');
    await primary.psql('select pg_switch_wal()');
    const standby = await baseBackup(primary, {
      name: `stream-s-${backend}`,
      recovery: { restoreCommand: RESTORE, signal: 'recovery' },
      conf: { archive_command: '' },
      start: { wait: false },
    });
    let streamer = startStream(primary, env);
    const insert = async (from: number, to: number) => {
      for (let i = from; i <= to; i++) await primary.psql(`insert into marks values (${i}, 'row ${i}')`);
    };

    await insert(1, 20);
    const current = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
    await waitUntil(async () => (await listChunks(repo.store(), 'stream', current)).length > 0); // the streamer is up
    // A segment switch while streaming: the old segment is finished, then archived, and its chunks go.
    const switched = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
    await primary.psql('select pg_switch_wal()');
    await insert(21, 40);
    await sleep(1000);

    // The streamer restarts mid-segment and resumes where its chunks end.
    // (runuser, between the test and the streamer, reports the SIGTERM it passed on as its own end.)
    const first = await streamer.stop();
    expect(first.stderr).toMatch(/walbridge stream: stopped \(at [0-9A-F]{24} up to /);
    await insert(41, 60);
    streamer = startStream(primary, env);
    await insert(61, 80);
    await sleep(2000); // ten intervals: everything committed is shipped

    const status = await walbridge(["status", "--json"], env);
    expect(JSON.parse(status.stdout).streamChunks).toBeGreaterThan(0);
    await primary.kill9();
    const stopped = await streamer.stop();
    expect(stopped.stderr).toMatch(/walbridge stream: stopped \(at /);
    expect(first.stderr + stopped.stderr).toMatch(/resuming [0-9A-F]{24} at offset \d+/);
    expect(first.stderr + stopped.stderr).toMatch(new RegExp(`${switched} is archived: removed its \\d+ streamed chunks?`));

    // Without the streamed part the standby would stop at row 20 (the switched segment).
    expect((await walbridge(['trigger', 'smart'], env)).status).toBe(ExitCode.ok);
    await standby.waitFor('select pg_is_in_recovery()', 'f', 60_000, { intervalMs: 100 });
    expect(await standby.psql('select count(*), max(id) from marks')).toBe('80|80');
    expect(await standby.log()).toMatch(/restored the streamed part of [0-9A-F]{24}: \d+ bytes in \d+ chunks?/);
    // The promoted standby writes on a new timeline.
    await standby.psql("insert into marks values (81, 'after failover')");
    for (const c of [standby, primary]) await c.destroy();
  }, 240_000);
});
