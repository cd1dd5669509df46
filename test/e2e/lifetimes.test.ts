/**
 * Lifetimes and signals of walbridge's processes beside real PostgreSQL 15 (issue 14): nothing
 * outlives its server, nothing runs from or leaves sockets in a data directory, whatever its path
 * length; SIGUSR1 never opens Node's inspector and, sent to a waiting call, promotes; one
 * background process per pg_wal under any race.
 *
 * Processes are found through /proc (test/support/procs.ts): a call's working directory is the
 * data directory (PostgreSQL runs its commands there), a background process's command line names
 * the pg_wal it serves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  baseBackup,
  chownToClusterUser,
  clusterEnv,
  clusterUser,
  dataDirLength,
  destroyAll,
  generateWalSegments,
  initPrimary,
  makeSharedDir,
  runAsClusterUser,
  runAsSelf,
  type BaseBackupOptions,
  type GeneratedWal,
  type PgCluster,
} from '../servers/postgres.js';
import { archiveEverything } from '../support/archiving.js';
import { BIN_DIR } from '../support/cli.js';
import { backgroundProcs, inspectorListeners, listeningUnixSockets, procInfo, procsIn, walbridgeProcsOf, type ProcInfo } from '../support/procs.js';
import { createRepo, type TestRepo } from '../support/repos.js';
import { fakeDataDir } from '../support/standby-dir.js';

const RESTORE = 'archive-fetch %f %p %r';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let repo: TestRepo;
/** Shared by the tests that only need a primary to follow (each makes its own standbys). */
let primary: PgCluster;
let wal: GeneratedWal;
/** Runtime directories (sockets) of the background processes this file ran as root. */
const rootRuntimeDirs = new Set<string>();

beforeAll(async () => {
  repo = await createRepo('file');
  const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'lifetimes' };
  [primary, wal] = await Promise.all([initPrimary({ name: 'lt-primary', env, archiveCommand: 'archive-push %p' }), generateWalSegments(2)]);
  await primary.psql("create table t (id serial primary key, note text); insert into t (note) values ('first')");
  await archiveEverything(primary);
}, 180_000);

afterAll(async () => {
  await destroyAll();
  for (const dir of rootRuntimeDirs) await rm(dir, { recursive: true, force: true });
  await repo?.cleanup();
});

async function waitUntil<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

function onlyOne<T>(list: T[]): T | undefined {
  return list.length === 1 ? list[0] : undefined;
}

/** Milliseconds until `list()` is empty; throws naming what is left after `timeoutMs` (and what `explain` adds). */
async function msUntilGone(what: string, list: () => ProcInfo[], timeoutMs: number, explain?: () => Promise<string>): Promise<number> {
  const started = Date.now();
  for (;;) {
    const left = list();
    if (left.length === 0) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      const lines = left.map((p) => `  ${p.pid} (cwd ${p.cwd}; ${ancestry(p.pid)}) ${p.argv.join(' ')}`).join('\n');
      throw new Error(`${what}: still running after ${timeoutMs} ms:\n${lines}${explain ? `\n${await explain()}` : ''}`);
    }
    await sleep(50);
  }
}

/** `pid`'s state and its parents up to init ("S sh <- S postgres <- ..."), from /proc: where a process that should have gone hangs on. */
function ancestry(pid: number): string {
  const steps: string[] = [];
  for (let p = pid, hops = 0; p > 1 && hops < 10; hops++) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      steps.push(`${p} gone`);
      break;
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    steps.push(`${p} ${state} ${comm}`);
    p = Number(ppid);
  }
  return steps.join(' <- ');
}

/** An archive-fetch call: its sh front-end, or the Node program the front-end became (exec: the same pid). */
function isFetchCall(p: ProcInfo): boolean {
  return p.argv.some((a) => a.endsWith('/bin/archive-fetch') || a.endsWith('/bin/node/archive-fetch.mjs'));
}

/** The archive-fetch call named in pg_wal/walbridge/waiting.pid, if it runs. */
async function registeredCall(c: PgCluster): Promise<ProcInfo | undefined> {
  const text = await readFile(path.join(c.walDir, 'walbridge', 'waiting.pid'), 'utf8').catch(() => '');
  const pid = Number(text.split(':')[0]);
  const p = pid > 0 ? procInfo(pid) : undefined;
  return p && isFetchCall(p) ? p : undefined;
}

