/**
 * Prefetching restore_command: calls as the startup process makes them (one per segment, into
 * pg_wal/RECOVERYXLOG), answered from the spool after the first, byte for byte.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { prefetchWindow } from '../../src/archive/restore/spool.js';
import { parseWalFileName } from '../../src/wal/names.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { fakeDataDir } from '../support/standby-dir.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;

beforeAll(async () => {
  wal = await generateWalSegments(7);
}, 180_000);

describe('prefetchWindow', () => {
  it('is the requested segment and the next ones on its timeline, across a log boundary', () => {
    const file = parseWalFileName('0000000300000001000000FE')!;
    expect(prefetchWindow(file, 16 * 1024 * 1024, 3)).toEqual([
      '0000000300000001000000FE',
      '0000000300000001000000FF',
      '000000030000000200000000',
      '000000030000000200000001',
    ]);
  });

  it('holds at most 1 GiB of segments', () => {
    const file = parseWalFileName('000000010000000000000001')!;
    expect(prefetchWindow(file, 1024 * 1024 * 1024, 8)).toHaveLength(2);
    expect(prefetchWindow(file, 256 * 1024 * 1024, 8)).toHaveLength(5);
  });
});

describe.each(BACKENDS)('prefetching fetch through %s', (backend) => {
  let repo: TestRepo;
  let n = 0;
  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  const envFor = (namespace: string) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_PREFETCH: '2', ...repo.env });
  const names = () => wal.segments.map((s) => path.basename(s));

  async function archived(namespace: string): Promise<void> {
    for (const seg of wal.segments) expect((await runCli('archive-push', ['--push-concurrency', '1', seg], envFor(namespace))).status).toBe(0);
  }

  it('answers later calls from the spool with the same bytes, and keeps the spool to the window', async () => {
    const namespace = `pf${++n}`;
    await archived(namespace);
    const standby = await fakeDataDir('standby');
    const spoolRoot = path.join(standby.dir, 'pg_wal', 'walbridge', 'prefetch');
    let fromSpool = 0;
    for (const [i, name] of names().entries()) {
      const r = await runCli('archive-fetch', ['--no-wait', name, 'pg_wal/RECOVERYXLOG'], envFor(namespace), { cwd: standby.dir });
      expect(r.status).toBe(0);
      // The first call downloads its segment by itself (and starts the background fetcher, which
      // fills the window from the next call on); the later ones are a rename from the spool, or
      // the fetcher's download when it has not got there yet.
      if (i === 0) expect(r.stderr).toMatch(new RegExp(`archive-fetch: restored ${name} \\(`));
      else expect(r.stderr).toMatch(new RegExp(`restored ${name} from the prefetch spool|fetched ${name} \\(`));
      if (r.stderr.includes('from the prefetch spool')) fromSpool++;
      expect((await readFile(standby.destination)).equals(await readFile(wal.segments[i]!))).toBe(true);
      const [spool] = await spoolsIn(spoolRoot).catch(() => []); // the first call leaves the window to the fetcher
      if (i > 0) expect(spool).toBeDefined();
      const held = spool ? (await readdir(path.join(spoolRoot, spool))).filter((f) => f !== 'identity' && !f.startsWith('.')) : [];
      expect(held.length).toBeLessThanOrEqual(2);
      for (const h of held) expect(h > name).toBe(true);
    }
    expect(fromSpool).toBeGreaterThan(0);
    await rm(standby.dir, { recursive: true });
  });

  it('drops wrong guesses: a request outside the window empties what the spool held', async () => {
    const namespace = `pf${++n}`;
    await archived(namespace);
    const standby = await fakeDataDir('standby');
    const [first, , , fourth] = names();
    expect((await runCli('archive-fetch', ['--no-wait', first!, 'pg_wal/RECOVERYXLOG'], envFor(namespace), { cwd: standby.dir })).status).toBe(0);
    // As after a timeline switch or a jump of the replay position: a name the spool did not guess.
    const jump = await runCli('archive-fetch', ['--no-wait', fourth!, 'pg_wal/RECOVERYXLOG'], envFor(namespace), { cwd: standby.dir });
    expect(jump.status).toBe(0);
    expect(jump.stderr).toMatch(new RegExp(`(restored|fetched) ${fourth} \\(`)); // downloaded, not a guess the spool held
    expect((await readFile(standby.destination)).equals(await readFile(wal.segments[3]!))).toBe(true);
    const spoolRoot = path.join(standby.dir, 'pg_wal', 'walbridge', 'prefetch');
    const [spool] = await spoolsIn(spoolRoot);
    for (const h of await readdir(path.join(spoolRoot, spool!))) if (h !== 'identity' && !h.startsWith('.')) expect(h > fourth!).toBe(true);
    await rm(standby.dir, { recursive: true });
  });

  it('never serves one namespace the spool of another', async () => {
    const a = `pf${++n}`;
    const b = `pf${++n}`;
    await archived(a);
    const standby = await fakeDataDir('standby');
    const [first, second] = names();
    expect((await runCli('archive-fetch', ['--no-wait', first!, 'pg_wal/RECOVERYXLOG'], envFor(a), { cwd: standby.dir })).status).toBe(0);
    const other = await runCli('archive-fetch', ['--no-wait', second!, 'pg_wal/RECOVERYXLOG'], envFor(b), { cwd: standby.dir });
    expect(other.status).toBe(1); // namespace b holds nothing
    await rm(standby.dir, { recursive: true });
  });
});

/** The spool directories under pg_wal/walbridge/prefetch/ (beside bin/archive-fetch's two files). */
async function spoolsIn(root: string): Promise<string[]> {
  return (await readdir(root, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
}

describe('bin/archive-fetch, the sh front-end', () => {
  it('answers a segment the spool holds, or is downloading, without starting Node, only for calls of the same key that wait for nothing', async () => {
    const repo = await createRepo('file');
    const names = wal.segments.map((s) => path.basename(s));
    // A `node` first on PATH that notes each start, then runs the real one (the fetcher is started by process.execPath).
    const fake = await scratchDir('wb-fake-node-');
    const starts = path.join(fake, 'starts');
    await writeFile(path.join(fake, 'node'), `#!/bin/sh\necho "$*" >>${starts}\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    const env = {
      PATH: `${fake}:${process.env['PATH']}`,
      WALBRIDGE_REPO: repo.url,
      WALBRIDGE_NAMESPACE: 'front',
      WALBRIDGE_PREFETCH: '2',
      WALBRIDGE_BACKGROUND_IDLE: '30',
    };
    for (const seg of wal.segments) expect((await runCli('archive-push', ['--push-concurrency', '1', seg], env)).status).toBe(0);
    await rm(starts, { force: true });
    const nodeStarts = async () => (await readFile(starts, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    const standby = await fakeDataDir('standby');
    const prefetch = path.join(standby.dir, 'pg_wal', 'walbridge', 'prefetch');
    const spooled = async (name: string) => {
      for (const spool of await spoolsIn(prefetch).catch(() => [] as string[])) if ((await readdir(path.join(prefetch, spool))).includes(name)) return true;
      return false;
    };
    const fetch = async (i: number, args: string[] = ['--no-wait'], extra: Record<string, string> = {}) => {
      await rm(standby.destination, { force: true });
      const r = await runCli('archive-fetch', [...args, names[i]!, 'pg_wal/RECOVERYXLOG', names[0]!], { ...env, ...extra }, { cwd: standby.dir });
      expect(r.status, r.stderr).toBe(0);
      expect((await readFile(standby.destination)).equals(await readFile(wal.segments[i]!))).toBe(true);
      return r.stderr;
    };
    try {
      // The first calls go through Node: the first restores its own segment, records who may be answered from the
      // spool and starts the fetcher; the second has the fetcher fill the spool.
      await fetch(0);
      await fetch(1);
      const before = await nodeStarts();
      expect(before).toBe(2);
      // Spooled, same key, no waiting: the front-end renames it to %p by itself; the fetcher refills behind it.
      for (const i of [2, 3]) {
        await waitUntil(() => spooled(names[i]!));
        expect(await fetch(i)).toBe(`archive-fetch: restored ${names[i]} from the prefetch spool\n`);
      }
      expect(await nodeStarts()).toBe(before);
      // Being downloaded (the fetcher's temp file in the spool names its pid): the front-end waits
      // for it rather than start Node. Here the "download" lands 0.5 s later.
      await waitUntil(() => spooled(names[4]!));
      const spool = (await spoolsIn(prefetch)).find((d) => existsSync(path.join(prefetch, d, names[4]!)))!;
      const fetcherPid = Number(await readFile(path.join(standby.dir, 'pg_wal', 'walbridge', 'fetcher.pid'), 'utf8'));
      const held = path.join(standby.dir, 'held');
      const temp = path.join(prefetch, spool, `.${names[4]}.walbridge-${fetcherPid}-0a0b0c0d`);
      await rename(path.join(prefetch, spool, names[4]!), held);
      await writeFile(temp, '');
      const started = Date.now();
      const lands = new Promise((r) => setTimeout(r, 500)).then(async () => {
        await rename(held, path.join(prefetch, spool, names[4]!));
        await rm(temp);
      });
      expect(await fetch(4)).toBe(`archive-fetch: restored ${names[4]} from the prefetch spool\n`);
      await lands;
      expect(Date.now() - started).toBeGreaterThanOrEqual(500);
      expect(await nodeStarts()).toBe(before);
      // Another environment, or a waiting call (it must consult the triggers first): Node decides.
      await waitUntil(() => spooled(names[5]!));
      expect(await fetch(5, ['--no-wait'], { WALBRIDGE_TIMEOUT: '59' })).toMatch(/restored .* from the prefetch spool/);
      expect(await nodeStarts()).toBe(before + 1);
      await waitUntil(() => spooled(names[6]!));
      await fetch(6, []);
      expect(await nodeStarts()).toBe(before + 2);
    } finally {
      const pid = Number(await readFile(path.join(standby.dir, 'pg_wal', 'walbridge', 'fetcher.pid'), 'utf8').catch(() => '0'));
      if (pid > 0) process.kill(pid, 'SIGTERM');
      await rm(standby.dir, { recursive: true, force: true });
      await rm(fake, { recursive: true, force: true });
      await repo.cleanup();
    }
  });
});

describe('bin/archive-fetch answering waiting calls', () => {
  it("serves the spool while the fetcher's look finds no trigger; a promote file or a fast trigger sends calls to Node, which fails over", async () => {
    const repo = await createRepo('file');
    const names = wal.segments.map((s) => path.basename(s));
    const fake = await scratchDir('wb-fake-node-');
    const starts = path.join(fake, 'starts');
    await writeFile(path.join(fake, 'node'), `#!/bin/sh\necho "$*" >>${starts}\nexec ${process.execPath} "$@"\n`, { mode: 0o755 });
    const env = {
      PATH: `${fake}:${process.env['PATH']}`,
      WALBRIDGE_REPO: repo.url,
      WALBRIDGE_NAMESPACE: 'waiting',
      WALBRIDGE_PREFETCH: '3',
      WALBRIDGE_BACKGROUND_IDLE: '30',
    };
    for (const seg of wal.segments) expect((await runCli('archive-push', ['--push-concurrency', '1', seg], env)).status).toBe(0);
    await rm(starts, { force: true });
    const nodeStarts = async () => (await readFile(starts, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    const standby = await fakeDataDir('standby');
    const prefetch = path.join(standby.dir, 'pg_wal', 'walbridge', 'prefetch');
    const spooled = async (name: string) => {
      for (const spool of await spoolsIn(prefetch).catch(() => [] as string[])) if ((await readdir(path.join(prefetch, spool))).includes(name)) return true;
      return false;
    };
    // Waiting calls (no --no-wait), as restore_command = 'archive-fetch %f %p %r' makes them.
    const fetch = async (i: number) => {
      await rm(standby.destination, { force: true });
      const r = await runCli('archive-fetch', [names[i]!, 'pg_wal/RECOVERYXLOG', names[0]!], env, { cwd: standby.dir });
      if (r.status === 0) expect((await readFile(standby.destination)).equals(await readFile(wal.segments[i]!))).toBe(true);
      return r;
    };
    const bySh = `archive-fetch: restored %s from the prefetch spool\n`;
    try {
      // The first call restores its own segment and starts the fetcher; the second asks it, and
      // the fetcher looks for triggers and forks on behalf of the calls after it.
      expect((await fetch(0)).status).toBe(0);
      expect((await fetch(1)).status).toBe(0);
      const before = await nodeStarts();
      expect(before).toBe(2);
      await waitUntil(() => spooled(names[2]!));
      expect((await fetch(2)).stderr).toBe(bySh.replace('%s', names[2]!));
      expect(await nodeStarts()).toBe(before);

      // pg_ctl promote's file: Node answers, and fails over.
      await writeFile(path.join(standby.dir, 'promote'), '');
      await waitUntil(() => spooled(names[3]!));
      const promoted = await fetch(3);
      expect(promoted.status).toBe(1);
      expect(promoted.stderr).toMatch(/promotion requested \(pg_ctl promote\) while waiting for/);
      expect(await nodeStarts()).toBe(before + 1);
      await rm(path.join(standby.dir, 'promote'));
      expect((await fetch(3)).stderr).toBe(bySh.replace('%s', names[3]!));
      expect(await nodeStarts()).toBe(before + 1);

      // A fast trigger: one poll interval (0.5 s) later no call is answered without Node, which
      // fails over; a segment served before is still served (the front-end's note counts).
      await waitUntil(() => spooled(names[4]!));
      expect((await runCli('walbridge', ['trigger', 'fast'], env)).status).toBe(0);
      await new Promise((r) => setTimeout(r, 700));
      const fast = await fetch(4);
      expect(fast.status).toBe(1);
      expect(fast.stderr).toMatch(/fast failover \(trigger for/);
      const again = await fetch(3);
      expect(again.status, again.stderr).toBe(0);
      expect(again.stderr).not.toBe(bySh.replace('%s', names[3]!));
    } finally {
      const pid = Number(await readFile(path.join(standby.dir, 'pg_wal', 'walbridge', 'fetcher.pid'), 'utf8').catch(() => '0'));
      try {
        if (pid > 0) process.kill(pid, 'SIGTERM');
      } catch {
        // gone already (idle)
      }
      await rm(standby.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
      await rm(fake, { recursive: true, force: true });
      await repo.cleanup();
    }
  });
});

async function waitUntil(condition: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
