/**
 * Issue 14's first promise, tried as a DBA would: a waiting standby under recovery.signal
 * becomes a primary only when someone asks. Real PostgreSQL 15 standbys, each caught up and
 * waiting in archive-fetch, each meets one kind of failure while the primary archives two more
 * segments; 15 s later every one is still in recovery on timeline 1; the failure is mended, and
 * each replays the new rows by itself. Failures nothing can mend while the call waits (bad
 * arguments, a setting in the server's environment) stop the server (exit 200, FATAL) instead
 * of promoting it.
 *
 * The standbys share one primary and wait at the same time: the 15 s are spent once.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { startFaultProxy, type FaultProxy } from '../servers/fault-proxy.js';
import { PG_BIN, baseBackup, chownToClusterUser, destroyAll, initPrimary, makeSharedDir, type PgCluster } from '../servers/postgres.js';
import { archiveEverything } from '../support/archiving.js';
import { installCopy, type InstallCopy } from '../support/install-copy.js';
import { createRepo, type TestRepo } from '../support/repos.js';
import type { Store } from '../../src/storage/store.js';
import { createHash } from 'node:crypto';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NAMESPACE = 'holds';
/** The namespace a standby reads where the test decides what is stored (a copy of the real one). */
const COPY = 'holds-copy';
const KEY = randomBytes(32).toString('base64');
const canMount = process.getuid?.() === 0;

/** One standby and the failure it meets. */
interface Case {
  readonly name: string;
  /** The config file's text while healthy (and what `mend` writes back by default). */
  readonly config: string;
  readonly env?: Record<string, string>;
  readonly restoreCommand?: string;
  /** Injects the failure once the standby waits, caught up. */
  readonly inject: () => Promise<void>;
  readonly mend: () => Promise<void>;
  /** A failure that is none for a standby: it keeps replaying throughout. */
  readonly unaffected?: boolean;
  standby?: PgCluster;
}

let primary: PgCluster;
let fileRepo: TestRepo;
let s3Repo: TestRepo;
let shared: string;
let proxy: FaultProxy;
let copies: InstallCopy[] = [];
let mounted: string | undefined;
const cases: Case[] = [];

afterAll(async () => {
  await destroyAll();
  if (mounted) await run('umount', ['-l', mounted]).catch(() => undefined);
  await proxy?.close();
  for (const c of copies) await c.cleanup();
});

async function configFile(name: string, text: string): Promise<string> {
  const file = path.join(shared, `${name}.conf`);
  await writeFile(file, text);
  await chownToClusterUser(file);
  return file;
}

async function owned(file: string, text: string, mode = 0o600): Promise<void> {
  await writeFile(file, text, { mode });
  await chmod(file, mode);
  await chownToClusterUser(file);
}

async function copyObject(from: Store, to: Store, key: string, toKey: string, change?: (b: Buffer) => Buffer): Promise<void> {
  const { info, body } = await from.get(key);
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  const bytes = change ? change(Buffer.concat(chunks)) : Buffer.concat(chunks);
  await to.deleteMany([toKey]);
  await to.putIfAbsent(toKey, { body: bytes, md5: createHash('md5').update(bytes).digest(), metadata: info.metadata });
}

/** Keys of COPY holding a damaged object. */
const damagedKeys = new Set<string>();

/**
 * The primary archives into the file:// repository only (two archive-push commands in one
 * archive_command would double its cost on a loaded machine); the S3 namespace and COPY follow
 * it here, COPY with the segment `damaged` damaged if asked, and damaged ones again whole unless asked.
 */
async function syncCopy(damaged?: string): Promise<void> {
  const from = fileRepo.store();
  const to = s3Repo.store();
  const wanted: string[] = [];
  for await (const o of from.list(`${NAMESPACE}/`)) wanted.push(o.key);
  const present = new Set<string>();
  for (const prefix of [NAMESPACE, COPY]) for await (const o of to.list(`${prefix}/`)) present.add(o.key);
  for (const key of wanted) {
    if (!present.has(key)) await copyObject(from, to, key, key);
    const toKey = COPY + key.slice(NAMESPACE.length);
    const flip = damaged !== undefined && key.endsWith(`/${damaged}`);
    if (present.has(toKey) && !flip && !(damaged === undefined && damagedKeys.has(toKey))) continue;
    if (flip) damagedKeys.add(toKey);
    else damagedKeys.delete(toKey);
    await copyObject(from, to, key, toKey, flip ? (b) => Buffer.concat([b.subarray(0, 100), Buffer.from([b[100]! ^ 0xff]), b.subarray(101)]) : undefined);
  }
}