/** The archive-fetch call PostgreSQL runs for `c` (in its data directory), as /proc shows it. */
function runningCall(c: PgCluster): ProcInfo | undefined {
  const calls = walbridgeProcsOf(c.dataDir).filter((p) => p.cwd === c.dataDir && isFetchCall(p));
  return calls.length === 1 ? calls[0] : undefined;
}

/** A standby under recovery.signal, caught up with `from`, its call waiting for the next segment and its fetcher running. */
async function waitingStandby(from: PgCluster, name: string, opts: Partial<BaseBackupOptions> = {}): Promise<PgCluster> {
  const s = await baseBackup(from, {
    name,
    recovery: { restoreCommand: RESTORE, signal: 'recovery' },
    conf: { archive_command: '' },
    start: { wait: false },
    ...opts,
  });
  await s.waitFor('select count(*) > 0 from t', 't', 60_000);
  // Caught up: the call for the next segment has been waiting a moment (not one restoring a segment).
  let since: { pid: number; at: number } | undefined;
  await waitUntil(
    `${name}: a waiting archive-fetch and its background fetcher`,
    () => {
      const call = runningCall(s);
      if (!call || call.pid !== since?.pid) since = call && { pid: call.pid, at: Date.now() };
      return since !== undefined && Date.now() - since.at > 500 && backgroundProcs(s.walDir, 'fetcher').length === 1;
    },
    30_000,
  );
  return s;
}

/** Adds a row on the primary and archives it; returns the note. */
async function newRow(p: PgCluster, note: string): Promise<string> {
  await p.psql(`insert into t (note) values ('${note}')`);
  await archiveEverything(p);
  return note;
}

/** Where the background processes of `uid` keep their sockets (src/util/runtime-dir.ts): /tmp/walbridge-<uid>/<16 hex>/. */
function runtimeDirPattern(uid: number, role: 'pusher' | 'fetcher', tmp = '/tmp'): RegExp {
  return new RegExp(`^${tmp.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}/walbridge-${uid}/[0-9a-f]{16}/${role}\\.sock$`);
}

/** The one socket path `pid` listens on (abstract names, the single-instance locks, left out). */
function listeningSocket(pid: number): string | undefined {
  const paths = listeningUnixSockets(pid).filter((p) => !p.startsWith('@'));
  return paths.length === 1 ? paths[0] : undefined;
}

async function expectPrivateSocket(pid: number, role: 'pusher' | 'fetcher', uid: number): Promise<string> {
  const socket = await waitUntil(`the ${role} ${pid} to listen`, () => listeningSocket(pid), 15_000);
  expect(socket).toMatch(runtimeDirPattern(uid, role));
  const dir = await stat(path.dirname(socket));
  expect(dir.uid).toBe(uid);
  expect(dir.mode & 0o777).toBe(0o700);
  expect((await stat(socket)).isSocket()).toBe(true);
  return socket;
}

