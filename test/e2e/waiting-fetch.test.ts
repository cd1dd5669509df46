/**
 * The waiting restore_command and failover, driven as PostgreSQL drives it (child processes,
 * signals), against each backend; real WAL from PostgreSQL 15.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sealBuffer } from '../../src/codec/envelope.js';
import { ExitCode } from '../../src/errors.js';
import { parseWalFileName, segmentNumber } from '../../src/wal/names.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { BIN_DIR, runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { backgroundListening } from '../support/background.js';
import { fakeDataDir } from '../support/standby-dir.js';
import { installCopy } from '../support/install-copy.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
beforeAll(async () => {
  wal = await generateWalSegments(5);
}, 180_000);

interface Running {
  exited: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string; ms: number }>;
  kill(signal: NodeJS.Signals): void;
  /** Resolves when stderr has printed a line matching `pattern`. */
  saw(pattern: RegExp): Promise<void>;
}

/** Starts archive-fetch in the background, as PostgreSQL's startup process would. */
function startFetch(args: string[], env: Record<string, string>, binDir = BIN_DIR): Running {
  const started = Date.now();
  const child = spawn(path.join(binDir, 'archive-fetch'), args, {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    for (const w of watchers) if (w.pattern.test(stderr)) w.resolve();
  });
  return {
    exited: new Promise((resolve) => child.on('exit', (status, signal) => resolve({ status, signal, stderr, ms: Date.now() - started }))),
    kill: (signal) => child.kill(signal),
    saw: (pattern) => new Promise((resolve) => (pattern.test(stderr) ? resolve() : watchers.push({ pattern, resolve }))),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether a standby's recovery has looked at the triggers once (it then knows which ones are leftovers). */
async function firstLookDone(pg: { dir: string }): Promise<boolean> {
  return (await readFile(path.join(pg.dir, 'walbridge.state'), 'utf8').catch(() => '')).includes('"recovery"');
}

async function waitUntil(condition: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(50);
  }
}

describe.each(BACKENDS)('waiting fetch through %s', (backend) => {
  let repo: TestRepo;
  let n = 0;
  const env = (extra: Record<string, string> = {}) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: `wait${n}`, ...repo.env, ...extra });
  const push = (file: string) => runCli('archive-push', [file], env());
  const walName = (i: number) => path.basename(wal.segments[i]!);

  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  beforeEach(() => {
    n++;
  });

  it('waits for a segment that is not archived yet and restores it soon after it lands', async () => {
    const pg = await fakeDataDir('recovery');
    const fetch = startFetch([walName(0), pg.destination], env());
    await sleep(1500);
    expect((await push(wal.segments[0]!)).status).toBe(0);
    const pushedAt = Date.now(); // the push's own time is not the wait's
    const done = await fetch.exited;
    expect(done.status).toBe(0);
    expect((await readFile(pg.destination)).equals(await readFile(wal.segments[0]!))).toBe(true);
    // Picked up within a poll interval (0.25 s) plus the download, not after a long sleep.
    expect(Date.now() - pushedAt).toBeLessThan(3000);
  });

  it('holds the wait while the key an object needs is missing, and restores once it is added to the key file', async () => {
    const pg = await fakeDataDir('recovery');
    const [old, current] = [randomBytes(32).toString('base64'), randomBytes(32).toString('base64')];
    const keyFile = path.join(pg.dir, 'walbridge.keys');
    await writeFile(keyFile, `${old}\n`);
    expect((await runCli('archive-push', [wal.segments[0]!], env({ WALBRIDGE_ENCRYPTION_KEY_FILE: keyFile }))).status).toBe(0);
    await writeFile(keyFile, `${current}\n`); // rotated, and the old key dropped too early
    const fetch = startFetch([walName(0), pg.destination], env({ WALBRIDGE_ENCRYPTION_KEY_FILE: keyFile }));
    await fetch.saw(/is encrypted with key [0-9a-f]{16}, which is not among the keys given.*holding/);
    await writeFile(keyFile, `${current}\n${old}\n`);
    const done = await fetch.exited;
    expect(done.status, done.stderr).toBe(0);
    expect((await readFile(pg.destination)).equals(await readFile(wal.segments[0]!))).toBe(true);
    expect(done.stderr).not.toContain(old);
  });

  it('answers pg_rewind --restore-target-wal at once: an archived segment is restored, one not archived is "not found", no background fetcher starts', async () => {
    const pg = await fakeDataDir('recovery');
    expect((await push(wal.segments[0]!)).status).toBe(0);
    // pg_rewind runs restore_command through system(): its call has pg_rewind among its ancestors.
    const shim = await scratchDir('wb-rewind-');
    await symlink('/bin/sh', path.join(shim, 'pg_rewind'));
    const asPgRewind = (name: string) =>
      new Promise<{ status: number | null; stderr: string; ms: number }>((resolve) => {
        const started = Date.now();
        const command = `"${path.join(BIN_DIR, 'archive-fetch')}" ${name} "${path.join(pg.dir, 'pg_wal', name)}"; exit $?`; // not exec'd: the shell stays
        const child = spawn(path.join(shim, 'pg_rewind'), ['-c', command], {
          env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env() },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.on('exit', (status) => {
          clearTimeout(timer);
          resolve({ status, stderr, ms: Date.now() - started });
        });
      });
    const found = await asPgRewind(walName(0));
    expect(found.status, found.stderr).toBe(0);
    expect((await readFile(path.join(pg.dir, 'pg_wal', walName(0)))).equals(await readFile(wal.segments[0]!))).toBe(true);
    const missing = await asPgRewind(walName(1));
    expect(missing.status, missing.stderr).toBe(ExitCode.notFound);
    expect(missing.ms).toBeLessThan(10_000);
    expect(missing.stderr).toMatch(/asked by pg_rewind: answering at once, without waiting/);
    expect(await backgroundListening(path.join(pg.dir, 'pg_wal'), 'fetcher')).toBe(false);
  });

  it('after another standby was promoted, answers "not found" under standby.signal and stops (exit 200) under recovery.signal, instead of waiting for the old timeline', async () => {
    expect((await push(wal.segments[0]!)).status).toBe(0);
    // Timeline 2 branched off timeline 1 where the next segment begins: it will never be archived on timeline 1.
    const next = parseWalFileName(walName(1))!;
    const switchpoint = segmentNumber(next, 16 * 1024 * 1024) * 16n * 1024n * 1024n;
    const history = `1\t${(switchpoint >> 32n).toString(16).toUpperCase()}/${(switchpoint & 0xffffffffn).toString(16).toUpperCase()}\tno recovery target specified\n`;
    await repo.store().putIfAbsent(`wait${n}/history/00000002.history`, sealBuffer(Buffer.from(history)));
    const standby = await fakeDataDir('standby');
    const switching = await runCli('archive-fetch', [walName(1), standby.destination], env(), { timeoutMs: 20_000 });
    expect(switching.status, switching.stderr).toBe(ExitCode.notFound);
    expect(switching.stderr).toMatch(
      /timeline 2 was promoted from timeline 1 at [0-9A-F]+\/[0-9A-F]+ \(00000002\.history\), so 0{7}1[0-9A-F]{16} will never be archived: answering "not found", so that PostgreSQL switches to timeline 2/,
    );
    const waiting = await fakeDataDir('recovery');
    const stopping = await runCli('archive-fetch', [walName(1), waiting.destination], env(), { timeoutMs: 20_000 });
    expect(stopping.status, stopping.stderr).toBe(ExitCode.stopServer);
    expect(stopping.stderr).toMatch(/Under recovery\.signal PostgreSQL switches timelines only when it starts/);
    // The segment before the fork is still restored.
    expect((await runCli('archive-fetch', [walName(0), waiting.destination], env(), { timeoutMs: 20_000 })).status).toBe(0);
  });

  it('answers .history and .backup lookups at once when absent, and --no-wait for segments', async () => {
    const pg = await fakeDataDir('recovery');
    for (const name of ['00000002.history', '000000010000000000000002.00000028.backup']) {
      const t = Date.now();
      const r = await runCli('archive-fetch', [name, pg.destination], env());
      expect(r.status, name).toBe(ExitCode.notFound);
      expect(Date.now() - t).toBeLessThan(5000);
    }
    const r = await runCli('archive-fetch', ['--no-wait', walName(1), pg.destination], env());
    expect(r.status).toBe(ExitCode.notFound);
    await expect(stat(pg.destination)).rejects.toThrow();
  });

  it('serves the same segment twice and out of order', async () => {
    const pg = await fakeDataDir('recovery');
    for (const i of [0, 1, 2]) expect((await push(wal.segments[i]!)).status).toBe(0);
    for (const i of [1, 1, 0, 2, 0]) {
      const r = await runCli('archive-fetch', [walName(i), pg.destination], env());
      expect(r.status).toBe(0);
      expect((await readFile(pg.destination)).equals(await readFile(wal.segments[i]!))).toBe(true);
    }
  });

  it('smart trigger: restores everything archived, then answers "not found" at the first absent segment', async () => {
    const pg = await fakeDataDir('recovery');
    for (const i of [0, 1]) expect((await push(wal.segments[i]!)).status).toBe(0);
    expect((await runCli('archive-fetch', [walName(0), pg.destination], env())).status).toBe(0);
    expect((await runCli('walbridge', ['trigger', 'smart'], env())).status).toBe(0);
    expect((await runCli('archive-fetch', [walName(1), pg.destination], env())).status).toBe(0);
    const t = Date.now();
    const absent = await runCli('archive-fetch', [walName(2), pg.destination], env());
    expect(absent.status).toBe(ExitCode.notFound);
    expect(absent.stderr).toMatch(/smart failover/);
    expect(Date.now() - t).toBeLessThan(5000);
  });

  it('fast trigger: ends a wait within a poll interval, yet still serves segments already restored', async () => {
    const pg = await fakeDataDir('recovery');
    for (const i of [0, 1]) expect((await push(wal.segments[i]!)).status).toBe(0);
    expect((await runCli('archive-fetch', [walName(0), pg.destination], env())).status).toBe(0);
    const waiting = startFetch([walName(2), pg.destination], env());
    await sleep(1000);
    const triggeredAt = Date.now();
    expect((await runCli('walbridge', ['trigger', 'fast'], env())).status).toBe(0);
    const done = await waiting.exited;
    expect(done.status).toBe(ExitCode.notFound);
    expect(done.stderr).toMatch(/fast failover/);
    expect(Date.now() - triggeredAt, done.stderr).toBeLessThan(3000);
    // Segment 1 is archived but was never restored: a fast trigger ignores it.
    expect((await runCli('archive-fetch', [walName(1), pg.destination], env())).status).toBe(ExitCode.notFound);
    // Segment 0 was restored before: asked again (PostgreSQL re-reads), it is still served.
    expect((await runCli('archive-fetch', [walName(0), pg.destination], env())).status).toBe(0);
  });

  it('a trigger for one standby leaves the others waiting', async () => {
    const [eastDir, westDir] = [await fakeDataDir('recovery'), await fakeDataDir('recovery')];
    // Both standbys are running (their recovery has looked at the triggers) when the trigger is written.
    const west = startFetch([walName(0), westDir.destination], env({ WALBRIDGE_STANDBY: 'west' }));
    const eastWaiting = startFetch([walName(0), eastDir.destination], env({ WALBRIDGE_STANDBY: 'east' }));
    for (const dir of [eastDir, westDir]) await waitUntil(() => firstLookDone(dir));
    expect((await runCli('walbridge', ['trigger', 'fast', '--standby', 'east'], env())).status).toBe(0);
    const east = await eastWaiting.exited;
    expect(east.status).toBe(ExitCode.notFound);
    await sleep(1000);
    expect((await push(wal.segments[0]!)).status).toBe(0);
    expect((await west.exited).status).toBe(0);
    const status = await runCli('walbridge', ['trigger', 'status'], env());
    expect(status.stdout).toMatch(/fast trigger for standby "east"/);
    const json = JSON.parse((await runCli('walbridge', ['trigger', 'status', '--json'], env())).stdout) as { triggers: unknown[] };
    expect(json.triggers).toEqual([{ mode: 'fast', target: 'east', createdAt: expect.stringMatching(/^\d{4}-/), createdBy: expect.any(String) }]);
  });

  it('ignores a trigger left over from before the standby was set up, and says so', async () => {
    expect((await runCli('walbridge', ['trigger', 'smart'], env())).status).toBe(0);
    await sleep(50);
    const pg = await fakeDataDir('recovery', new Date(Date.now() + 1000)); // set up after the trigger
    const fetch = startFetch([walName(0), pg.destination], env());
    await fetch.saw(/ignoring the smart trigger.*leftover/);
    expect((await push(wal.segments[0]!)).status).toBe(0);
    expect((await fetch.exited).status).toBe(0);
    // recovery_end_command clears it.
    expect((await runCli('walbridge', ['trigger', 'clear'], env())).status).toBe(0);
    expect((await runCli('walbridge', ['trigger', 'status'], env())).stdout).toMatch(/no trigger/);
    expect(JSON.parse((await runCli('walbridge', ['trigger', 'status', '--json'], env())).stdout)).toMatchObject({ triggers: [] });
  });

  it('--max-wait fails over loudly when no segment arrives', async () => {
    const pg = await fakeDataDir('recovery');
    const r = await runCli('archive-fetch', ['--max-wait', '1', walName(3), pg.destination], env());
    expect(r.status).toBe(ExitCode.notFound);
    expect(r.stderr).toMatch(/FAILOVER: no .* for 1 s \(--max-wait\)/);
  });

  it('SIGUSR1 ends the wait as a fast failover; SIGTERM ends it by the signal, writing nothing', async () => {
    const pg = await fakeDataDir('recovery');
    const usr1 = startFetch([walName(3), pg.destination], env());
    await sleep(800);
    usr1.kill('SIGUSR1');
    const a = await usr1.exited;
    expect(a.status).toBe(ExitCode.notFound);
    expect(a.stderr).toMatch(/SIGUSR1/);

    const term = startFetch([walName(3), pg.destination], env());
    await sleep(800);
    term.kill('SIGTERM');
    const b = await term.exited;
    expect(b.signal).toBe('SIGTERM');
    // Nothing but walbridge's own directory (the background fetcher's log and pid).
    expect(await readdir(path.join(pg.dir, 'pg_wal'))).toEqual(['walbridge']);
    expect((await readdir(path.join(pg.dir, 'pg_wal', 'walbridge', 'prefetch')).catch(() => [])).length).toBeLessThanOrEqual(1);
  });

  it('through the background fetcher: waits, picks up, forwards SIGUSR1, and writes nothing for a call that was killed', async () => {
    const pg = await fakeDataDir('recovery');
    const fetcherDir = path.join(pg.dir, 'pg_wal', 'walbridge');
    const fetcherLog = () => readFile(path.join(fetcherDir, 'fetcher.log'), 'utf8').catch(() => '');
    // The first call starts the fetcher (and answers by itself); the next ones go through it.
    expect((await runCli('archive-fetch', ['--no-wait', walName(4), pg.destination], env())).status).toBe(ExitCode.notFound);
    await waitUntil(() => backgroundListening(path.join(pg.dir, 'pg_wal'), 'fetcher'));

    const waiting = startFetch([walName(0), pg.destination], env());
    await sleep(800);
    expect((await push(wal.segments[0]!)).status).toBe(0);
    const done = await waiting.exited;
    expect(done.status).toBe(0);
    expect(done.stderr).toMatch(new RegExp(`fetched ${walName(0)}`)); // the fetcher's line, repeated by the call
    expect(await fetcherLog()).toContain(`fetched ${walName(0)}`);
    expect((await readFile(pg.destination)).equals(await readFile(wal.segments[0]!))).toBe(true);

    const usr1 = startFetch([walName(3), pg.destination], env());
    await sleep(800);
    usr1.kill('SIGUSR1');
    const a = await usr1.exited;
    expect(a.status).toBe(ExitCode.notFound);
    expect(await fetcherLog()).toMatch(/SIGUSR1 received while waiting/);

    // Killed while the fetcher waits for it: the segment lands afterwards, and nothing is written.
    await writeFile(pg.destination, 'before');
    const killed = startFetch([walName(1), pg.destination], env());
    await sleep(800);
    killed.kill('SIGKILL');
    await killed.exited;
    // The fetcher stops waiting for it at its next poll (well under a second; 10 s for a loaded
    // machine). Pushed only then: a poll already under way when the call died could otherwise see
    // the segment land and spool it (never %p) without saying the call was gone.
    await waitUntil(async () => (await fetcherLog()).includes(`the server that asked for ${walName(1)} is gone`), 10_000);
    expect((await push(wal.segments[1]!)).status).toBe(0);
    await sleep(1000);
    expect(await readFile(pg.destination, 'utf8')).toBe('before');

    // Its server dies (the startup process killed) while the call waits: the call gives up and
    // writes nothing, though the segment lands afterwards.
    const server = spawn('sh', ['-c', '"$@"; exit 0', 'sh', path.join(BIN_DIR, 'archive-fetch'), walName(2), pg.destination], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env() },
      stdio: 'ignore',
    });
    await sleep(1000);
    server.kill('SIGKILL');
    await sleep(500);
    expect((await push(wal.segments[2]!)).status).toBe(0);
    await sleep(2000);
    expect(await readFile(pg.destination, 'utf8')).toBe('before');
    expect(spawnSync('pgrep', ['-f', `archive-fetch ${walName(2)} ${pg.destination}`]).status).toBe(1); // no such process left
  });

  it('"pg_ctl promote" (the promote file) ends the wait', async () => {
    const pg = await fakeDataDir('recovery');
    const fetch = startFetch([walName(3), pg.destination], env());
    await sleep(800);
    await writeFile(path.join(pg.dir, 'promote'), '');
    const done = await fetch.exited;
    expect(done.status).toBe(ExitCode.notFound);
    expect(done.stderr).toMatch(/pg_ctl promote/);
  });

  it('--cleanup deletes segments before %r after a restore; history files stay', async () => {
    const pg = await fakeDataDir('recovery');
    for (const i of [0, 1, 2, 3]) expect((await push(wal.segments[i]!)).status).toBe(0);
    const dry = await runCli('walbridge', ['cleanup', '--dry-run', walName(2)], env());
    expect(dry.status).toBe(0);
    expect(
      dry.stdout
        .trim()
        .split('\n')
        .map((k) => path.basename(k)),
    ).toEqual([walName(0), walName(1)]);
    const r = await runCli('archive-fetch', ['--cleanup', walName(3), pg.destination, walName(2)], env());
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/cleaned up 2 files/);
    const left: string[] = [];
    for await (const e of repo.store().list(`wait${n}/wal/`)) left.push(path.basename(e.key));
    expect(left).toEqual([walName(2), walName(3)]);
  });
});

