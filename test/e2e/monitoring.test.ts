/**
 * Issue 19: what a DBA alerts on, from real servers, and the shipped alert rules tested against it.
 *
 * A PostgreSQL 15 primary archives (archive-push) and streams (walbridge stream) into a file://
 * repository; a waiting standby (recovery.signal, --standby east) restores from it through a
 * directory of its own; an operator runs `walbridge status`. Each writes its own --metrics-file, as
 * on separate hosts. The test drives them through what production meets — healthy; the standby
 * unable to read the repository (it holds, and falls behind); the primary unable to write it too
 * (pushes fail, .ready files pile up, the stream fails); mended; a trigger left in the bucket; the
 * streamer, the standby and the status timer stopped — and checks the series at each step. Then the
 * files read at each step become promtool's input series (names, labels and values as written;
 * time simulated: each snapshot held for some minutes, timestamps kept at the age they had, or
 * frozen once their writer stopped), and `promtool test rules` checks which of
 * deploy/prometheus/walbridge.rules.yml's alerts fire when.
 */
import { execFile } from 'node:child_process';

import { chmod, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSamples, type Samples } from '../../src/metrics/textfile.js';
import { baseBackup, clusterEnv, destroyAll, initPrimary, makeSharedDir, runAsClusterUser, type PgCluster } from '../servers/postgres.js';
import { archiveEverything } from '../support/archiving.js';
import { startStream, stopAllStreamers, type Streamer } from '../support/streamer.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NAMESPACE = 'mon';
const SEGMENT = 16 * 1024 * 1024;
const RULES = path.resolve('deploy/prometheus/walbridge.rules.yml');

type Host = 'primary' | 'stream' | 'standby' | 'status';
/** What one metrics file held at one moment (Unix seconds), and whether its writer still ran. */
interface Reading {
  readonly samples: Samples;
  readonly at: number;
  readonly running: boolean;
}
type Snapshot = Record<Host, Reading>;

let primary: PgCluster;
let standby: PgCluster;
let streamer: Streamer;
let shared: string;
let repoDir: string;
let gate: string;
const files = {} as Record<Host, string>;
const env = () => ({ WALBRIDGE_REPO: `file://${repoDir}`, WALBRIDGE_NAMESPACE: NAMESPACE });

afterAll(async () => {
  if (gate) await chmod(gate, 0o755).catch(() => undefined);
  if (repoDir) await run('chmod', ['-R', 'u+w', repoDir]).catch(() => undefined);
  await stopAllStreamers();
  await destroyAll();
});

async function read(host: Host, running = true): Promise<Reading> {
  const text = await readFile(files[host], 'utf8').catch(() => '');
  return { samples: parseSamples(text), at: Date.now() / 1000, running };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 90_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`not seen within ${ms / 1000} s: ${what}`);
    await sleep(250);
  }
}

/** The sample of `host`'s file whose key starts with `prefix` (a metric name and the first labels). */
function value(r: Reading, prefix: string): number | undefined {
  for (const [key, v] of r.samples) if (key.startsWith(prefix)) return v;
  return undefined;
}

const fetchLabels = `command="fetch",namespace="${NAMESPACE}",standby="east"`;
const pushLabels = `command="push",namespace="${NAMESPACE}"`;
const streamLabels = `command="stream",namespace="${NAMESPACE}"`;
const statusLabels = `command="status",namespace="${NAMESPACE}"`;

async function walbridge(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const r = await runAsClusterUser('walbridge', args, { env: clusterEnv({ ...env(), WALBRIDGE_METRICS_FILE: files.status }) });
  return { code: r.code, stderr: r.stderr };
}

async function status(): Promise<Reading> {
  const r = await walbridge(['status']);
  expect(r.code, r.stderr).toBe(0);
  return read('status');
}

async function writes(n: number) {
  for (let i = 0; i < n; i++) {
    await primary.psql("insert into marks (note) values ('x')");
    await primary.psql('select pg_switch_wal()');
  }
}

/**
 * A row noted on the primary, archived and replayed by the standby; then the standby's call for
 * the next segment waits (said after 2 s), with the archived segment's end as its restored position.
 */
