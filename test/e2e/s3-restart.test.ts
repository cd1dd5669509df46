/**
 * Issue 6: the S3 server stopped and started again in the middle of a pgbench run with a live
 * standby. The primary's archiver retries, nothing is lost, the standby catches up.
 *
 * The server stopped is a radosgw gateway of its own (startGateway) on the suite's Ceph cluster:
 * the objects live in the cluster's OSD and survive it, and the other test files keep their
 * gateway. Both servers reach the store through it only. Two outages under one pgbench load:
 *  1. SIGKILL, archive-push's --timeout (3 s) shorter than the outage: the calls fail with
 *     exit 10, PostgreSQL's archiver fails three times in a row and gives up for a while, then
 *     tries again at the next WAL file and succeeds once the gateway is back;
 *  2. SIGTERM, --timeout (30 s) longer than the outage: walbridge's own retries ride it out and
 *     the archiver sees no failure.
 * Meanwhile the standby's waiting archive-fetch (recovery.signal: a failure status would promote
 * it) waits the outages out.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, expect, inject, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { startGateway, type Gateway } from '../servers/radosgw.js';
import { baseBackup, destroyAll, initPrimary, type PgCluster } from '../servers/postgres.js';
import { archiveEverything } from '../support/archiving.js';
import { runCli } from '../support/cli.js';
import { createRepo } from '../support/repos.js';

/** pgbench runs back to back for this long each, until the test has seen both outages through. */
const PGBENCH_RUN_S = 3;
/** Throttled: with archive_timeout = 1 every second still makes a segment, and the two cores are
 *  left enough to replay them (and to run the other test files) instead of saturated. */
const PGBENCH_TPS = 500;
/** Load before the first outage, and after the standby caught up with the second. */
const LOAD_BEFORE_MS = 4_000;
const LOAD_AFTER_MS = 3_000;
/** archive-push --timeout during the first outage: shorter than it, so the calls fail. */
const SHORT_TIMEOUT_S = 3;
/** PostgreSQL's archiver gives up after this many failures in a row (NUM_ARCHIVE_RETRIES) and
 *  tries again at the next WAL file or a minute later: the first outage lasts past that. */
const ARCHIVER_RETRIES = 3;
/** archive-push --timeout during the second outage: longer than it, so walbridge rides it out. */
const LONG_TIMEOUT_S = 30;
const SECOND_OUTAGE_MS = 5_000;

let gateway: Gateway | undefined;
afterAll(async () => {
  await destroyAll();
  await gateway?.stop();
});

const archiveCommand = (timeoutS: number) => `archive-push --timeout ${timeoutS} %p`;

async function archiver(pg: PgCluster): Promise<{ archived: number; failed: number }> {
  const [archived, failed] = (await pg.psql('select archived_count, failed_count from pg_stat_archiver')).split('|');
  return { archived: Number(archived), failed: Number(failed) };
}

/** WAL files PostgreSQL has finished and not archived yet. */
async function readyFiles(pg: PgCluster): Promise<number> {
  return (await readdir(path.join(pg.walDir, 'archive_status'))).filter((f) => f.endsWith('.ready')).length;
}

/** Every pgbench table's content, condensed: equal on both servers only if no transaction is missing. */
const CONTENT_SQL = `select
  (select count(*) || ' ' || sum(abalance) from pgbench_accounts),
  (select count(*) || ' ' || sum(tbalance) from pgbench_tellers),
  (select count(*) || ' ' || sum(bbalance) from pgbench_branches),
  (select count(*) || ' ' || md5(string_agg(h::text, ',' order by h::text)) from pgbench_history h)`;

/**
 * A pgbench load (4 clients) in back-to-back runs until stop(): it lasts as long as the test needs
 * it, however slow the machine. stop() resolves to the number of transactions run.
 */
function startLoad(pg: PgCluster): { assertRunning(): void; stop(): Promise<number> } {
  let stopping = false;
  let failure: unknown;
  const done = (async () => {
    let transactions = 0;
    while (!stopping) {
      const out = await pg.pgbench(['-n', '-T', String(PGBENCH_RUN_S), '-c', '4', '-j', '2', '-R', String(PGBENCH_TPS)]);
      transactions += Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);
    }
    return transactions;
  })();
  done.catch((err: unknown) => (failure = err)); // rethrown by assertRunning() and stop()
  return {
    assertRunning: () => {
      if (failure !== undefined) throw failure;
    },
    stop: () => {
      stopping = true;
      return done;
    },
  };
}

/** Waits until the standby has replayed WAL up to `lsn`; returns the seconds that took. */
async function secondsToReplay(standby: PgCluster, lsn: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  await standby.waitFor(`select pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn`, 't', timeoutMs, { intervalMs: 100 });
  return (Date.now() - started) / 1000;
}