async function socketsIn(dir: string): Promise<string> {
  const r = await runAsSelf('/usr/bin/find', [dir, '-type', 's']);
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

describe('lifetimes with real PostgreSQL 15', () => {
  it('kill -9 of a standby postmaster: its waiting call and fetcher go without writing %p, and the standby starts again', async () => {
    const standby = await waitingStandby(primary, 'lt-crash');
    const call = runningCall(standby)!;
    const [fetcher] = backgroundProcs(standby.walDir, 'fetcher');
    const runtimeDir = path.dirname(await waitUntil('the fetcher to listen', () => listeningSocket(fetcher!.pid), 15_000));

    const postmaster = await standby.crashPostmaster();
    const explain = async () =>
      `the call waiting before the crash: ${call.pid}; postmaster.pid now: ${(await readFile(path.join(standby.dataDir, 'postmaster.pid'), 'utf8').catch(() => '-')).split('\n')[0]}\n` +
      `--- fetcher.log ---\n${(await readFile(path.join(standby.walDir, 'walbridge', 'fetcher.log'), 'utf8').catch(() => '')).slice(-3000)}\n--- server log tail ---\n${await standby.logTail(30)}`;
    // 0.2-1 s measured; the bound is for a machine whose disk is saturated by the heavy files run
    // beside this one (an exiting process waits on its last unlink there): outliving is what fails.
    const walbridgeMs = await msUntilGone('walbridge processes of the crashed standby', () => walbridgeProcsOf(standby.dataDir), 30_000, explain);
    // What is left of the server (the startup process sits in system() until the call ends) goes with it.
    const serverMs = await msUntilGone('processes in the crashed standby data directory', () => procsIn(standby.dataDir), 30_000);
    console.log(
      `kill -9 of postmaster ${postmaster}: waiting call ${call.pid} and fetcher ${fetcher!.pid} gone after ${(walbridgeMs / 1000).toFixed(1)} s, every process of the standby after ${((walbridgeMs + serverMs) / 1000).toFixed(1)} s`,
    );
    expect(existsSync(path.join(standby.walDir, 'RECOVERYXLOG'))).toBe(false);
    expect(existsSync(runtimeDir)).toBe(false); // the socket's directory went with the last process listening there
    expect(await readFile(path.join(standby.walDir, 'walbridge', 'fetcher.log'), 'utf8')).toContain(
      `stopping: its server (postmaster pid ${postmaster}) is gone`,
    );
    expect(await standby.log()).toMatch(/archive-fetch: ERROR: the server that asked for [0-9A-F]{24} is gone; stopping without writing anything/);

    // "pre-existing shared memory block is still in use" while anything of the old server is attached.
    await standby.start({ wait: false });
    const note = await newRow(primary, 'after the crash');
    await standby.waitFor(`select count(*) from t where note = '${note}'`, '1', 60_000);
    expect(backgroundProcs(standby.walDir, 'fetcher').map((p) => p.pid)).not.toContain(fetcher!.pid);
    await standby.destroy();
  }, 180_000);

  it('clean stop of a standby and of a primary whose pusher runs (S3): nothing of them runs after 10 s, rm -rf of the data directory stays done', async () => {
    const s3 = await createRepo('s3');
    const env = { WALBRIDGE_REPO: s3.url, WALBRIDGE_NAMESPACE: 'stop', ...s3.env };
    const p = await initPrimary({ name: 'lt-stop-primary', env, archiveCommand: 'archive-push %p' });
    await p.psql("create table t (id serial primary key, note text); insert into t (note) values ('first')");
    await archiveEverything(p);
    const s = await waitingStandby(p, 'lt-stop-standby');
    // A burst, so the pusher has work and serves the archiver.
    for (let i = 0; i < 3; i++) await p.psql(`insert into t (note) values ('burst ${i}'); select pg_switch_wal()`);
    await archiveEverything(p);
    const pusher = await waitUntil('the pusher of the primary', () => onlyOne(backgroundProcs(p.walDir, 'pusher')), 15_000);
    const [fetcher] = backgroundProcs(s.walDir, 'fetcher');
    const runtimeDirs = await Promise.all(
      [pusher!, fetcher!].map(async (b) => path.dirname(await waitUntil(`${b.pid} to listen`, () => listeningSocket(b.pid), 15_000))),
    );

    // Every background process of either cluster, sampled until they are gone: where they run.
    const cwds = new Map<number, Set<string>>();
    const sample = () => {
      for (const c of [p, s]) {
        for (const role of ['pusher', 'fetcher'] as const) {
          for (const proc of backgroundProcs(c.walDir, role)) {
            const seen = cwds.get(proc.pid) ?? new Set<string>();
            seen.add(proc.cwd ?? '(unreadable)');
            cwds.set(proc.pid, seen);
          }
        }
      }
    };
    sample();
    const sampler = setInterval(sample, 100);
    try {
      const results = await Promise.all(
        [s, p].map(async (c) => {
          const started = Date.now();
          await c.stop('fast');
          const stopMs = Date.now() - started;
          const goneMs = await msUntilGone(`walbridge processes of ${c.name}`, () => walbridgeProcsOf(c.dataDir), 10_000);
          return { c, stopMs, goneMs };
        }),
      );
      for (const { c, stopMs, goneMs } of results) {
        console.log(
          `${c.name}: pg_ctl stop -m fast took ${(stopMs / 1000).toFixed(1)} s; its walbridge processes were gone ${(goneMs / 1000).toFixed(1)} s later`,
        );
      }
    } finally {
      clearInterval(sampler);
    }
    expect([...cwds.keys()].length).toBeGreaterThanOrEqual(2); // the standby's fetcher and the primary's pusher at least
    for (const dir of runtimeDirs) expect(existsSync(dir), dir).toBe(false); // the sockets' directories went with them
    for (const [pid, seen] of cwds) expect({ pid, cwds: [...seen] }).toEqual({ pid, cwds: ['/'] });

    await Promise.all(
      [s, p].map(async (c) => {
        const r = await runAsSelf('/bin/rm', ['-rf', c.dataDir]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        await sleep(3_000);
        expect(existsSync(c.dataDir)).toBe(false); // nothing re-created it
      }),
    );
    await s.destroy();
    await p.destroy();
  });

  describe('a data directory path of 200 characters', () => {
    /** A directory the cluster user can enter and write, whose path is exactly `length` characters. */
    async function dirOfLength(label: string, length: number): Promise<string> {
      const base = await makeSharedDir(label);
      const pad = length - base.length - 1;
      expect(pad).toBeGreaterThan(0);
      const dir = path.join(base, 'd'.repeat(pad));
      await mkdir(dir, { mode: 0o755 });
      await chownToClusterUser(dir);
      return dir;
    }

    async function longPathPair(variant: string, tmp?: string): Promise<void> {
      const [pName, sName] = [`lt-long-p${variant}`, `lt-long-s${variant}`];
      const base = await makeSharedDir(`long${variant}`);
      const parentDir = path.join(base, 'p'.repeat(200 - dataDirLength(path.join(base, ''), pName) - 1));
      await mkdir(parentDir, { mode: 0o755 });
      expect(dataDirLength(parentDir, pName)).toBe(200);
      expect(dataDirLength(parentDir, sName)).toBe(200);
      const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: `long${variant}`, ...(tmp ? { TMPDIR: tmp } : {}) };
      const p = await initPrimary({ name: pName, env, archiveCommand: 'archive-push %p', parentDir });
      expect(p.dataDir.length).toBe(200);
      await p.psql("create table t (id serial primary key, note text); insert into t (note) values ('first')");
      // A burst of segments: the archiver's calls are answered by the pusher (a marker, or over its socket).
      for (let i = 0; i < 4; i++) await p.psql(`insert into t (note) values ('burst ${i}'); select pg_switch_wal()`);
      await archiveEverything(p);
      const pusher = await waitUntil('the pusher', () => onlyOne(backgroundProcs(p.walDir, 'pusher')), 15_000);
      const pusherSocket = await expectPrivateSocket(pusher!.pid, 'pusher', clusterUser().uid);
      const pusherLog = await readFile(path.join(p.walDir, 'walbridge', 'pusher.log'), 'utf8');
      const primaryLog = await p.log();
      const servedByPusher =
        /archive-push: [0-9A-F]{24} was archived (ahead of time|by the background pusher)/.test(primaryLog) ||
        [...pusherLog.matchAll(/walbridge pusher: archived ([0-9A-F]{24})/g)].some((m) => primaryLog.includes(`archive-push: archived ${m[1]}`));
      expect(servedByPusher).toBe(true);

      const s = await waitingStandby(p, sName, { parentDir });
      expect(s.dataDir.length).toBe(200);
      const note = await newRow(p, 'through the fetcher');
      await s.waitFor(`select count(*) from t where note = '${note}'`, '1', 60_000);
      expect(await s.log()).toMatch(/archive-fetch: fetched [0-9A-F]{24}/); // the fetcher's line, repeated by the call
      const [fetcher] = backgroundProcs(s.walDir, 'fetcher');
      const fetcherSocket = await expectPrivateSocket(fetcher!.pid, 'fetcher', clusterUser().uid);
      // Two clusters, two runtime directories.
      expect(path.dirname(pusherSocket)).not.toBe(path.dirname(fetcherSocket));
      expect(await socketsIn(p.dataDir)).toBe('');
      expect(await socketsIn(s.dataDir)).toBe('');
      if (tmp) expect(await socketsIn(tmp)).toBe('');
      console.log(`data directories of ${p.dataDir.length} characters${tmp ? ` and TMPDIR of ${tmp.length}` : ''}: sockets ${pusherSocket}, ${fetcherSocket}`);
      await s.destroy();
      await p.destroy();
    }

    it('archive-push, archive-fetch, the pusher and the fetcher work; no socket in the data directory', async () => {
      const longTmp = await dirOfLength('tmp', 180);
      await Promise.all([longPathPair('a'), longPathPair('b', longTmp)]);
    }, 120_000);
  });
});

// -------------------------------------------------------------------------------------------
// Signals
// -------------------------------------------------------------------------------------------

/** mulberry32: a small seeded generator, so a failing run can be replayed (WALBRIDGE_SIGUSR1_SEED). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startedAt: number;
  readonly exited: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  running(): boolean;
  /** What it printed so far (a background process started by hand logs to stderr, not to pg_wal/walbridge/). */
  stderr(): string;
}

