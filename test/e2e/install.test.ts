/**
 * walbridge installed as a DBA would install it, never from this checkout: the npm package
 * (`npm pack`, then `npm install -g` of the tarball into a prefix) and the self-contained release
 * (`scripts/release`, then its `install` into a prefix), each archiving a real primary and feeding
 * a real standby through the installed commands alone, with this checkout's bin/ off the PATH
 * (and, for the release, no Node.js on it at all).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { PG_BIN, REPO_ROOT, baseBackup, destroyAll, initPrimary, runAsClusterUser } from '../servers/postgres.js';
import { createRepo, type Backend } from '../support/repos.js';
import { scratchDir } from '../support/scratch.js';

afterAll(destroyAll);

const run = promisify(execFile);
const version = (JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const EXECUTABLES = ['archive-push', 'archive-fetch', 'walbridge'] as const;

/** A directory the cluster user can read, for an installation. */
async function installRoot(prefix: string): Promise<string> {
  const dir = await scratchDir(prefix);
  await chmod(dir, 0o755);
  return dir;
}

/** Bytes under `dir`, as du counts them (apparent sizes). */
async function bytesUnder(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-s', '-b', dir]);
  return Number(stdout.split('\t')[0]);
}

/**
 * A primary archiving with `<binDir>/archive-push %p` and a standby restoring with
 * `<binDir>/archive-fetch %f %p %r` from nothing but the repository, the servers' PATH being `path`.
 */
async function replicateThrough(label: string, backend: Backend, binDir: string, pathEnv: string): Promise<void> {
  const repo = await createRepo(backend);
  const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: `inst-${label}`, ...repo.env, PATH: pathEnv };
  const primary = await initPrimary({ name: `inst-${label}`, env, archiveCommand: `${binDir}/archive-push %p` });
  await primary.psql('create table t (id int primary key); insert into t select generate_series(1, 500)');
  await primary.psql('select pg_switch_wal()');
  await primary.waitFor('select archived_count > 0 and failed_count = 0 from pg_stat_archiver', 't', 30_000);
  const standby = await baseBackup(primary, {
    name: `inst-${label}-std`,
    wal: 'none',
    recovery: { restoreCommand: `${binDir}/archive-fetch %f %p %r`, signal: 'standby' },
    conf: { wal_retrieve_retry_interval: '200ms' },
    start: { wait: false },
  });
  await standby.waitFor('select count(*) from t', '500', 60_000);
  await primary.psql('insert into t values (501); select pg_switch_wal()');
  await standby.waitFor('select max(id) from t', '501', 30_000);
  expect(await primary.psql('select failed_count from pg_stat_archiver')).toBe('0');
  expect(await primary.log()).toMatch(/archive-push: archived 0000000100000000000000\w\w/);
  expect(await standby.log()).toMatch(/archive-fetch: restored/);
  const status = await runAsClusterUser(`${binDir}/walbridge`, ['status', '--json'], { env: { ...env, HOME: '/tmp' } });
  expect(status.code, status.stderr).toBe(0);
  await standby.destroy();
  await primary.destroy();
  await repo.cleanup();
}