describe('waiting fetch when the store is unreachable', () => {
  const unreachable = {
    WALBRIDGE_REPO: 's3://walbridge-test/x',
    WALBRIDGE_NAMESPACE: 'n',
    AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9', // discard port: connection refused
    AWS_ACCESS_KEY_ID: 'k',
    AWS_SECRET_ACCESS_KEY: 's',
    AWS_REGION: 'us-east-1',
    WALBRIDGE_S3_PATH_STYLE: '1',
    WALBRIDGE_TIMEOUT: '2',
  };

  it('with standby.signal, reports the failure with its own status, never "not found"', async () => {
    const pg = await fakeDataDir('standby');
    const r = await runCli('archive-fetch', ['000000010000000000000003', pg.destination], unreachable);
    expect(r.status).toBe(ExitCode.storeUnavailable);
    expect(r.stderr).toMatch(/ERROR: store unreachable/);
  });

  it('with recovery.signal, keeps waiting (a failure status would promote the standby)', async () => {
    const pg = await fakeDataDir('recovery');
    const fetch = startFetch(['000000010000000000000003', pg.destination], unreachable);
    await fetch.saw(/holding: under recovery.signal any other answer would end recovery/);
    await sleep(1000);
    fetch.kill('SIGTERM');
    expect((await fetch.exited).signal).toBe('SIGTERM');
  });
});