async function timeline(pg: PgCluster): Promise<string> {
  return pg.psql('select timeline_id from pg_control_checkpoint()');
}

describe('a waiting standby under recovery.signal holds on every failure that can be mended, and promotes only when asked', () => {
  beforeAll(async () => {
    [fileRepo, s3Repo] = await Promise.all([createRepo('file'), createRepo('s3')]);
    shared = await makeSharedDir('holds');
    const s3 = inject('s3');
    const endpoint = new URL(s3.endpoint);
    proxy = await startFaultProxy({ host: endpoint.hostname, port: Number(endpoint.port) });
    // The primary archives into a file:// repository; syncCopy copies into S3 for the S3 standbys.
    primary = await initPrimary({
      name: 'holds-primary',
      env: { WALBRIDGE_REPO: fileRepo.url, WALBRIDGE_NAMESPACE: NAMESPACE },
      archiveCommand: 'archive-push %p',
    });
    await primary.psql('create table marks (id serial primary key, note text)');
    await archiveEverything(primary, 120_000);
    await syncCopy();

    const repoDir = new URL(fileRepo.url).pathname;
    const fileBase = `repo = ${fileRepo.url}\nnamespace = ${NAMESPACE}\n`;
    const s3Base = `repo = ${s3Repo.url}\nnamespace = ${NAMESPACE}\ntimeout = 3\n`;
    // The standbys' settings come from their config files only.
    const noRepoEnv = { WALBRIDGE_REPO: '', WALBRIDGE_NAMESPACE: '' };
    const keyFile = (name: string) => path.join(shared, `${name}.keys`);
    const withKey = (name: string) => `${fileBase}encryption-key-file = ${keyFile(name)}\nencryption-allow-plaintext = true\n`;
    const [noZstd, noBundle] = [await installCopy(), await installCopy()];
    copies = [noZstd, noBundle];
    const pathWith = (bin: string) => [bin, PG_BIN, path.dirname(process.execPath), '/usr/local/bin:/usr/bin:/bin'].join(':');
    const gate = path.join(shared, 'gate');
    await mkdir(gate);
    await symlink(repoDir, path.join(gate, 'repo'));
    const creds = path.join(shared, 'aws-credentials');
    const awsCreds = (secret: string) => owned(creds, `[default]\naws_access_key_id = ${s3.accessKey}\naws_secret_access_key = ${secret}\n`);
    await awsCreds(s3.secretKey);
    const configs: Record<string, string> = {};
    const rewrite = async (name: string, text: string) => void (await configFile(name, text));

    cases.push(
      {
        name: 'push-typo',
        config: fileBase,
        inject: () => rewrite('push-typo', `${fileBase}compress = zsdt\n`), // a push-only setting mistyped in a shared file
        mend: async () => undefined,
        unaffected: true,
      },
      {
        name: 'bad-setting',
        config: fileBase,
        inject: () => rewrite('bad-setting', `${fileBase}timeout = abc\n`),
        mend: () => rewrite('bad-setting', fileBase),
      },
      {
        name: 'bad-url',
        config: fileBase,
        inject: () => rewrite('bad-url', `repo = ${fileRepo.url}%zz\nnamespace = ${NAMESPACE}\n`),
        mend: () => rewrite('bad-url', fileBase),
      },
      {
        name: 'key-unreadable',
        config: withKey('key-unreadable'),
        inject: () => chmod(keyFile('key-unreadable'), 0o000),
        mend: () => chmod(keyFile('key-unreadable'), 0o600),
      },
      { name: 'key-empty', config: withKey('key-empty'), inject: () => owned(keyFile('key-empty'), ''), mend: () => owned(keyFile('key-empty'), `${KEY}\n`) },
      {
        // Without prefetch every call decodes by itself, as after the background fetcher was restarted by an upgrade.
        name: 'no-zstd',
        config: `${fileBase}prefetch = 0\n`,
        env: { PATH: pathWith(noZstd.binDir) },
        inject: () => noZstd.removeZstd(),
        mend: () => noZstd.restoreZstd(),
      },
      {
        name: 'no-bundle',
        config: fileBase,
        env: { PATH: pathWith(noBundle.binDir) },
        inject: () => noBundle.removeBundle(),
        mend: () => noBundle.restoreBundle(),
      },
      {
        name: 'repo-denied',
        config: `repo = file://${path.join(gate, 'repo')}\nnamespace = ${NAMESPACE}\n`,
        inject: () => chmod(gate, 0o000),
        mend: () => chmod(gate, 0o755),
      },
      {
        name: 's3-unreachable',
        config: s3Base,
        env: { AWS_ENDPOINT_URL_S3: proxy.url },
        inject: async () => {
          proxy.set({ kind: 'blackhole' });
          proxy.resetAll();
        },
        mend: async () => proxy.set({ kind: 'none' }),
      },
      {
        // Without prefetch: a background fetcher started before would go on with the credentials it read then.
        name: 's3-denied',
        config: `${s3Base}prefetch = 0\n`,
        env: { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SHARED_CREDENTIALS_FILE: creds },
        inject: () => awsCreds('not-the-secret'),
        mend: () => awsCreds(s3.secretKey),
      },
      {
        name: 'corrupt',
        config: `repo = ${s3Repo.url}\nnamespace = ${COPY}\ntimeout = 3\n`,
        inject: async () => undefined, // the segments that land during the fault are copied damaged (below)
        mend: () => syncCopy(),
      },
    );
    if (canMount) {
      mounted = path.join(shared, 'pg_wal-volume');
      cases.push({
        name: 'pg_wal-full',
        config: fileBase,
        inject: async () => {
          // Fill the pg_wal volume to within 4 MiB: no 16 MiB segment fits.
          const { stdout } = await run('df', ['-B1', '--output=avail', mounted!]);
          const avail = Number(stdout.trim().split('\n').pop());
          await writeFile(path.join(mounted!, 'filler'), Buffer.alloc(Math.max(0, avail - 4 * 1024 * 1024)));
        },
        mend: () => rm(path.join(mounted!, 'filler'), { force: true }),
      });
    }

    for (const c of cases) configs[c.name] = await configFile(c.name, c.config);
    for (const name of ['key-unreadable', 'key-empty']) await owned(keyFile(name), `${KEY}\n`);
    for (const c of cases) {
      c.standby = await baseBackup(primary, {
        name: `holds-${c.name}`,
        env: { ...noRepoEnv, ...s3Repo.env, ...c.env }, // the S3 endpoint and credentials, as the primary has none
        recovery: { restoreCommand: c.restoreCommand ?? `archive-fetch --config ${configs[c.name]} %f %p %r`, signal: 'recovery' },
        conf: { archive_command: '' },
      });
      if (c.name === 'pg_wal-full') await moveWalToVolume(c.standby, mounted!);
      await c.standby.start({ wait: false });
    }
    // The copy namespace follows what the base backups made the primary archive.
    await archiveEverything(primary, 120_000);
    await syncCopy();
    await Promise.all(cases.map((c) => c.standby!.waitFor('select count(*) from marks', '0', 120_000))).catch(async (err) => {
      // Which standbys did not come up, and what their restore_command said (the error names only the first).
      for (const c of cases) {
        const lines = (await c.standby!.log()).split('\n').filter((l) => !l.includes('the database system is starting up'));
        console.log(`--- ${c.name} ---\n${lines.slice(-15).join('\n')}`);
      }
      throw err;
    });
  }, 600_000);

  it('each failure is held for 15 s without a promotion, and mended, each standby goes on by itself', async () => {
    await primary.psql("insert into marks (note) values ('before')");
    await archiveEverything(primary, 120_000);
    await syncCopy();
    for (const c of cases) await c.standby!.waitFor("select count(*) from marks where note = 'before'", '1', 60_000);

    for (const c of cases) await c.inject();
    // Two segments: a call already waiting for the first may have read its settings and loaded
    // its code before the failure; the call for the second meets it.
    for (const note of ['fault-1', 'fault-2']) {
      await primary.psql(`insert into marks (note) values ('${note}')`);
      await syncCopy(await archiveEverything(primary, 120_000));
    }
    const faultAt = Date.now();
    await sleep(15_000);
    for (const c of cases) {
      const pg = c.standby!;
      expect(pg.isRunning(), `${c.name}: the server runs`).toBe(true);
      expect(await pg.isInRecovery(), `${c.name}: still in recovery`).toBe(true);
      expect(await timeline(pg), `${c.name}: no new timeline`).toBe('1');
      const seen = await pg.psql("select count(*) from marks where note = 'fault-2'");
      expect(seen, `${c.name}: ${c.unaffected ? 'replays on' : 'holds'}`).toBe(c.unaffected ? '1' : '0');
      if (!c.unaffected)
        expect(await pg.log(), c.name).toMatch(/holding: under recovery\.signal any other answer would (end recovery and )?promote this standby/);
    }
    expect(await fileRepo.store().head(`${NAMESPACE}/history/00000002.history`)).toBeUndefined();

    for (const c of cases) await c.mend();
    const mendedAt = Date.now();
    const resumed: string[] = [];
    await Promise.all(
      cases.map(async (c) => {
        await c.standby!.waitFor("select count(*) from marks where note = 'fault-2'", '1', 60_000, { intervalMs: 250 });
        resumed.push(`${c.name} ${((Date.now() - mendedAt) / 1000).toFixed(1)} s`);
        expect(await c.standby!.isInRecovery(), c.name).toBe(true);
        expect(await timeline(c.standby!), c.name).toBe('1');
      }),
    );
    console.log(`held ${((mendedAt - faultAt) / 1000).toFixed(0)} s without a promotion; going on after mending: ${resumed.join(', ')}`);
  }, 300_000);

  it.each<[string, { restoreCommand?: string; env?: Record<string, string> }]>([
    ['an unknown option in restore_command', { restoreCommand: 'archive-fetch --no-such-option %f %p %r' }],
    ['a bad setting in the server environment', { env: { WALBRIDGE_TIMEOUT: 'abc' } }],
  ])(
    '%s stops the standby (exit 200) instead of promoting it',
    async (_what, how) => {
      const pg = await baseBackup(primary, {
        name: 'holds-stop',
        env: how.env,
        recovery: { restoreCommand: how.restoreCommand ?? 'archive-fetch %f %p %r', signal: 'recovery' },
        conf: { archive_command: '' },
      });
      await pg.start({ wait: false }).catch(() => undefined);
      const deadline = Date.now() + 30_000;
      while (pg.isRunning() && Date.now() < deadline) await sleep(200);
      expect(pg.isRunning()).toBe(false);
      const log = await pg.log();
      expect(log).toMatch(/exiting 200 so that PostgreSQL stops instead/);
      expect(log).toMatch(/could not restore file .* child process exited with exit code 200/);
      expect(log).not.toMatch(/selected new timeline ID/);
      const control = await run(path.join(PG_BIN, 'pg_controldata'), [pg.dataDir], { env: { LANG: 'C' } });
      expect(control.stdout).toMatch(/Latest checkpoint's TimeLineID:\s+1$/m);
      await pg.destroy();
    },
    120_000,
  );
});

/** Puts the standby's pg_wal on a small volume of its own, as many set-ups have it. */
async function moveWalToVolume(pg: PgCluster, mountPoint: string): Promise<void> {
  await mkdir(mountPoint, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', 'size=96m,mode=0700', 'tmpfs', mountPoint]);
  await run('cp', ['-a', `${pg.walDir}/.`, mountPoint]);
  await rm(pg.walDir, { recursive: true });
  await symlink(mountPoint, pg.walDir);
  await chownToClusterUser(mountPoint, { recursive: true });
}

// Keeps `readFile` imported for debugging a failing run (the standbys' logs are in their rootDirs).
void readFile;
