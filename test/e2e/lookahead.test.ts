/**
 * Lookahead push, driven the archiver's way: a pg_wal with `.ready` files, archive-push called
 * once per file in the archiver's order, `.ready` renamed to `.done` after each success.
 */
import { copyFile, mkdir, readdir, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { backgroundSocket } from '../../src/archive/local-layout.js';
import { ExitCode } from '../../src/errors.js';
import { clusterRuntime, ensureRuntimeDir } from '../../src/util/runtime-dir.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { backgroundListening } from '../support/background.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { removeScratch, scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;

beforeAll(async () => {
  wal = await generateWalSegments(6);
}, 180_000);

/** A data directory whose pg_wal holds copies of the segments, each marked ready. */
async function primaryDir(segments: readonly string[]): Promise<{ dir: string; walDir: string }> {
  const dir = await scratchDir('wb-lookahead-');
  const walDir = path.join(dir, 'pg_wal');
  await mkdir(path.join(walDir, 'archive_status'), { recursive: true });
  for (const seg of segments) {
    await copyFile(seg, path.join(walDir, path.basename(seg)));
    await writeFile(path.join(walDir, 'archive_status', `${path.basename(seg)}.ready`), '');
  }
  return { dir, walDir };
}

describe.each(BACKENDS)('lookahead push through %s', (backend) => {
  let repo: TestRepo;
  let n = 0;
  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  const envFor = (namespace: string, backgroundIdle = '1') => ({
    WALBRIDGE_REPO: repo.url,
    WALBRIDGE_NAMESPACE: namespace,
    WALBRIDGE_PUSH_CONCURRENCY: '3',
    WALBRIDGE_BACKGROUND_IDLE: backgroundIdle,
    ...repo.env,
  });
  const stored = async (namespace: string) => {
    const names: string[] = [];
    for await (const o of repo.store().list(`${namespace}/wal/`)) names.push(path.basename(o.key));
    return names;
  };

  /** Waits until the background pusher has marked `expected` and exited (it removes its pid file). */
  async function pusherDone(walDir: string, expected: readonly string[]): Promise<void> {
    const deadline = Date.now() + 30_000;
    const listing = (dir: string) => readdir(path.join(walDir, 'walbridge', dir)).catch(() => [] as string[]);
    const done = new Set<string>();
    while (!expected.every((name) => done.has(name)) || (await listing('')).includes('pusher.pid')) {
      for (const name of await listing('pushed')) done.add(name);
      if (Date.now() > deadline) throw new Error(`the background pusher did not mark ${expected.join(' ')} and exit`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('stores the other ready files in the background, and later calls confirm them without a push', async () => {
    const namespace = `la${++n}`;
    const names = wal.segments.map((s) => path.basename(s));
    const { dir, walDir } = await primaryDir(wal.segments);
    const first = await runCli('archive-push', [`pg_wal/${names[0]}`], envFor(namespace), { cwd: dir });
    expect(first.status).toBe(0);
    await rename(path.join(walDir, 'archive_status', `${names[0]}.ready`), path.join(walDir, 'archive_status', `${names[0]}.done`));
    // The pusher started by the first call stores the rest, leaves a marker for each, and exits
    // when idle. It leaves names[0] to the call pushing it; names[1] it may store too, or leave
    // to the archiver's next call if that was quicker.
    await pusherDone(walDir, names.slice(2));
    expect(await stored(namespace)).toEqual(expect.arrayContaining(names.slice(2)));
    const marked = (await readdir(path.join(walDir, 'walbridge', 'pushed'))).sort();
    expect(marked.filter((m) => m !== names[1])).toEqual(names.slice(2));

    for (const name of names.slice(1)) {
      const r = await runCli('archive-push', [`pg_wal/${name}`], envFor(namespace), { cwd: dir });
      expect(r.status).toBe(0);
      if (marked.includes(name)) expect(r.stderr).toMatch(/archived ahead of time/);
      else expect(r.stderr).toMatch(/archived/);
      await rename(path.join(walDir, 'archive_status', `${name}.ready`), path.join(walDir, 'archive_status', `${name}.done`));
    }
    await pusherDone(walDir, []);
    expect(await stored(namespace)).toEqual(names);
    // Each marker is used once: emptied by the call that used it (bin/archive-push starts no
    // process for an rm), removed by the next pusher.
    const pushed = path.join(walDir, 'walbridge', 'pushed');
    for (const name of await readdir(pushed)) expect(await readFile(path.join(pushed, name), 'utf8')).toBe('');
    await writeFile(path.join(walDir, 'archive_status', `${names[0]}.ready`), '');
    expect((await runCli('archive-push', [`pg_wal/${names[0]}`], envFor(namespace), { cwd: dir })).status).toBe(0);
    await rename(path.join(walDir, 'archive_status', `${names[0]}.ready`), path.join(walDir, 'archive_status', `${names[0]}.done`));
    await waitFor(async () => (await readdir(pushed)).length === 0);
    await pusherDone(walDir, []);
    await removeScratch(dir);
  });

  it('answers from a marker without any request, and only for the repository and namespace that wrote it', async () => {
    const namespace = `la${++n}`;
    const names = wal.segments.slice(0, 3).map((s) => path.basename(s));
    const { dir } = await primaryDir(wal.segments.slice(0, 3));
    expect((await runCli('archive-push', [`pg_wal/${names[0]}`], envFor(namespace), { cwd: dir })).status).toBe(0);
    await pusherDone(path.join(dir, 'pg_wal'), names.slice(1));
    // Another namespace has its own archive: the marker says nothing about it.
    const other = await runCli('archive-push', [`pg_wal/${names[1]}`], { ...envFor(`${namespace}x`), WALBRIDGE_PUSH_CONCURRENCY: '1' }, { cwd: dir });
    expect(other.status).toBe(0);
    expect(other.stderr).not.toMatch(/ahead of time/);
    expect(await stored(`${namespace}x`)).toContain(names[1]);
    // The marker check makes no request: it answers even with the store unreachable.
    const offline = { ...envFor(namespace), WALBRIDGE_TIMEOUT: '1' };
    if (backend === 's3') Object.assign(offline, { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' });
    if (backend === 'gcs') Object.assign(offline, { STORAGE_EMULATOR_HOST: 'http://127.0.0.1:9' });
    const confirmed = await runCli('archive-push', [`pg_wal/${names[2]}`], offline, { cwd: dir });
    expect(confirmed.stderr).toMatch(/ahead of time/);
    expect(confirmed.status).toBe(0);
    await removeScratch(dir);
  });

  it('does not trust a marker once the file on disk was replaced: the full checks run', async () => {
    const namespace = `la${++n}`;
    const names = wal.segments.slice(0, 2).map((s) => path.basename(s));
    const { dir, walDir } = await primaryDir(wal.segments.slice(0, 2));
    expect((await runCli('archive-push', [`pg_wal/${names[0]}`], envFor(namespace), { cwd: dir })).status).toBe(0);
    await pusherDone(walDir, names.slice(1));
    // A different file under the stored name (as a recycled or restored file would be).
    const replacement = path.join(walDir, `${names[1]}.new`);
    await copyFile(wal.segments[0]!, replacement);
    await rename(replacement, path.join(walDir, names[1]!));
    const again = await runCli('archive-push', [`pg_wal/${names[1]}`], envFor(namespace), { cwd: dir });
    expect(again.stderr).not.toMatch(/ahead of time/);
    expect(again.status).toBe(ExitCode.notWal); // its header names another segment
    await removeScratch(dir);
  });

  it('serves calls for unmarked files through the running pusher, declines other settings, and survives its death', async () => {
    const namespace = `la${++n}`;
    const names = wal.segments.slice(0, 5).map((s) => path.basename(s));
    // Only the first file is ready: the pusher's scan has nothing to do, every later call asks it.
    const { dir, walDir } = await primaryDir(wal.segments.slice(0, 1));
    for (const seg of wal.segments.slice(1, 5)) await copyFile(seg, path.join(walDir, path.basename(seg)));
    const env = envFor(namespace, '30');
    const pusherLog = () => readFile(path.join(walDir, 'walbridge', 'pusher.log'), 'utf8');
    const pusherPid = async () => Number(await readFile(path.join(walDir, 'walbridge', 'pusher.pid'), 'utf8').catch(() => '0'));
    expect((await runCli('archive-push', [`pg_wal/${names[0]}`], env, { cwd: dir })).status).toBe(0);
    await waitFor(() => backgroundListening(walDir, 'pusher'));

    // Stored by the pusher: its log has the line, and the call repeats it as its own.
    const served = await runCli('archive-push', [`pg_wal/${names[1]}`], env, { cwd: dir });
    expect(served.status).toBe(0);
    expect(served.stderr).toMatch(new RegExp(`archive-push: archived ${names[1]} \\(16\\.0 MiB`));
    expect(await pusherLog()).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\[\\d+\\] INFO walbridge pusher: archived ${names[1]}`, 'm'));
    expect(await stored(namespace)).toContain(names[1]);

    // A failure comes back with its own exit status: a file that is not WAL under a WAL name.
    await writeFile(path.join(walDir, names[2]!), Buffer.alloc(16 * 1024 * 1024, 7));
    const refused = await runCli('archive-push', [`pg_wal/${names[2]}`], env, { cwd: dir });
    expect(refused.status).toBe(ExitCode.notWal);
    expect(await pusherLog()).toContain(names[2]);
    await copyFile(wal.segments[2]!, path.join(walDir, names[2]!));

    // Another configuration: the call pushes by itself, and the pusher steps down.
    const pid = await pusherPid();
    const other = await runCli('archive-push', [`pg_wal/${names[2]}`], { ...env, WALBRIDGE_NAMESPACE: `${namespace}x` }, { cwd: dir });
    expect(other.status).toBe(0);
    expect(await stored(`${namespace}x`)).toContain(names[2]);
    expect(await pusherLog()).not.toContain(`archived ${names[2]}`);
    await waitFor(async () => !processAlive(pid));

    // A pusher killed with its socket left behind: the next call pushes by itself and starts a new one.
    // (The other configuration's call may have started a pusher of its own once ours had gone: the
    // next call is declined by it, and it steps down in turn; a call after that starts ours.)
    await waitFor(async () => {
      expect((await runCli('archive-push', [`pg_wal/${names[2]}`], env, { cwd: dir })).status).toBe(0);
      await new Promise((r) => setTimeout(r, 500));
      return processAlive(await pusherPid()) && (await backgroundListening(walDir, 'pusher'));
    });
    process.kill(await pusherPid(), 'SIGKILL');
    const orphan = await runCli('archive-push', [`pg_wal/${names[3]}`], env, { cwd: dir });
    expect(orphan.status).toBe(0);
    expect(await stored(namespace)).toEqual(expect.arrayContaining(names.slice(0, 4)));
    await waitFor(async () => processAlive(await pusherPid()));
    const last = await pusherPid();
    process.kill(last, 'SIGTERM');
    await waitFor(async () => !processAlive(last));
    await removeScratch(dir);
  });
});

async function waitFor(condition: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

function processAlive(pid: number): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('bin/archive-push, the sh front-end', () => {
  it('answers a file the pusher stored without starting Node, only for the same configuration and the same file on disk', async () => {
    const repo = await createRepo('file');
    const names = wal.segments.map((s) => path.basename(s));
    const { dir, walDir } = await primaryDir(wal.segments);
    // A `node` first on PATH that notes each start, then runs the real one (the pusher is started by process.execPath).
    const fake = await scratchDir('wb-fake-node-');
    const starts = path.join(fake, 'starts');
    await writeFile(path.join(fake, 'node'), `#!/bin/sh\necho "$*" >>${starts}\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    const config = path.join(fake, 'walbridge.conf');
    await writeFile(config, `repo = ${repo.url}\nnamespace = front\npush-concurrency = 3\nbackground-idle = 30\n`);
    const env = { PATH: `${fake}:${process.env['PATH']}`, WALBRIDGE_CONFIG: config };
    const nodeStarts = async () => (await readFile(starts, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    const push = async (name: string, extra: Record<string, string> = {}) => {
      const r = await runCli('archive-push', [`pg_wal/${name}`], { ...env, ...extra }, { cwd: dir });
      expect(r.status, r.stderr).toBe(0);
      await rename(path.join(walDir, 'archive_status', `${name}.ready`), path.join(walDir, 'archive_status', `${name}.done`)).catch(() => undefined);
      return r.stderr;
    };
    // The last segment is not ready yet: the archiver's call for it comes as soon as it is.
    const held = path.join(walDir, 'archive_status', `${names[5]}.ready`);
    await rename(held, `${held}.later`);
    try {
      await push(names[0]!);
      expect(await nodeStarts()).toBe(1);
      await waitFor(async () => (await readdir(path.join(walDir, 'walbridge', 'pushed'))).filter((n) => !n.startsWith('.')).length >= 4, 30_000);

      // Stored ahead, unchanged, same configuration: answered by the front-end alone.
      expect(await push(names[2]!)).toMatch(/archived ahead of time \(verified in the store then; unchanged on disk since\)/);
      expect(await nodeStarts()).toBe(1);
      // Ready only now: the running pusher takes it up, and the front-end waits for its marker.
      await rename(`${held}.later`, held);
      expect(await push(names[5]!)).toMatch(/archived ahead of time \(verified in the store then; unchanged on disk since\)/);
      expect(await nodeStarts()).toBe(1);
      // The same file with a new mtime: Node decides (and finds it archived with identical content).
      const touched = path.join(walDir, names[3]!);
      await utimes(touched, new Date(), new Date());
      expect(await push(names[3]!)).not.toMatch(/ahead of time/);
      expect(await nodeStarts()).toBe(2);
      // Another environment: Node decides, from the marker (same repository and namespace).
      expect(await push(names[4]!, { WALBRIDGE_TIMEOUT: '59' })).toMatch(/ahead of time \(16777216 bytes/);
      expect(await nodeStarts()).toBe(3);
      // The config file edited (a comment only): Node decides.
      await writeFile(config, `${await readFile(config, 'utf8')}# edited\n`);
      expect(await push(names[1]!)).toMatch(/ahead of time \(16777216 bytes/);
      expect(await nodeStarts()).toBe(4);
      const keys: string[] = [];
      for await (const o of repo.store().list('front/wal/')) keys.push(path.basename(o.key));
      expect(keys).toEqual(expect.arrayContaining(names));
    } finally {
      const pid = Number(await readFile(path.join(walDir, 'walbridge', 'pusher.pid'), 'utf8').catch(() => '0'));
      if (processAlive(pid)) process.kill(pid, 'SIGTERM');
      await removeScratch(dir);
      await rm(fake, { recursive: true, force: true });
      await repo.cleanup();
    }
  });
});

describe('a call asking the background pusher', () => {
  it('logs one JSON object per line with --log-format json: the call, and the pusher it starts (given the setting as a variable)', async () => {
    const repo = await createRepo('file');
    const names = wal.segments.map((s) => path.basename(s));
    const { dir, walDir } = await primaryDir(wal.segments.slice(0, 3));
    try {
      const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'json-log', WALBRIDGE_PUSH_CONCURRENCY: '3', WALBRIDGE_BACKGROUND_IDLE: '1', ...repo.env };
      const r = await runCli('archive-push', ['--log-format', 'json', `pg_wal/${names[0]}`], env, { cwd: dir });
      expect(r.status, r.stderr).toBe(0);
      const records = r.stderr
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(records).toContainEqual(
        expect.objectContaining({ level: 'info', program: 'archive-push', message: expect.stringMatching(new RegExp(`^archived ${names[0]}`)) }),
      );
      const pusherLog = path.join(walDir, 'walbridge', 'pusher.log');
      await waitFor(async () => (await readFile(pusherLog, 'utf8').catch(() => '')).includes(`archived ${names[2]}`));
      for (const line of (await readFile(pusherLog, 'utf8')).trim().split('\n'))
        expect(JSON.parse(line)).toMatchObject({ program: 'walbridge pusher', pid: expect.any(Number) });
      // A file the pusher stored: bin/archive-push, which writes text, leaves the answer to Node.
      const ahead = await runCli('archive-push', ['--log-format', 'json', `pg_wal/${names[2]}`], env, { cwd: dir });
      expect(ahead.status, ahead.stderr).toBe(0);
      expect(
        ahead.stderr
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as unknown),
      ).toContainEqual(expect.objectContaining({ program: 'archive-push', message: expect.stringContaining(names[2]!) }));
    } finally {
      await waitFor(async () => !(await readdir(path.join(walDir, 'walbridge')).catch(() => [] as string[])).includes('pusher.pid'));
      await removeScratch(dir);
      await repo.cleanup();
    }
  });

  it('exits 0 only on the answer "stored": any other answer, and it pushes the file itself', async () => {
    const repo = await createRepo('file');
    const names = wal.segments.map((s) => path.basename(s));
    const { dir, walDir } = await primaryDir(wal.segments.slice(0, 2));
    // Something listening where the pusher listens, answering every request with what a pusher never says.
    const runtime = clusterRuntime(walDir)!;
    await ensureRuntimeDir(runtime);
    const asked: string[] = [];
    const impostor = createServer((socket) => {
      socket.once('data', (line) => {
        asked.push(String(line));
        socket.end(`${JSON.stringify({ answer: { status: 'spooled' } })}\n`);
      });
    });
    await new Promise<void>((resolve) => impostor.listen(backgroundSocket(walDir, 'pusher')!, resolve));
    try {
      const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'odd-answer', WALBRIDGE_PUSH_CONCURRENCY: '3', WALBRIDGE_BACKGROUND_IDLE: '1', ...repo.env };
      const r = await runCli('archive-push', [`pg_wal/${names[0]}`], env, { cwd: dir });
      expect(r.status, r.stderr).toBe(0);
      expect(asked).toHaveLength(1);
      expect(await repo.store().head(`odd-answer/wal/${names[0]}`)).toBeDefined();
    } finally {
      impostor.close();
      await removeScratch(dir);
      await repo.cleanup();
    }
  });
});
