/**
 * Prefetching restore_command: calls as the startup process makes them (one per segment, into
 * pg_wal/RECOVERYXLOG), answered from the spool after the first, byte for byte.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { prefetchWindow } from '../../src/archive/restore/spool.js';
import { parseWalFileName } from '../../src/wal/names.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { fakeDataDir } from '../support/standby-dir.js';

let wal: GeneratedWal;

beforeAll(async () => {
  wal = await generateWalSegments(6);
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
      // The first call downloads by itself (and starts the background fetcher); the later ones
      // are a rename from the spool, or the fetcher's download when it has not got there yet.
      if (i === 0) expect(r.stderr).toMatch(new RegExp(`archive-fetch: restored ${name} \\(`));
      else expect(r.stderr).toMatch(new RegExp(`restored ${name} from the prefetch spool|fetched ${name} \\(`));
      if (r.stderr.includes('from the prefetch spool')) fromSpool++;
      expect((await readFile(standby.destination)).equals(await readFile(wal.segments[i]!))).toBe(true);
      const [spool] = await readdir(spoolRoot);
      const held = (await readdir(path.join(spoolRoot, spool!))).filter((f) => f !== 'identity' && !f.startsWith('.'));
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
    const [spool] = await readdir(spoolRoot);
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