describe('waiting fetch while walbridge itself cannot be loaded (an install in progress)', () => {
  it('holds under recovery.signal, answers a promotion request, and runs the command once the build is back', async () => {
    const walName = (i: number) => path.basename(wal.segments[i]!);
    const copy = await installCopy();
    const repo = await createRepo('file');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'unbuilt' };
    try {
      await copy.removeBundle();
      // Asked to promote while it cannot load: "not found" (exit 1), as for any requested failover.
      const promoted = await fakeDataDir('recovery');
      const asked = startFetch([walName(0), promoted.destination], env, copy.binDir);
      await asked.saw(/walbridge is not built, or being reinstalled .*holding/);
      await writeFile(path.join(promoted.dir, 'promote'), '');
      const answer = await asked.exited;
      expect(answer.status, answer.stderr).toBe(ExitCode.notFound);
      expect(answer.stderr).toMatch(/failover requested .* while walbridge cannot be loaded/);
      // Otherwise it holds, and once the build is back the command runs (in a new process) and restores.
      const pg = await fakeDataDir('recovery');
      const held = startFetch([walName(0), pg.destination], env, copy.binDir);
      await held.saw(/holding/);
      await sleep(2500);
      await copy.restoreBundle();
      expect((await runCli('archive-push', [wal.segments[0]!], env)).status).toBe(0);
      const done = await held.exited;
      expect(done.status, done.stderr).toBe(0);
      expect((await readFile(pg.destination)).equals(await readFile(wal.segments[0]!))).toBe(true);
      // Without recovery.signal (or with --no-wait) PostgreSQL retries by itself: exit 70 at once.
      await copy.removeBundle();
      const standby = await fakeDataDir('standby');
      const r = await new Promise<{ status: number | null }>((resolve) => {
        const child = spawn(path.join(copy.binDir, 'archive-fetch'), [walName(0), standby.destination], {
          env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env },
          stdio: 'ignore',
        });
        child.on('exit', (status) => resolve({ status }));
      });
      expect(r.status).toBe(ExitCode.internal);
    } finally {
      await copy.cleanup();
    }
  });
});
