/**
 * The loss window of a smart failover after kill -9 of the primary under load: whole-file
 * archiving (archive_timeout = 60 s) against the same plus `walbridge stream`.
 *
 * Probe clients commit one row per transaction and note when each commit was acknowledged;
 * pgbench runs beside them at a steady rate. At that rate a segment takes longer to fill than a
 * run lasts, which is when whole-file archiving loses the most (up to archive_timeout). After the kill and a smart failover, the
 * acknowledged rows missing on the promoted standby are the loss; the loss window is the time
 * from the oldest missing acknowledgement to the kill.
 */
import pg from 'pg';
import { dirname, join } from 'node:path';
import { PG_BIN, baseBackup, clusterEnv, initPrimary, runAsClusterUser, type PgCluster } from '../../test/servers/postgres.js';
import { startStream, type Streamer } from '../../test/support/streamer.js';
import type { Bench } from './rows.js';
import { walbridgeEnv } from './rows.js';
import { sleep } from './stats.js';

export type LossMode = 'archive' | 'stream';

export interface LossRun {
  readonly mode: LossMode;
  readonly acknowledged: number;
  readonly missing: number;
  /** Kill time minus the oldest missing acknowledgement (0 when nothing is missing). */
  readonly windowMs: number;
  readonly failoverSeconds: number;
  readonly error?: string;
}

export interface LossResult {
  readonly runs: LossRun[];
  readonly streamIntervalSeconds: number;
  readonly loadSeconds: number;
  readonly load: string;
}

const STREAM_INTERVAL = 0.2;
const PROBES = 4;
/** Each probe commits about every 10 ms: an OLTP trickle, not a bulk load that fills segments in seconds. */
const PROBE_PAUSE_MS = 10;
/** pgbench's rate (-R): with the probes, ~500 commits/s, a segment every minute or two. */
const PGBENCH_TPS = 100;

export async function lossWindow(bench: Bench, runs: number, loadSeconds: number): Promise<LossResult> {
  const results: LossRun[] = [];
  for (let i = 0; i < runs; i++) {
    for (const mode of ['archive', 'stream'] as const) {
      try {
        results.push(await oneRun(bench, mode, `loss-${mode}-${i}`, loadSeconds + Math.random() * 2));
      } catch (err) {
        bench.log(`loss: ${mode} run failed: ${(err as Error).message}`);
        results.push({ mode, acknowledged: 0, missing: 0, windowMs: 0, failoverSeconds: 0, error: (err as Error).message.split('\n')[0] });
      }
      bench.log(`loss: ${JSON.stringify(results[results.length - 1])}`);
    }
  }
  return {
    runs: results,
    streamIntervalSeconds: STREAM_INTERVAL,
    loadSeconds,
    load: `${PROBES} probe clients committing every ~${PROBE_PAUSE_MS} ms, pgbench -c 2 -R ${PGBENCH_TPS}`,
  };
}

async function oneRun(bench: Bench, mode: LossMode, id: string, loadSeconds: number): Promise<LossRun> {
  await bench.s3.createBucket(id);
  const { PATH: _path, HOME: _home, LANG: _lang, ...repoEnv } = walbridgeEnv(bench, { bucket: id, namespace: id, home: bench.workDir });
  // The harness finds bin/ relative to its own source, which the benchmark runs compiled elsewhere.
  const env = { ...repoEnv, PATH: [join(bench.repoRoot, 'bin'), PG_BIN, dirname(process.execPath), '/usr/bin:/bin'].join(':') };
  const primary = await initPrimary({ name: id, env, archiveCommand: 'archive-push %p', conf: { archive_timeout: '60s' } });
  let standby: PgCluster | undefined;
  let streamer: Streamer | undefined;
  try {
    await primary.pgbench(['-i', '-s', '5', '-q']);
    await primary.psql('create table acks (id bigint primary key)');
    const current = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
    await primary.psql('select pg_switch_wal()');
    await primary.waitFor('select last_archived_wal from pg_stat_archiver', (out) => out >= current, 60_000);
    standby = await baseBackup(primary, {
      name: `${id}-s`,
      recovery: { restoreCommand: 'archive-fetch %f %p %r', signal: 'recovery' },
      conf: { archive_command: '' },
      start: { wait: false },
    });
    await standby.waitFor('select count(*) from acks', '0', 120_000);
    if (mode === 'stream') {
      streamer = startStream(primary, env, STREAM_INTERVAL);
      await sleep(2000); // connected and shipping
    }

    const acked = new Map<number, number>();
    let stop = false;
    const probe = async (n: number) => {
      const conn = primary.connectionEnv();
      const client = new pg.Client({ host: conn['PGHOST'], port: Number(conn['PGPORT']), user: conn['PGUSER'], database: conn['PGDATABASE'] });
      client.on('error', () => undefined);
      await client.connect();
      for (let k = 0; !stop; k++) {
        const rowId = n * 1_000_000_000 + k;
        try {
          await client.query('insert into acks values ($1)', [rowId]);
        } catch {
          break; // the server is gone
        }
        acked.set(rowId, Date.now());
        await sleep(PROBE_PAUSE_MS);
      }
      await client.end().catch(() => undefined);
    };
    const probes = Array.from({ length: PROBES }, (_, n) => probe(n + 1));
    const load = primary
      .pgbench(['-c', '2', '-j', '2', '-R', String(PGBENCH_TPS), '-T', String(Math.ceil(loadSeconds) + 30)], { timeoutMs: 180_000 })
      .catch(() => undefined);
    await sleep(loadSeconds * 1000);
    const killedAt = Date.now();
    await primary.kill9();
    stop = true;
    await Promise.all([...probes, load]);
    await streamer?.stop();

    const triggered = Date.now();
    const trigger = await runAsClusterUser('walbridge', ['trigger', 'smart'], { env: clusterEnv(env) });
    if (trigger.code !== 0) throw new Error(`walbridge trigger smart: ${trigger.stderr}`);
    await standby.waitFor('select pg_is_in_recovery()', 'f', 180_000, { intervalMs: 100 });
    const failoverSeconds = (Date.now() - triggered) / 1000;
    const present = new Set(
      (await standby.psql('select id from acks'))
        .split('\n')
        .filter((l) => l !== '')
        .map(Number),
    );
    const missing = [...acked.entries()].filter(([rowId]) => !present.has(rowId));
    const oldest = Math.min(...missing.map(([, at]) => at));
    return { mode, acknowledged: acked.size, missing: missing.length, windowMs: missing.length ? killedAt - oldest : 0, failoverSeconds };
  } finally {
    await streamer?.stop().catch(() => undefined);
    await standby?.destroy();
    await primary.destroy();
    await bench.s3.removeBucket(id).catch(() => undefined);
  }
}
