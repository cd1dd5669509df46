/**
 * archive-push and archive-fetch as PostgreSQL runs them (child processes), on real WAL from
 * PostgreSQL 15, against each backend: byte-identical round trips and every refusal.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { copyFile, mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { sealBuffer } from '../../src/codec/envelope.js';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { canMount, failingDisk } from '../support/failing-disk.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { stopPushWhileWriting } from '../support/stopped-push.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
let foreign: GeneratedWal;
let work: string;

beforeAll(async () => {
  [wal, foreign] = await Promise.all([generateWalSegments(5, { timelineSwitch: true }), generateWalSegments(2)]);
  work = await scratchDir('wb-e2e-');
}, 180_000);

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)]);
  return x.equals(y);
}

describe.each(BACKENDS)('push and fetch through %s', (backend) => {
  let repo: TestRepo;
  let namespace = 0;
  /** A fresh namespace per test, so tests do not see each other's objects. */
  const env = (extra: Record<string, string> = {}) => ({
    WALBRIDGE_REPO: repo.url,
    WALBRIDGE_NAMESPACE: `ns${namespace}`,
    ...repo.env,
    ...extra,
  });
  const push = (file: string, extra?: Record<string, string>, args: string[] = []) => runCli('archive-push', [...args, file], env(extra));
  // The non-waiting form: this suite checks the foundation's contract, not the wait.
  const fetch = (name: string, dest: string, extra?: Record<string, string>) => runCli('archive-fetch', ['--no-wait', name, dest], env(extra));

  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  beforeEach(() => {
    namespace++;
  });

  it('round-trips every segment, .partial and .history file byte for byte', async () => {
    expect(wal.segments.length).toBeGreaterThanOrEqual(5);
    expect(wal.historyFiles.length).toBeGreaterThan(0);
    expect(wal.partialFiles.length).toBeGreaterThan(0);
    const out = await mkdtemp(path.join(work, `${backend}-rt-`));
    for (const file of wal.files) {
      const pushed = await push(file);
      expect(pushed.stderr).toMatch(/archived/);
      expect(pushed.status).toBe(0);
    }
    for (const file of wal.files) {
      const dest = path.join(out, 'RECOVERYXLOG');
      const fetched = await fetch(path.basename(file), dest);
      expect(fetched.stderr).toMatch(/restored/);
      expect(fetched.status).toBe(0);
      expect(await sameBytes(file, dest)).toBe(true);
    }
    // Nothing but the destination is left behind in the directory.
    expect(await readdir(out)).toEqual(['RECOVERYXLOG']);
  });

  it('answers a repeated push of identical bytes with success, and says so', async () => {
    const segment = wal.segments[0]!;
    expect((await push(segment)).status).toBe(0);
    const again = await push(segment);
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/already archived with identical content/);
  });

  it('stores gzip-compressed objects and restores them exactly', async () => {
    const segment = wal.segments[wal.segments.length - 1]!; // a mostly empty one
    expect((await push(segment, { WALBRIDGE_COMPRESS: 'gzip' })).status).toBe(0);
    const key = `ns${namespace}/wal/${path.basename(segment)}`;
    const info = await repo.store().head(key);
    expect(info!.metadata['walbridge-codec']).toBe('gzip');
    expect(info!.size).toBeLessThan(wal.walSegSizeBytes / 10);
    const dest = path.join(work, `${backend}-gz`);
    expect((await fetch(path.basename(segment), dest)).status).toBe(0);
    expect(await sameBytes(segment, dest)).toBe(true);
  });

  it('refuses a segment of another cluster, naming both system identifiers, and writes nothing', async () => {
    expect((await push(wal.segments[0]!)).status).toBe(0);
    const stranger = foreign.segments[1]!;
    const result = await push(stranger);
    expect(result.status).toBe(ExitCode.foreignCluster);
    expect(result.stderr).toContain(String(foreign.systemIdentifier));
    expect(result.stderr).toContain(String(wal.systemIdentifier));
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(await repo.store().head(`ns${namespace}/wal/${path.basename(stranger)}`)).toBeUndefined();
  });

  it('refuses different content under an archived name and leaves the stored object untouched', async () => {
    const original = wal.segments[1]!;
    expect((await push(original)).status).toBe(0);
    const changed = path.join(await mkdtemp(path.join(work, 'changed-')), path.basename(original));
    const bytes = await readFile(original);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 0xff, bytes.length - 100); // same header, different content
    await writeFile(changed, bytes);
    const result = await push(changed);
    expect(result.status).toBe(ExitCode.conflict);
    expect(result.stderr).toMatch(/different content is already archived/);
    const dest = path.join(work, `${backend}-orig`);
    expect((await fetch(path.basename(original), dest)).status).toBe(0);
    expect(await sameBytes(original, dest)).toBe(true);
  });

  it('refuses a segment whose size is not the segment size, and a renamed segment', async () => {
    const dir = await mkdtemp(path.join(work, 'bad-'));
    const truncated = path.join(dir, path.basename(wal.segments[2]!));
    await writeFile(truncated, (await readFile(wal.segments[2]!)).subarray(0, 8192 * 3));
    const short = await push(truncated);
    expect(short.status).toBe(ExitCode.notWal);
    expect(short.stderr).toMatch(/24576 bytes, but its cluster's segments are 16777216 bytes/);

    const renamedDir = await mkdtemp(path.join(work, 'renamed-'));
    const renamed = path.join(renamedDir, path.basename(wal.segments[3]!));
    await copyFile(wal.segments[2]!, renamed);
    const moved = await push(renamed);
    expect(moved.status).toBe(ExitCode.notWal);
    expect(moved.stderr).toMatch(/renamed/);

    const notWal = path.join(dir, '000000010000000000000099');
    await writeFile(notWal, Buffer.alloc(16 * 1024 * 1024, 0x41));
    expect((await push(notWal)).status).toBe(ExitCode.notWal);
    for (const name of [path.basename(truncated), path.basename(renamed), '000000010000000000000099']) {
      expect(await repo.store().head(`ns${namespace}/wal/${name}`)).toBeUndefined();
    }
  });

  it('archives and restores WAL of a PostgreSQL newer than this build (a page magic it does not know), with a warning', async () => {
    const dir = await mkdtemp(path.join(work, 'newer-'));
    const newer = path.join(dir, path.basename(wal.segments[0]!));
    const bytes = await readFile(wal.segments[0]!);
    bytes.writeUInt16LE(0xd2a0, 0); // the first page's magic: what a release after 19 might write
    await writeFile(newer, bytes);
    const pushed = await push(newer);
    expect(pushed.status, pushed.stderr).toBe(0);
    expect(pushed.stderr).toMatch(
      /WAL page magic 0xD2A0 is not one this walbridge knows \(PostgreSQL 9\.5 to 19\); archiving it all the same: update walbridge/,
    );
    const dest = path.join(dir, 'RECOVERYXLOG');
    expect((await fetch(path.basename(newer), dest)).status).toBe(0);
    expect((await readFile(dest)).equals(bytes)).toBe(true);
  });

  it('fences a timeline past where a newer one branched off (exit 16, nothing stored), unless this server holds the newer history', async () => {
    expect((await push(wal.segments[0]!)).status).toBe(0);
    const dir = await mkdtemp(path.join(work, 'fence-'));
    const name = path.basename(wal.segments[1]!);
    await copyFile(wal.segments[1]!, path.join(dir, name));
    // Timeline 2 branched off timeline 1 just inside this segment.
    const start = BigInt(parseInt(name.slice(8, 16), 16)) * 0x1_0000_0000n + BigInt(parseInt(name.slice(16), 16)) * 16n * 1024n * 1024n;
    const switchpoint = start + 0x28n;
    const history = `1\t${(switchpoint >> 32n).toString(16).toUpperCase()}/${(switchpoint & 0xffffffffn).toString(16).toUpperCase()}\tno recovery target specified\n`;
    await repo.store().putIfAbsent(`ns${namespace}/history/00000002.history`, sealBuffer(Buffer.from(history)));
    const refused = await push(path.join(dir, name));
    expect(refused.status, refused.stderr).toBe(ExitCode.fenced);
    expect(refused.stderr).toMatch(
      new RegExp(
        `refusing ${name}: timeline 1 ended at [0-9A-F]+/[0-9A-F]+ when timeline 2 was promoted from it \\(00000002\\.history in namespace "ns${namespace}"\\)`,
      ),
    );
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(await repo.store().head(`ns${namespace}/wal/${name}`)).toBeUndefined();
    // The promoted server (or a standby that followed it, archive_mode = always) has the history in its pg_wal.
    await writeFile(path.join(dir, '00000002.history'), history);
    const allowed = await push(path.join(dir, name));
    expect(allowed.status, allowed.stderr).toBe(0);
    expect(await repo.store().head(`ns${namespace}/wal/${name}`)).toBeDefined();
  });

  it('refuses files whose names PostgreSQL would never archive', async () => {
    const dir = await mkdtemp(path.join(work, 'names-'));
    for (const name of ['postgresql.conf', '000000010000000000000001.gz', '00000001000000000000000a', 'RECOVERYXLOG']) {
      const file = path.join(dir, name);
      await copyFile(wal.segments[0]!, file);
      const result = await push(file);
      expect(result.status, name).toBe(ExitCode.badName);
      expect(result.stderr).toMatch(/not a WAL file name/);
    }
  });

  it('refuses hostile %f values without touching the filesystem', async () => {
    const dir = await mkdtemp(path.join(work, 'hostile-'));
    const dest = path.join(dir, 'sub', 'RECOVERYXLOG');
    const controls = ['00000001000000000000000\n1', '0000000100000000000000\u0001\u001b[31m', '000000010000000000000001\r'];
    for (const name of [
      '../../x',
      '/etc/passwd',
      '00000001/0000000000000001',
      '..',
      '',
      '000000010000000000000001/../../../x',
      'a'.repeat(5000),
      ...controls,
    ]) {
      const result = await fetch(name, dest);
      expect(result.status, name).toBe(ExitCode.badName);
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it('answers "not found" with exit 1 for a file that is not archived', async () => {
    const result = await fetch('0000000100000000000000FE', path.join(work, 'absent'));
    expect(result.status).toBe(ExitCode.notFound);
    expect(result.stderr).toMatch(/not in the archive/);
    await expect(stat(path.join(work, 'absent'))).rejects.toThrow();
  });

  it('refuses a corrupted stored object and writes no destination', async () => {
    const segment = wal.segments[0]!;
    expect((await push(segment)).status).toBe(0);
    await repo.tamper(`ns${namespace}/wal/${path.basename(segment)}`, (stored) => {
      const copy = Buffer.from(stored);
      copy.writeUInt8(copy.readUInt8(copy.length >> 1) ^ 0x01, copy.length >> 1);
      return copy;
    });
    const dir = await mkdtemp(path.join(work, 'corrupt-'));
    const result = await fetch(path.basename(segment), path.join(dir, 'RECOVERYXLOG'));
    expect(result.status).toBe(ExitCode.corrupt);
    expect(result.stderr).toMatch(/corrupt/);
    expect(await readdir(dir)).toEqual([]);

    // A truncated object is refused the same way.
    await repo.tamper(`ns${namespace}/wal/${path.basename(segment)}`, (stored) => stored.subarray(0, 1000));
    expect((await fetch(path.basename(segment), path.join(dir, 'RECOVERYXLOG'))).status).toBe(ExitCode.corrupt);
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses an object without a content hash, or with a wrong one, and writes no destination', async () => {
    const segment = wal.segments[1]!;
    const name = path.basename(segment);
    const bytes = await readFile(segment);
    const dir = await mkdtemp(path.join(work, 'nohash-'));
    // Stored by something other than walbridge: no walbridge metadata at all.
    await repo.store().putIfAbsent(`ns${namespace}/wal/${name}`, { body: bytes, md5: createHash('md5').update(bytes).digest(), metadata: {} });
    const bare = await fetch(name, path.join(dir, 'RECOVERYXLOG'));
    expect(bare.status).toBe(ExitCode.corrupt);
    expect(bare.stderr).toMatch(/cannot be verified: it has no valid content hash/);
    // Walbridge's metadata, but the hash of other bytes.
    namespace++;
    const wrong = {
      'walbridge-format': '1',
      'walbridge-sha256': createHash('sha256').update('other bytes').digest('hex'),
      'walbridge-size': String(bytes.length),
      'walbridge-codec': 'none',
    };
    await repo.store().putIfAbsent(`ns${namespace}/wal/${name}`, { body: bytes, md5: createHash('md5').update(bytes).digest(), metadata: wrong });
    const mismatched = await fetch(name, path.join(dir, 'RECOVERYXLOG'));
    expect(mismatched.status).toBe(ExitCode.corrupt);
    expect(mismatched.stderr).toMatch(/is corrupt \(got \d+ bytes with sha256/);
    expect(await readdir(dir)).toEqual([]);
  });

  if (backend === 'file') {
    it('a push ended by SIGTERM removes its temp file from the repository', async () => {
      const root = repo.url.slice('file://'.length);
      const ns = (attempt: number) => `ns${namespace}-${attempt}`;
      const stopped = await stopPushWhileWriting(
        (attempt) => path.join(root, ns(attempt), '.walbridge-tmp'),
        (attempt) => ({ args: ['--push-concurrency', '1', '--compress', 'none', wal.segments[0]!], env: env({ WALBRIDGE_NAMESPACE: ns(attempt) }) }),
      );
      stopped.child.kill('SIGTERM');
      stopped.child.kill('SIGCONT');
      // Ended by the signal itself, as PostgreSQL expects of a command it shuts down.
      expect(await stopped.exited).toEqual({ status: null, signal: 'SIGTERM' });
      expect(await readdir(path.dirname(stopped.temp))).toEqual([]);
    });

    it.skipIf(!canMount)(
      'a disk read error in the repository while fetching is a store failure (exit 10), not a local write error, and writes nothing',
      async () => {
        const disk = await failingDisk();
        try {
          const url = `file://${disk.dir}`;
          const segment = wal.segments[1]!;
          expect((await push(segment, { WALBRIDGE_REPO: url }, ['--push-concurrency', '1', '--compress', 'none'])).status).toBe(0);
          await disk.breakInside(path.join(disk.dir, `ns${namespace}/wal/${path.basename(segment)}`));
          const dir = await mkdtemp(path.join(work, 'eio-'));
          const r = await runCli(
            'archive-fetch',
            ['--no-wait', '--timeout', '2', '--prefetch', '0', path.basename(segment), path.join(dir, 'RECOVERYXLOG')],
            env({ WALBRIDGE_REPO: url }),
          );
          expect(r.status, r.stderr).toBe(ExitCode.storeUnavailable);
          expect(r.stderr).toMatch(/store unreachable or failing: .*EIO/);
          expect(await readdir(dir)).toEqual([]);
        } finally {
          await disk.cleanup();
        }
      },
    );
  }

  it('reports a missing bucket as such, for push and for fetch', async () => {
    const missing = backend === 'file' ? 'file:///nonexistent/walbridge-repo' : `${backend === 's3' ? 's3' : 'gs'}://no-such-bucket-wb/x`;
    const pushed = await push(wal.segments[0]!, { WALBRIDGE_REPO: missing });
    expect(pushed.status).toBe(ExitCode.storeMissing);
    expect(pushed.stderr).toMatch(/does not exist/);
    const fetched = await fetch(path.basename(wal.segments[0]!), path.join(work, 'x'), { WALBRIDGE_REPO: missing });
    expect(fetched.status).toBe(ExitCode.storeMissing);
  });
});

describe('refused credentials and unreachable stores', () => {
  it('--help of every command, with credentials in the environment, prints none of them (runCli checks every call)', async () => {
    const env = {
      AWS_SECRET_ACCESS_KEY: 'help-must-not-show-this-secret',
      AWS_SESSION_TOKEN: 'help-must-not-show-this-token',
      WALBRIDGE_REPO: 's3://bucket-x/p',
      WALBRIDGE_NAMESPACE: 'n',
    };
    for (const [bin, args] of [
      ['archive-push', ['--help']],
      ['archive-fetch', ['--help']],
      ['walbridge', ['--help']],
      ['walbridge', ['status', '--help']],
      ['walbridge', ['verify', '--help']],
    ] as const) {
      const r = await runCli(bin, [...args], env);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/Usage/);
    }
  });

  it('S3: a wrong secret key is "access denied" (exit 11), not a retry loop', async () => {
    const repo = await createRepo('s3');
    const t = Date.now();
    const r = await runCli('archive-push', [wal.segments[0]!], {
      WALBRIDGE_REPO: repo.url,
      WALBRIDGE_NAMESPACE: 'creds',
      ...repo.env,
      AWS_SECRET_ACCESS_KEY: 'not-the-secret',
    });
    expect(r.status).toBe(ExitCode.storeAccess);
    expect(r.stderr).toMatch(/access denied.*check the credentials/);
    expect(r.stderr).not.toContain('not-the-secret');
    expect(Date.now() - t).toBeLessThan(10_000);
  });

  it('GCS: a server that refuses the credentials is "access denied" (exit 11)', async () => {
    const { startGcsServer } = await import('../servers/gcs/server.js');
    const locked = await startGcsServer({ requireAuthToken: 'only-this-token' });
    locked.createBucket('locked');
    try {
      const r = await runCli('archive-push', [wal.segments[0]!], {
        WALBRIDGE_REPO: 'gs://locked/x',
        WALBRIDGE_NAMESPACE: 'creds',
        STORAGE_EMULATOR_HOST: locked.url,
      });
      expect(r.status).toBe(ExitCode.storeAccess);
    } finally {
      await locked.close();
    }
  });

  it('GCS: a damaged or non-JSON credentials file is "access denied" (exit 11) naming GOOGLE_APPLICATION_CREDENTIALS, at once, and no part of the key is printed', async () => {
    const repo = await createRepo('gcs');
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const body = pem.split('\n').filter((line) => line !== '' && !line.startsWith('-----'));
    const damaged = body.map((line, i) => (i === 3 ? `${line.slice(0, 20)}!!${line.slice(22)}` : line));
    const serviceAccount = (key: string[]) =>
      JSON.stringify({
        type: 'service_account',
        project_id: 'p',
        private_key_id: 'k1',
        private_key: ['-----BEGIN PRIVATE KEY-----', ...key, '-----END PRIVATE KEY-----', ''].join('\n'),
        client_email: 'wal@p.iam.gserviceaccount.com',
        token_uri: 'http://127.0.0.1:9/token',
      });
    const dir = await mkdtemp(path.join(work, 'gcs-creds-'));
    // Every 10 characters of the key: a JSON parser's message quotes about that much of a file.
    const secrets = body.join('').match(/.{10}/g)!;
    for (const [name, content] of [
      ['damaged-key.json', serviceAccount(damaged)],
      ['pem-not-json.json', body.join('\n')],
    ] as const) {
      const file = path.join(dir, name);
      await writeFile(file, content, { mode: 0o600 });
      const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'creds', WALBRIDGE_GCS_ENDPOINT: inject('gcsUrl'), GOOGLE_APPLICATION_CREDENTIALS: file };
      for (const [bin, args] of [
        ['archive-push', ['--push-concurrency', '1', wal.segments[0]!]],
        ['archive-fetch', ['--no-wait', '--prefetch', '0', path.basename(wal.segments[0]!), path.join(dir, 'RECOVERYXLOG')]],
      ] as const) {
        const t = Date.now();
        const r = await runCli(bin, ['--timeout', '20', ...args], env, { secrets });
        expect(r.status, r.stderr).toBe(ExitCode.storeAccess);
        expect(r.stderr).toContain(`GOOGLE_APPLICATION_CREDENTIALS (${file})`);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(Date.now() - t).toBeLessThan(10_000); // not retried as if the store were down
      }
    }
  });

  it('S3: a malformed shared credentials file is "access denied" (exit 11) naming AWS_SHARED_CREDENTIALS_FILE, and none of it is printed', async () => {
    const repo = await createRepo('s3');
    const { AWS_ACCESS_KEY_ID: _id, AWS_SECRET_ACCESS_KEY: _secret, ...endpoint } = repo.env;
    const keyId = 'AKIAWALBRIDGETEST0001';
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYWALBRIDGE01';
    const dir = await mkdtemp(path.join(work, 's3-creds-'));
    for (const [name, content] of [
      ['unclosed-section', `[default\naws_access_key_id = ${keyId}\naws_secret_access_key = ${secret}\n`],
      ['no-equals', `[default]\naws_access_key_id ${keyId}\naws_secret_access_key ${secret}\n`],
      ['secret-only', `[default]\naws_secret_access_key = ${secret}\n`],
    ] as const) {
      const file = path.join(dir, name);
      await writeFile(file, content, { mode: 0o600 });
      const env = {
        WALBRIDGE_REPO: repo.url,
        WALBRIDGE_NAMESPACE: 'creds',
        ...endpoint,
        AWS_SHARED_CREDENTIALS_FILE: file,
        AWS_CONFIG_FILE: path.join(dir, 'no-config'),
      };
      const r = await runCli('archive-push', ['--push-concurrency', '1', wal.segments[0]!], env, { secrets: [keyId, secret] });
      expect(r.status, r.stderr).toBe(ExitCode.storeAccess);
      expect(r.stderr).toContain(`AWS_SHARED_CREDENTIALS_FILE (${file})`);
    }
  });

  it('an unreachable endpoint fails within the --timeout bound (exit 10) and archives nothing', async () => {
    const t = Date.now();
    const r = await runCli('archive-push', ['--timeout', '2', wal.segments[0]!], {
      WALBRIDGE_REPO: 's3://walbridge-test/x',
      WALBRIDGE_NAMESPACE: 'n',
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9',
      AWS_ACCESS_KEY_ID: 'k',
      AWS_SECRET_ACCESS_KEY: 's',
      WALBRIDGE_S3_PATH_STYLE: '1',
    });
    expect(r.status).toBe(ExitCode.storeUnavailable);
    expect(r.stderr).toMatch(/ERROR: store unreachable/);
    expect(Date.now() - t).toBeLessThan(15_000);
  });
});