it('the S3 server killed and restarted during pgbench: the archiver retries, nothing is lost, the standby catches up', async () => {
  const testStarted = Date.now();
  gateway = await startGateway(inject('s3'));
  const repo = await createRepo('s3');
  // walbridge run by the test itself goes through the cluster's own gateway: an independent view.
  const direct = { ...repo.env, WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'restart' };
  const env = { ...direct, AWS_ENDPOINT_URL_S3: gateway.endpoint };

  const primary = await initPrimary({
    name: 'restart-primary',
    env,
    archiveCommand: archiveCommand(SHORT_TIMEOUT_S),
    conf: { archive_timeout: 1 }, // a segment a second under load: many archive calls meet each outage
  });
  await primary.pgbench(['-i', '-s', '2', '-q']);
  await archiveEverything(primary);
  const standby = await baseBackup(primary, {
    name: 'restart-standby',
    recovery: { restoreCommand: 'archive-fetch %f %p %r', signal: 'recovery' },
    conf: { archive_command: '' }, // were it to promote by mistake, it must not archive into the namespace
    start: { wait: false },
  });
  await standby.waitFor('select count(*) from pgbench_branches', '2', 60_000);
  const setupS = (Date.now() - testStarted) / 1000;

  const loadStarted = Date.now();
  const load = startLoad(primary);
  await sleep(LOAD_BEFORE_MS);

  // --- Outage 1: SIGKILL, archive-push gives up before the gateway is back.
  load.assertRunning();
  const before1 = await archiver(primary);
  const killed1 = Date.now();
  await gateway.kill('SIGKILL');
  await primary.waitFor(`select failed_count >= ${before1.failed + ARCHIVER_RETRIES} from pg_stat_archiver`, 't', 40_000, { intervalMs: 200 });
  const backlog1 = await readyFiles(primary);
  const failed1 = (await archiver(primary)).failed - before1.failed;
  await gateway.start();
  const outage1S = (Date.now() - killed1) / 1000;
  const lsnAtRestart1 = await primary.psql('select pg_current_wal_lsn()');
  const catchUp1S = await secondsToReplay(standby, lsnAtRestart1, 60_000);

  // --- Outage 2: SIGTERM, archive-push retries for longer than the gateway is down.
  await primary.appendConf({ archive_command: archiveCommand(LONG_TIMEOUT_S) });
  await primary.reload();
  // The archiver adopts a new archive_command before its next file: two more archived files
  // and the call that was running at the reload is over.
  const atReload = await archiver(primary);
  await primary.waitFor(`select archived_count >= ${atReload.archived + 2} from pg_stat_archiver`, 't', 30_000);
  load.assertRunning();
  const before2 = await archiver(primary);
  const killed2 = Date.now();
  await gateway.kill('SIGTERM');
  await sleep(SECOND_OUTAGE_MS);
  const backlog2 = await readyFiles(primary);
  await gateway.start();
  const outage2S = (Date.now() - killed2) / 1000;
  const lsnAtRestart2 = await primary.psql('select pg_current_wal_lsn()');
  const catchUp2S = await secondsToReplay(standby, lsnAtRestart2, 60_000);
  expect((await archiver(primary)).failed, 'walbridge retried through the second outage').toBe(before2.failed);
  // Only the second outage's calls retry for 30 s: they met it, and say so in the server's log
  // (the background pusher tells the calls it serves about its retries too).
  expect(await primary.log()).toMatch(/ECONNREFUSED.*retrying for up to 30 s/);

  // --- After the load: everything archived, and the standby has all of it.
  await sleep(LOAD_AFTER_MS);
  const transactions = await load.stop();
  const loadS = (Date.now() - loadStarted) / 1000;
  const expected = await primary.psql(CONTENT_SQL);
  const ended = Date.now();
  const lastSegment = await archiveEverything(primary);
  const archivedS = (Date.now() - ended) / 1000;
  const lsnAtEnd = await primary.psql('select pg_current_wal_lsn()');
  const replayedS = await secondsToReplay(standby, lsnAtEnd, 60_000);
  expect(await standby.psql(CONTENT_SQL)).toBe(expected);
  expect(await standby.isInRecovery(), 'the standby never took an outage for a failover').toBe(true);

  // The archiver really failed, only with "store unavailable", and each failed file was archived later.
  const final = await archiver(primary);
  expect(failed1).toBeGreaterThanOrEqual(ARCHIVER_RETRIES);
  expect(await primary.log()).toMatch(/failed too many times, will try again later/);
  const failureCodes = [...(await primary.log()).matchAll(/archive command failed with exit code (\d+)/g)].map((m) => Number(m[1]));
  expect(failureCodes.length).toBe(final.failed);
  expect(new Set(failureCodes)).toEqual(new Set([ExitCode.storeUnavailable]));

  // No gap from the first segment to the last, and every object reads back whole and verified.
  const verify = await runCli('walbridge', ['verify', '--deep', '--json'], direct);
  expect(verify.status, verify.stdout + verify.stderr).toBe(ExitCode.ok);
  const report = JSON.parse(verify.stdout) as {
    contentChecked: number;
    problems: unknown[];
    status: { timelines: { timeline: number; segments: number; first: string; newest: string; missingSegments: number }[] };
  };
  expect(report.problems).toEqual([]);
  expect(report.status.timelines).toHaveLength(1);
  const [timeline] = report.status.timelines;
  expect(timeline!.missingSegments).toBe(0);
  expect(timeline!.newest >= lastSegment).toBe(true);

  console.log(
    `S3 restart: setup ${setupS.toFixed(1)} s; pgbench ${loadS.toFixed(0)} s, ${transactions} transactions; ` +
      `outage 1 (SIGKILL, --timeout ${SHORT_TIMEOUT_S}) ${outage1S.toFixed(1)} s: ${failed1} archiver failures (exit 10), ${backlog1} files waiting, ` +
      `standby caught up ${catchUp1S.toFixed(1)} s after the restart; ` +
      `outage 2 (SIGTERM, --timeout ${LONG_TIMEOUT_S}) ${outage2S.toFixed(1)} s: 0 failures, ${backlog2} files waiting, caught up ${catchUp2S.toFixed(1)} s after; ` +
      `at the end: last segment archived ${archivedS.toFixed(1)} s after pgbench, replayed ${replayedS.toFixed(1)} s later; ` +
      `archived_count ${final.archived}, failed_count ${final.failed}, ${timeline!.segments} segments ${timeline!.first}…${timeline!.newest}, ` +
      `${report.contentChecked} objects read back`,
  );
  await standby.destroy();
  await primary.destroy();
  await gateway.stop();
}, 300_000); // 110-133 s measured; its own waits bound each phase