/** Starts one of the executables as PostgreSQL (or a call, for a background process) would: its own environment only. */
function start(executable: 'archive-push' | 'archive-fetch' | 'walbridge', args: string[], env: Record<string, string>, cwd?: string): Started {
  const child = spawn(path.join(BIN_DIR, executable), args, {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root', ...env },
    cwd,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  let done = false;
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('close', (status, signal) => {
      done = true;
      resolve({ status, signal, stderr });
    }),
  );
  return { child, pid: child.pid!, startedAt: Date.now(), exited, running: () => !done && procInfo(child.pid!) !== undefined, stderr: () => stderr };
}

/** CPU time the process has used (all its threads), in ms: how far its start-up got, whatever the machine's load. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

interface Signalled {
  /** False if the process had ended before the moment came. */
  readonly sent: boolean;
  /** The process's CPU time when it was signalled. */
  readonly cpuMs: number;
}

/** Sends SIGUSR1 `delayMs` after the start. */
async function usr1At(p: Started, delayMs: number): Promise<Signalled> {
  await sleep(Math.max(0, p.startedAt + delayMs - Date.now()));
  if (!p.running()) return { sent: false, cpuMs: 0 };
  const cpu = cpuMs(p.pid);
  p.child.kill('SIGUSR1');
  return { sent: true, cpuMs: cpu };
}