describe('installed as a DBA would', () => {
  it(`npm pack gives a prebuilt package of what runs; npm install -g of it: three working commands, at most 10 MB, archiving and restoring through s3`, async () => {
    const dir = await installRoot('wb-pack-');
    // --ignore-scripts: pack the build the suite runs on (prepare would rebuild dist/ under the running tests).
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: REPO_ROOT });
    const [packed] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
    const files = packed.files.map((f) => f.path);
    expect(files.filter((f) => !/^(bin\/|dist\/bundle\/|deploy\/|LICENSE$|README\.md$|package\.json$)/.test(f))).toEqual([]);
    for (const f of [
      'bin/archive-push',
      'bin/node/walbridge.mjs',
      'dist/bundle/main.js',
      'dist/bundle/build-info.json',
      'dist/bundle/THIRD-PARTY-LICENSES',
      'LICENSE',
    ])
      expect(files).toContain(f);

    const prefix = path.join(dir, 'prefix');
    await run('npm', ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', path.join(dir, packed.filename)], {
      env: { ...process.env, npm_config_loglevel: 'error' },
    });
    const installed = path.join(prefix, 'lib', 'node_modules', 'walbridge');
    const size = await bytesUnder(installed);
    expect(size).toBeLessThanOrEqual(10 * 1024 * 1024);
    for (const page of ['walbridge.1', 'archive-push.1', 'archive-fetch.1']) await readFile(path.join(prefix, 'share', 'man', 'man1', page));
    for (const exe of EXECUTABLES) {
      const r = await run(path.join(prefix, 'bin', exe), ['--version']);
      expect(r.stdout.trim()).toBe(version);
    }
    await replicateThrough('npm', 's3', path.join(prefix, 'bin'), `${PG_BIN}:/usr/local/bin:/usr/bin:/bin`);
  });

  it('the release carries its own Node.js: installed into a prefix, it archives and restores through gcs with no node on PATH', async () => {
    const dir = await installRoot('wb-release-');
    const { stdout } = await run(path.join(REPO_ROOT, 'scripts', 'release'), ['--no-build', '--out', dir], { cwd: REPO_ROOT });
    const tarball = stdout.trim().split('\n').at(-1)!;
    await run('tar', ['-xzf', tarball, '-C', dir]);
    const unpacked = path.join(dir, path.basename(tarball, '.tar.gz'));
    const prefix = path.join(dir, 'prefix');
    await run(path.join(unpacked, 'install'), [prefix]);
    // Installed again, as an upgrade would be, by a root whose umask keeps everything to itself:
    // a new copy, switched to in one rename; the first stays for what still runs from it.
    await run('sh', ['-c', 'umask 077 && exec "$0" "$1"', path.join(unpacked, 'install'), prefix]);
    const copies = (await readdir(path.join(prefix, 'lib'))).filter((n) => n.startsWith(`${path.basename(unpacked)}.`));
    expect(copies).toHaveLength(2);

    // Every program of /usr/bin but Node.js: what PostgreSQL's PATH could offer on a host without it.
    const noNode = path.join(dir, 'usr-bin-without-node');
    await mkdir(noNode);
    for (const name of await readdir('/usr/bin')) if (!/^node(js)?$/.test(name)) await symlink(path.join('/usr/bin', name), path.join(noNode, name));
    const pathEnv = `${PG_BIN}:${noNode}`;
    const bin = path.join(prefix, 'bin');
    const missing = await runAsClusterUser('sh', ['-c', 'command -v node || echo none'], { env: { PATH: pathEnv } });
    expect(missing.stdout.trim()).toBe('none');
    const info = await runAsClusterUser(path.join(bin, 'walbridge'), ['version', '--json'], { env: { PATH: pathEnv } });
    expect(info.code, info.stderr).toBe(0);
    const report = JSON.parse(info.stdout) as { walbridge: string; runtime: string; codecs: Record<string, string> };
    expect(report.walbridge).toBe(version);
    const current = await readlink(path.join(prefix, 'lib', 'walbridge'));
    expect(copies).toContain(current);
    expect(report.runtime).toBe(path.join(prefix, 'lib', current, 'runtime', 'node'));
    expect(report.codecs).toEqual({ zstd: 'available', lz4: 'available', gzip: 'available', none: 'available' });
    for (const page of ['walbridge.1', 'archive-push.1', 'archive-fetch.1']) await readFile(path.join(prefix, 'share', 'man', 'man1', page));
    // The systemd units, pointed at this prefix, as systemd reads them (the man page found too).
    if (existsSync('/usr/bin/systemd-analyze')) {
      const units = {
        'walbridge-stream@.service': 'walbridge-stream@15-main.service',
        'walbridge-status.service': undefined,
        'walbridge-status.timer': undefined,
      };
      expect((await readdir(path.join(unpacked, 'deploy', 'systemd'))).sort()).toEqual(Object.keys(units).sort());
      for (const [file, instance] of Object.entries(units)) {
        const text = await readFile(path.join(unpacked, 'deploy', 'systemd', file), 'utf8');
        await writeFile(path.join(dir, instance ?? file), text.replace('/usr/local/bin/walbridge', path.join(bin, 'walbridge')));
      }
      for (const unit of ['walbridge-stream@15-main.service', 'walbridge-status.service', 'walbridge-status.timer']) {
        const verified = await run('systemd-analyze', ['verify', path.join(dir, unit)], {
          env: { ...process.env, MANPATH: path.join(prefix, 'share', 'man') },
        });
        expect(verified.stderr, unit).toBe('');
      }
    } else console.warn('install.test.ts: no systemd-analyze here: the systemd units are not checked');
    await replicateThrough('release', 'gcs', bin, pathEnv);
  });
});
