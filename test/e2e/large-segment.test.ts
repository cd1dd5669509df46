/**
 * 1 GiB segments (initdb --wal-segsize=1024): push and fetch stream them in bounded memory,
 * through multipart (S3), resumable (GCS) and streamed file uploads. Peak RSS is the
 * process's own maximum resident set, as the kernel accounts it (getrusage of the child).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { BIN_DIR } from '../support/cli.js';
import { createRepo, type Backend, type TestRepo } from '../support/repos.js';
import { fakeDataDir } from '../support/standby-dir.js';

const RSS_LIMIT_KB = 120 * 1024;
let wal: GeneratedWal;

beforeAll(async () => {
  wal = await generateWalSegments(1, { walSegSizeMb: 1024 });
}, 300_000);

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** Runs a walbridge executable and reports its exit status and peak RSS (KiB). */
function measured(executable: string, args: string[], env: Record<string, string>, cwd?: string): Promise<{ status: number; rssKb: number; stderr: string }> {
  const script = 'import resource,subprocess,sys\nr=subprocess.run(sys.argv[1:])\nprint(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)';
  return new Promise((resolve, reject) => {
    execFile(
      'python3',
      ['-c', script, path.join(BIN_DIR, executable), ...args],
      { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env }, cwd, timeout: 240_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${executable}: ${err.message}\n${stderr}`));
        const [status, rss] = stdout.trim().split(' ').map(Number) as [number, number];
        resolve({ status, rssKb: rss, stderr });
      },
    );
  });
}

const CASES: [Backend, string][] = [
  ['s3', 'none'],
  ['gcs', 'none'],
  ['file', 'none'],
  ['s3', 'zstd'],
];

describe.each(CASES)('a 1 GiB segment through %s, codec %s', (backend, codec) => {
  let repo: TestRepo;
  beforeAll(async () => {
    repo = await createRepo(backend);
  });

  it(`pushes and fetches it byte for byte with peak RSS under ${RSS_LIMIT_KB / 1024} MB`, async () => {
    const segment = wal.segments[0]!;
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: `big-${codec}`, WALBRIDGE_COMPRESS: codec, ...repo.env };
    const pushed = await measured('archive-push', [segment], env);
    expect(pushed.stderr).toMatch(/archived/);
    expect(pushed.status).toBe(0);
    expect(pushed.rssKb).toBeLessThan(RSS_LIMIT_KB);

    const standby = await fakeDataDir('standby');
    try {
      const fetched = await measured('archive-fetch', ['--no-wait', path.basename(segment), 'pg_wal/RECOVERYXLOG'], env, standby.dir);
      expect(fetched.stderr).toMatch(/restored/);
      expect(fetched.status).toBe(0);
      console.log(`${backend} ${codec}: 1 GiB push peak RSS ${Math.round(pushed.rssKb / 1024)} MiB, fetch ${Math.round(fetched.rssKb / 1024)} MiB`);
      expect(fetched.rssKb).toBeLessThan(RSS_LIMIT_KB);
      expect(await sha256Of(standby.destination)).toBe(await sha256Of(segment));
    } finally {
      await rm(standby.dir, { recursive: true });
      // radosgw's memstore holds objects in RAM: give the gigabyte back.
      await repo.store().deleteMany([`big-${codec}/wal/${path.basename(segment)}`]);
    }
  }, 300_000);
});