/** Samples inspector listeners of `pids()` every 20 ms until stopped; returns what it saw. */
function watchListeners(pids: () => number[]): () => string[] {
  const seen = new Set<string>();
  const look = () => {
    for (const f of inspectorListeners(pids())) seen.add(f);
  };
  const timer = setInterval(look, 20);
  return () => {
    clearInterval(timer);
    look();
    return [...seen];
  };
}

/**
 * Node runs no JavaScript during its first ~100 ms (here: ~95 ms of CPU time, ~90 ms of wall time
 * on an idle machine, much longer under load). A SIGUSR1 then either kills the process (before
 * Node's own handler exists) or reaches Node's inspector, which cannot listen on the shebang's
 * address and says "Starting inspector on 192.0.2.1:65535 failed": known and documented. The
 * moment is judged by the CPU time the process had used, which load stretches far less than wall
 * time, though not to nothing: with the suite's other files on the same two cores, signals were
 * absorbed by Node at 200 and 210 ms of CPU (the shell front-end's children count too). From
 * EARLY_CPU_MS on, only walbridge's own handling is acceptable.
 */
const EARLY_CPU_MS = 300;
const DEBUGGER = /Debugger listening/;
const ABSORBED = /Starting inspector on 192\.0\.2\.1:65535 failed/;