async function caughtUp(note: string, ms: number): Promise<{ archivedEnd: number; standbyReading: Reading }> {
  await primary.psql(`insert into marks (note) values ('${note}')`);
  const last = await archiveEverything(primary, ms);
  await standby.waitFor(`select count(*) from marks where note = '${note}'`, '1', ms);
  const archivedEnd = (parseInt(last.slice(8, 16), 16) * 0x100 + parseInt(last.slice(16), 16) + 1) * SEGMENT;
  const standbyReading = await until(`the standby waiting, caught up (${note})`, async () => {
    const r = await read('standby');
    const waiting = value(r, `walbridge_fetch_state{${fetchLabels},state="waiting"}`) === 1;
    return waiting && value(r, `walbridge_restored_position_bytes{${fetchLabels}}`) === archivedEnd ? r : undefined;
  });
  return { archivedEnd, standbyReading };
}

const snapshots: { name: string; snapshot: Snapshot }[] = [];

describe('monitoring: the series real servers write, and the alert rules over them', () => {
  beforeAll(async () => {
    shared = await makeSharedDir('monitoring');
    repoDir = path.join(shared, 'repo');
    gate = path.join(shared, 'gate');
    for (const host of ['primary', 'stream', 'standby', 'status'] as const) files[host] = path.join(shared, `${host}.prom`);
    await runAsClusterUser('mkdir', [repoDir, gate]);
    await symlink(repoDir, path.join(gate, 'repo'));
    primary = await initPrimary({ name: 'mon-primary', env: { ...env(), WALBRIDGE_METRICS_FILE: files.primary }, archiveCommand: 'archive-push %p' });
    await primary.psql('create table marks (id serial primary key, note text)');
    await archiveEverything(primary, 120_000);
    standby = await baseBackup(primary, {
      name: 'mon-standby',
      env: {
        WALBRIDGE_REPO: `file://${path.join(gate, 'repo')}`,
        WALBRIDGE_NAMESPACE: NAMESPACE,
        WALBRIDGE_STANDBY: 'east',
        WALBRIDGE_METRICS_FILE: files.standby,
      },
      recovery: { restoreCommand: 'archive-fetch %f %p %r', signal: 'recovery' },
      conf: { archive_command: '' },
      start: { wait: false },
    });
    streamer = startStream(primary, { ...env(), WALBRIDGE_METRICS_FILE: files.stream }, 0.2);
    await mkdir(path.join(shared, 'promtool'));
  }, 300_000);

  it('healthy: the standby waits at the archive’s end, nothing piles up, the stream ships', async () => {
    const { archivedEnd, standbyReading } = await caughtUp('healthy', 120_000);
    const primaryReading = await read('primary');
    expect(value(primaryReading, `walbridge_archived_position_bytes{${pushLabels}}`)).toBe(archivedEnd);
    expect(value(primaryReading, `walbridge_archive_ready_files{${pushLabels}}`)).toBe(0);
    expect(value(primaryReading, `walbridge_last_failure_timestamp_seconds{${pushLabels}}`)).toBeUndefined();
    const streamReading = await until('the stream shipping', async () => {
      const r = await read('stream');
      return value(r, `walbridge_stream_failing{${streamLabels}}`) === 0 && (value(r, `walbridge_stream_lag_bytes{${streamLabels}}`) ?? Infinity) < SEGMENT
        ? r
        : undefined;
    });
    const flush = BigInt(await primary.psql("select pg_current_wal_flush_lsn() - '0/0'"));
    expect(value(streamReading, `walbridge_stream_flush_position_bytes{${streamLabels}}`)).toBeLessThanOrEqual(Number(flush));
    const statusReading = await status();
    expect(value(statusReading, `walbridge_archived_position_bytes{${statusLabels}}`)).toBe(archivedEnd);
    expect(value(statusReading, `walbridge_status_problems{${statusLabels}}`)).toBe(0);
    expect(value(statusReading, 'walbridge_trigger_present{')).toBeUndefined();
    expect(value(standbyReading, 'walbridge_fetch_holding{')).toBeUndefined();
    snapshots.push({ name: 'healthy', snapshot: { primary: primaryReading, stream: streamReading, standby: standbyReading, status: statusReading } });
  }, 300_000);

  it('the standby cannot read the repository: its waiting call holds, says so with the failure, and falls behind', async () => {
    await chmod(gate, 0o000);
    for (let i = 0; i < 5; i++) {
      await primary.psql("insert into marks (note) values ('behind')");
      await archiveEverything(primary, 120_000);
    }
    const standbyReading = await until('the standby holding', async () => {
      const r = await read('standby');
      return value(r, `walbridge_fetch_state{${fetchLabels},state="holding"}`) === 1 ? r : undefined;
    });
    expect([...standbyReading.samples.keys()].filter((k) => k.startsWith('walbridge_fetch_holding{'))).toEqual([
      `walbridge_fetch_holding{${fetchLabels},failure="storeAccess"}`,
    ]);
    expect(value(standbyReading, `walbridge_fetch_state{${fetchLabels},state="waiting"}`)).toBe(0);
    const statusReading = await status();
    const behind =
      value(statusReading, `walbridge_archived_position_bytes{${statusLabels}}`)! - value(standbyReading, `walbridge_restored_position_bytes{${fetchLabels}}`)!;
    expect(behind).toBeGreaterThanOrEqual(5 * SEGMENT);
    expect(await standby.isInRecovery()).toBe(true);
    snapshots.push({
      name: 'standby-holds',
      snapshot: { primary: await read('primary'), stream: await read('stream'), standby: standbyReading, status: statusReading },
    });
  }, 300_000);

  it('the primary cannot write it either: pushes fail, .ready files pile up, the stream fails', async () => {
    await run('chmod', ['-R', 'a-w', repoDir]);
    await writes(18);
    const first = await until('18 .ready files and a failed push', async () => {
      const r = await read('primary');
      return (value(r, `walbridge_archive_ready_files{${pushLabels}}`) ?? 0) >= 18 && value(r, `walbridge_last_failure_timestamp_seconds{${pushLabels}}`)
        ? r
        : undefined;
    });
    const failures = (r: Reading) =>
      [...r.samples].filter(([k]) => k.startsWith(`walbridge_calls_total{${pushLabels},`) && !k.endsWith('status="ok"}')).reduce((n, [, v]) => n + v, 0);
    expect([...first.samples.keys()].filter((k) => k.startsWith(`walbridge_calls_total{${pushLabels},`) && !k.endsWith('status="ok"}'))).toEqual([
      `walbridge_calls_total{${pushLabels},status="storeAccess"}`,
    ]);
    const streamReading = await until('the stream failing', async () => {
      const r = await read('stream');
      return value(r, `walbridge_stream_failing{${streamLabels}}`) === 1 ? r : undefined;
    });
    const statusFirst = await status();
    snapshots.push({ name: 'archiving-fails', snapshot: { primary: first, stream: streamReading, standby: await read('standby'), status: statusFirst } });
    await writes(1);
    const second = await until('more failed pushes and one more .ready file', async () => {
      const r = await read('primary');
      return failures(r) > failures(first) &&
        value(r, `walbridge_archive_ready_files{${pushLabels}}`)! > value(first, `walbridge_archive_ready_files{${pushLabels}}`)!
        ? r
        : undefined;
    });
    expect(value(second, `walbridge_last_failure_timestamp_seconds{${pushLabels}}`)!).toBeGreaterThan(
      value(second, `walbridge_last_success_timestamp_seconds{${pushLabels}}`)!,
    );
    snapshots.push({
      name: 'archiving-still-fails',
      snapshot: { primary: second, stream: await read('stream'), standby: await read('standby'), status: await status() },
    });
  }, 300_000);

  it('mended: the backlog drains, the standby catches up and waits again, the stream ships again', async () => {
    await run('chmod', ['-R', 'u+w', repoDir]);
    await chmod(gate, 0o755);
    const { standbyReading } = await caughtUp('mended', 180_000);
    expect(value(standbyReading, 'walbridge_fetch_holding{')).toBeUndefined();
    const primaryReading = await read('primary');
    expect(value(primaryReading, `walbridge_archive_ready_files{${pushLabels}}`)).toBe(0);
    expect(value(primaryReading, `walbridge_last_success_timestamp_seconds{${pushLabels}}`)!).toBeGreaterThan(
      value(primaryReading, `walbridge_last_failure_timestamp_seconds{${pushLabels}}`)!,
    );
    const streamReading = await until('the stream shipping again', async () => {
      const r = await read('stream');
      return value(r, `walbridge_stream_failing{${streamLabels}}`) === 0 ? r : undefined;
    });
    snapshots.push({ name: 'mended', snapshot: { primary: primaryReading, stream: streamReading, standby: standbyReading, status: await status() } });
  }, 400_000);

  it('a trigger left in the bucket shows in status’s series, and goes with it', async () => {
    expect((await walbridge(['trigger', 'smart', '--standby', 'other'])).code).toBe(0);
    const withTrigger = await status();
    expect(value(withTrigger, `walbridge_trigger_present{${statusLabels},mode="smart",target="other"}`)).toBe(1);
    const last = snapshots.at(-1)!.snapshot;
    snapshots.push({ name: 'trigger', snapshot: { ...last, status: withTrigger } });
    expect((await walbridge(['trigger', 'clear', '--standby', 'other'])).code).toBe(0);
    const cleared = await status();
    expect(value(cleared, 'walbridge_trigger_present{')).toBeUndefined();
    // Then the streamer, the standby and the status timer stop: their files keep what they last wrote.
    await streamer.stop();
    await standby.stop('fast');
    snapshots.push({
      name: 'stopped',
      snapshot: {
        primary: await read('primary'),
        stream: await read('stream', false),
        standby: await read('standby', false),
        status: { ...cleared, running: false },
      },
    });
  }, 120_000);

  it('promtool: each alert fires on the series of its failure, and only then', async () => {
    expect(snapshots.map((s) => s.name)).toEqual(['healthy', 'standby-holds', 'archiving-fails', 'archiving-still-fails', 'mended', 'trigger', 'stopped']);
    const [healthy, holds, fails, stillFails, mended, trigger, stopped] = snapshots.map((s) => s.snapshot) as Snapshot[];
    // Minutes each snapshot is held for, in order; a quiet phase lasts longer than any rule's
    // `for`, and is checked at its end. While pushes fail, PostgreSQL retries (and walbridge
    // writes the failure's time) at least every minute.
    const failing = { primary: ['walbridge_last_failure_timestamp_seconds'] };
    const phases: Phase[] = [
      [healthy!, 17],
      [holds!, 20],
      [fails!, 5, failing],
      [stillFails!, 20, failing],
      [mended!, 17],
      [trigger!, 5],
      [stopped!, 25],
    ];
    const input = inputSeries(phases);
    const alerts = alertTexts(await readFile(RULES, 'utf8'));
    const node = (instance: string) => ({ instance: `${instance}:9100`, job: 'node' });
    const fetchAlert = { command: 'fetch', namespace: NAMESPACE, standby: 'east', ...node('standby') };
    const pushAlert = { command: 'push', namespace: NAMESPACE, ...node('primary') };
    const expected: Record<number, Record<string, Record<string, string>[]>> = {
      16: {},
      36: { WalbridgeStandbyHolding: [{ ...fetchAlert, state: 'holding' }], WalbridgeStandbyBehind: [fetchAlert] },
      55: {
        WalbridgeStandbyHolding: [{ ...fetchAlert, state: 'holding' }],
        WalbridgeStandbyBehind: [fetchAlert],
        WalbridgeArchivingFailing: [pushAlert],
        WalbridgeArchiveBacklogGrowing: [pushAlert],
        WalbridgeStreamFailing: [{ command: 'stream', namespace: NAMESPACE, ...node('primary') }],
      },
      78: {},
      81: { WalbridgeTriggerPresent: [{ command: 'status', namespace: NAMESPACE, mode: 'smart', target: 'other', ...node('ops') }] },
      108: {
        WalbridgeStreamerDown: [{ command: 'stream', namespace: NAMESPACE, ...node('primary') }],
        WalbridgeStandbySilent: [fetchAlert],
        WalbridgeStatusStale: [{ command: 'status', namespace: NAMESPACE, ...node('ops') }],
      },
    };
    const tests = [
      {
        interval: '1m',
        input_series: input,
        alert_rule_test: Object.entries(expected).flatMap(([minute, firing]) =>
          Object.keys(alerts).map((name) => ({
            eval_time: `${minute}m`,
            alertname: name,
            exp_alerts: (firing[name] ?? []).map((labels) => ({
              exp_labels: { ...labels, severity: alerts[name]!.severity },
              exp_annotations: Object.fromEntries(
                Object.entries(alerts[name]!.annotations).map(([k, t]) => [k, t.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, l: string) => labels[l] ?? '')]),
              ),
            })),
          })),
        ),
      },
    ];
    expect(Object.keys(alerts)).toHaveLength(9);
    expect(new Set(Object.values(expected).flatMap((f) => Object.keys(f)))).toEqual(new Set(Object.keys(alerts))); // every alert is seen firing
    const testFile = path.join(shared, 'promtool', 'walbridge.test.yml');
    // YAML is a superset of JSON.
    await writeFile(testFile, JSON.stringify({ rule_files: [RULES], evaluation_interval: '1m', tests }, null, 1));
    const result = await run('promtool', ['test', 'rules', testFile]).then(
      (r) => ({ ok: true, out: r.stdout + r.stderr }),
      (err: { stdout: string; stderr: string }) => ({ ok: false, out: err.stdout + err.stderr }),
    );
    expect(result.ok, result.out).toBe(true);
  }, 60_000);
});