describe('SIGUSR1', () => {
  const trials = Number(process.env['WALBRIDGE_SIGUSR1_TRIALS'] ?? 30);
  const seed = Number(process.env['WALBRIDGE_SIGUSR1_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const env = (namespace: string) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_BACKGROUND_IDLE: '30' });

  it('at random moments to archive-push, a waiting archive-fetch, the pusher and the fetcher: never an inspector; pushes succeed, background processes keep serving', async () => {
    console.log(`SIGUSR1 trials: ${trials} per executable, delays 0-800 ms, seed ${seed} (WALBRIDGE_SIGUSR1_SEED=${seed} replays it)`);
    const segment = wal.segments[0]!;
    const name = path.basename(segment);
    const next = path.basename(wal.segments[1]!);
    const setup = await runAsSelf(path.join(BIN_DIR, 'archive-push'), ['--push-concurrency', '1', segment], {
      env: { PATH: process.env['PATH']!, HOME: '/root', ...env('usr1') },
    });
    expect(setup.code).toBe(0);
    const outcomes: Record<string, Record<string, number>> = {};
    /** The latest moment (wall ms after the start, CPU ms) at which a signal met the documented early behaviour. */
    const latestEarly: Record<string, { wallMs: number; cpuMs: number }> = {};
    const fail: string[] = [];
    const check = (ok: boolean, what: string) => {
      if (!ok) fail.push(what);
    };
    /** Records an outcome; an early one is accepted only before EARLY_CPU_MS of CPU. */
    const record = (kind: string, outcome: string, early: boolean, delay: number, at: Signalled, detail: string) => {
      if (early) {
        check(at.cpuMs < EARLY_CPU_MS, `${kind}: SIGUSR1 at ${delay} ms (${at.cpuMs} ms of CPU): ${outcome}, but JavaScript had run by then: ${detail}`);
        const l = (latestEarly[kind] ??= { wallMs: 0, cpuMs: 0 });
        latestEarly[kind] = { wallMs: Math.max(l.wallMs, delay), cpuMs: Math.max(l.cpuMs, at.cpuMs) };
      }
      (outcomes[kind] ??= {})[outcome] = (outcomes[kind]![outcome] ?? 0) + 1;
    };

    const pushTrials = async (rand: () => number) => {
      for (let i = 0; i < trials; i++) {
        const delay = Math.floor(rand() * 800);
        const p = start('archive-push', [segment], { ...env(`usr1-push-${i}`), WALBRIDGE_PUSH_CONCURRENCY: '1' });
        const stop = watchListeners(() => [p.pid]);
        const at = await usr1At(p, delay);
        const r = await p.exited;
        const listeners = stop();
        check(listeners.length === 0, `push #${i} (${delay} ms): ${listeners.join('; ')}`);
        check(!DEBUGGER.test(r.stderr), `push #${i} (${delay} ms) printed: ${r.stderr}`);
        const detail = `exit ${r.status ?? r.signal}: ${r.stderr}`;
        if (!at.sent) check(r.status === 0, `push #${i} (no signal): ${detail}`);
        else if (r.status === 0)
          record('archive-push', ABSORBED.test(r.stderr) ? 'archived (signal absorbed by Node)' : 'archived', ABSORBED.test(r.stderr), delay, at, detail);
        else if (r.signal === 'SIGUSR1') record('archive-push', 'killed by SIGUSR1 before Node ran', true, delay, at, detail);
        else check(false, `push #${i}: SIGUSR1 at ${delay} ms: ${detail}`);
        if (!at.sent) (outcomes['archive-push'] ??= {})['done before the signal'] = (outcomes['archive-push']!['done before the signal'] ?? 0) + 1;
      }
    };

    const fetchTrials = async (rand: () => number) => {
      const pg = await fakeDataDir('recovery');
      for (let i = 0; i < trials; i++) {
        const delay = Math.floor(rand() * 800);
        const p = start('archive-fetch', [next, 'pg_wal/RECOVERYXLOG'], { ...env('usr1'), WALBRIDGE_PREFETCH: '0' }, pg.dir);
        const stop = watchListeners(() => [p.pid]);
        const at = await usr1At(p, delay);
        // A failover answers within a second or two on a quiet machine; beside the heavy files a
        // call signalled early may not reach its first poll for several seconds (seen: more than 5).
        // A signal Node absorbed (it says so) changes nothing.
        let ended: unknown;
        void p.exited.then(() => (ended = true));
        const deadline = Date.now() + 20_000;
        while (!ended && Date.now() < deadline && !(ABSORBED.test(p.stderr()) && Date.now() - p.startedAt > delay + 1_000)) await sleep(50);
        const stillWaiting = !ended;
        if (stillWaiting) p.child.kill('SIGTERM');
        const r = await p.exited;
        const listeners = stop();
        check(listeners.length === 0, `fetch #${i} (${delay} ms): ${listeners.join('; ')}`);
        check(!DEBUGGER.test(r.stderr), `fetch #${i} (${delay} ms) printed: ${r.stderr}`);
        check(!existsSync(pg.destination), `fetch #${i} wrote %p`);
        const detail = `${stillWaiting ? 'still waiting' : `exit ${r.status ?? r.signal}`}: ${r.stderr}`;
        check(at.sent, `fetch #${i} ended before the signal: ${detail}`);
        if (r.status === 1 && /SIGUSR1 received/.test(r.stderr)) record('archive-fetch', 'failover', false, delay, at, detail);
        else if (stillWaiting && ABSORBED.test(r.stderr)) record('archive-fetch', 'absorbed by Node, kept waiting', true, delay, at, detail);
        else if (r.signal === 'SIGUSR1') record('archive-fetch', 'killed by SIGUSR1 before Node ran', true, delay, at, detail);
        else check(false, `fetch #${i}: SIGUSR1 at ${delay} ms: ${detail}`);
      }
      await rm(pg.dir, { recursive: true, force: true });
    };

    /** A background process started by hand as a call would start it, signalled, then asked to serve. */
    const backgroundTrials = async (role: 'pusher' | 'fetcher', rand: () => number) => {
      for (let i = 0; i < trials; i++) {
        const delay = Math.floor(rand() * 800);
        const pg = await fakeDataDir('recovery');
        const walDir = path.join(pg.dir, 'pg_wal');
        await mkdir(path.join(walDir, 'walbridge'), { mode: 0o700 });
        await mkdir(path.join(walDir, 'archive_status'));
        const e = env(role === 'pusher' ? `usr1-pusher-${i}` : 'usr1');
        const bg = start('walbridge', [role, walDir], e, '/');
        const stop = watchListeners(() => [bg.pid]);
        const at = await usr1At(bg, delay);
        const socket = await waitUntil(`the ${role}`, () => (bg.running() ? listeningSocket(bg.pid) : 'ended'), 15_000, 20);
        let served = false;
        if (socket !== 'ended') {
          rootRuntimeDirs.add(path.dirname(socket));
          if (role === 'pusher') {
            await link(segment, path.join(walDir, name));
            await writeFile(path.join(walDir, 'archive_status', `${name}.ready`), '');
            const r = await start('archive-push', [`pg_wal/${name}`], e, pg.dir).exited;
            served = r.status === 0 && bg.stderr().includes(`walbridge pusher: archived ${name}`);
          } else {
            const r = await start('archive-fetch', ['--no-wait', name, 'pg_wal/RECOVERYXLOG'], e, pg.dir).exited;
            served = r.status === 0 && bg.stderr().includes(`walbridge fetcher: fetched ${name}`);
          }
          served &&= bg.running();
          bg.child.kill('SIGTERM');
        }
        const r = await bg.exited;
        const listeners = stop();
        check(listeners.length === 0, `${role} #${i} (${delay} ms): ${listeners.join('; ')}`);
        check(!DEBUGGER.test(r.stderr), `${role} #${i} (${delay} ms) printed: ${r.stderr}`);
        const detail = `${served ? 'served' : 'did not serve'}, exit ${r.status ?? r.signal}: ${r.stderr}`;
        check(at.sent, `${role} #${i} ended before the signal: ${detail}`);
        if (served)
          record(role, ABSORBED.test(r.stderr) ? 'signal absorbed by Node, served' : 'signalled, kept serving', ABSORBED.test(r.stderr), delay, at, detail);
        else if (socket === 'ended' && r.signal === 'SIGUSR1') record(role, 'killed by SIGUSR1 before Node ran', true, delay, at, detail);
        else check(false, `${role} #${i}: SIGUSR1 at ${delay} ms: ${detail}`);
        await rm(pg.dir, { recursive: true, force: true });
      }
    };

    const started = Date.now();
    await Promise.all([
      pushTrials(seeded(seed)),
      fetchTrials(seeded(seed + 1)),
      backgroundTrials('pusher', seeded(seed + 2)),
      backgroundTrials('fetcher', seeded(seed + 3)),
    ]);
    console.log(
      `SIGUSR1 outcomes (${((Date.now() - started) / 1000).toFixed(0)} s): ${JSON.stringify(outcomes)}; ` +
        `latest documented early outcome (wall ms after start / CPU ms): ${JSON.stringify(latestEarly)}`,
    );
    expect(fail).toEqual([]);
  }, 600_000);

  it('to the waiting call of a real standby (the pid in waiting.pid) promotes it; walbridge promote promotes another', async () => {
    const [a, b] = await Promise.all([waitingStandby(primary, 'lt-usr1'), waitingStandby(primary, 'lt-promote')]);
    const call = (await registeredCall(a))!;
    expect(call?.pid).toBe(runningCall(a)?.pid); // the call itself, not its sh -c
    const started = Date.now();
    process.kill(call.pid, 'SIGUSR1');
    const [, promoted] = await Promise.all([
      a
        .waitFor('select pg_is_in_recovery()', 'f', 30_000, { intervalMs: 100 })
        .then(() => console.log(`SIGUSR1 to the waiting call: promoted after ${((Date.now() - started) / 1000).toFixed(1)} s`)),
      runAsClusterUser('walbridge', ['promote', b.dataDir], { env: clusterEnv(b.env) }).then((r) => {
        console.log(`walbridge promote: exit ${r.code} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return r;
      }),
    ]);
    expect(promoted.stderr).toMatch(/SIGUSR1 to the postmaster \d+ and to the waiting archive-fetch \d+/);
    expect(promoted.code).toBe(0);
    for (const c of [a, b]) {
      expect(await c.psql('select pg_is_in_recovery()')).toBe('f');
      expect(await c.psql('select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)')).toBe('00000002');
      expect(await c.log()).not.toMatch(/terminated by signal/);
    }
    expect(await a.log()).toMatch(/SIGUSR1 received while waiting/);
    await Promise.all([a.destroy(), b.destroy()]);
  });
});

describe('one background process per pg_wal', () => {
  it('8 pushers and 8 fetchers started at once for one pg_wal (with stale pid files): exactly one of each is left, listening, named by its pid file', async () => {
    const e = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'race', WALBRIDGE_BACKGROUND_IDLE: '30' };
    // Seen with the pid-file lock this replaced: two of 8 left in about one round in five.
    for (let round = 0; round < 3; round++) {
      const pg = await fakeDataDir('recovery');
      const walDir = path.join(pg.dir, 'pg_wal');
      await mkdir(path.join(walDir, 'walbridge'), { mode: 0o700 });
      await mkdir(path.join(walDir, 'archive_status'));
      // Stale pid files, as a killed process leaves them (not in round 0): the race must not depend on them.
      if (round > 0) for (const role of ['pusher', 'fetcher']) await writeFile(path.join(walDir, 'walbridge', `${role}.pid`), '999999\n');
      const started = Date.now();
      const all = Array.from({ length: 16 }, (_, i) => start('walbridge', [i % 2 ? 'fetcher' : 'pusher', walDir], e, '/'));
      const alive = (role: 'pusher' | 'fetcher') => all.filter((p, i) => (i % 2 ? 'fetcher' : 'pusher') === role && p.running());
      await waitUntil('all but one of each role to step down', () => alive('pusher').length <= 1 && alive('fetcher').length <= 1, 30_000);
      const settledMs = Date.now() - started;
      await sleep(2_000);
      for (const role of ['pusher', 'fetcher'] as const) {
        const left = alive(role);
        expect(left).toHaveLength(1);
        expect(backgroundProcs(walDir, role).map((p) => p.pid)).toEqual([left[0]!.pid]);
        const socket = await waitUntil(`the ${role} to listen`, () => listeningSocket(left[0]!.pid), 10_000);
        rootRuntimeDirs.add(path.dirname(socket));
        expect(path.basename(socket)).toBe(`${role}.sock`); // where: the tests of long paths
        expect(Number(await readFile(path.join(walDir, 'walbridge', `${role}.pid`), 'utf8'))).toBe(left[0]!.pid);
      }
      for (const p of all) if (p.running()) p.child.kill('SIGTERM');
      const results = await Promise.all(all.map((p) => p.exited));
      // The ones that stepped down did so quietly and successfully.
      expect(results.filter((r) => r.signal === null).map((r) => r.status)).toEqual(Array(14).fill(0));
      console.log(`round ${round}: 16 started at once; one pusher and one fetcher left after ${(settledMs / 1000).toFixed(1)} s`);
      await rm(pg.dir, { recursive: true, force: true });
    }
  }, 120_000);
});