const INSTANCE: Record<Host, string> = { primary: 'primary', stream: 'primary', standby: 'standby', status: 'ops' };
/** Timestamps their writer refreshes while it runs; the others mark events and keep their time. */
const REFRESHED = ['walbridge_stream_heartbeat_timestamp_seconds', 'walbridge_fetch_state_timestamp_seconds', 'walbridge_status_timestamp_seconds'];

/** A snapshot, the minutes it is held for, and timestamps its writers refresh then beyond REFRESHED. */
type Phase = [Snapshot, number, Partial<Record<Host, string[]>>?];

/**
 * promtool's input series: each snapshot held for its minutes; a timestamp keeps the age it had
 * when the file was read (from the phase's start for events and for a stopped writer, from each
 * minute for a refreshed one); a series absent from a snapshot is absent then ("_").
 */
function inputSeries(phases: readonly Phase[]): { series: string; values: string }[] {
  const keys = new Set<string>();
  for (const [snapshot] of phases)
    for (const host of Object.keys(snapshot) as Host[]) for (const key of snapshot[host].samples.keys()) keys.add(`${host} ${key}`);
  const out: { series: string; values: string }[] = [];
  for (const hostKey of keys) {
    const [host, key] = hostKey.split(' ') as [Host, string];
    const values: string[] = [];
    let minute = 0;
    for (const [snapshot, minutes, refreshedThen] of phases) {
      const reading = snapshot[host];
      const v = reading.samples.get(key);
      const name = key.slice(0, key.indexOf('{'));
      for (let m = 0; m < minutes; m++, minute++) {
        if (v === undefined) values.push('_');
        else if (!name.endsWith('_timestamp_seconds')) values.push(String(v));
        else {
          const age = reading.at - v;
          const refreshed = REFRESHED.includes(name) || refreshedThen?.[host]?.includes(name);
          const now = refreshed && reading.running ? minute : minute - m;
          values.push(String(Math.round(now * 60 - age)));
        }
      }
    }
    out.push({ series: key.replace('{', `{instance="${INSTANCE[host]}:9100",job="node",`), values: values.join(' ') });
  }
  return out;
}

/** Each alert's severity and annotations (one-line strings in the rules file; templates use only $labels). */
function alertTexts(rules: string): Record<string, { severity: string; annotations: Record<string, string> }> {
  const out: Record<string, { severity: string; annotations: Record<string, string> }> = {};
  for (const block of rules.split(/^ {6}- alert: /m).slice(1)) {
    const name = block.slice(0, block.indexOf('\n')).trim();
    const severity = /^ {10}severity: (\w+)$/m.exec(block)?.[1] ?? '';
    const annotations: Record<string, string> = {};
    for (const m of block.matchAll(/^ {10}(summary|description): "(.*)"$/gm)) annotations[m[1]!] = m[2]!.replace(/\\"/g, '"');
    out[name] = { severity, annotations };
  }
  return out;
}
