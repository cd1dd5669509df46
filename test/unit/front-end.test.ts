/**
 * The sh front-ends in bin/: their call key (run in dash, as PostgreSQL's /bin/sh is on Debian)
 * and the file identity they compare, against what Node writes.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { callKeyOf, frontEndRecord } from '../../src/archive/front-end.js';
import { DEFAULT_CONFIG } from '../../src/config/settings.js';
import { bootId, clearanceLine, uptimeCentiseconds } from '../../src/archive/restore/clearance.js';
import { fileIdentity, statLine } from '../../src/util/file-identity.js';
import { BIN_DIR } from '../support/cli.js';
import { scratchDir } from '../support/scratch.js';

/** The shell functions that make the key, as a script holds them. */
function keyFunctions(executable: string): string {
  const text = readFileSync(path.join(BIN_DIR, executable), 'utf8');
  const start = text.indexOf('call_key() {');
  const end = text.indexOf('\n# node_call');
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  return text.slice(start, end);
}

/** The key dash computes for `args` (the last `skip` left out) under `env`, in `cwd`; `defaultConfig` stands for /etc/walbridge/walbridge.conf. */
function keyOf(skip: number, args: string[], env: Record<string, string> = {}, cwd = tmpdir(), defaultConfig = DEFAULT_CONFIG): string {
  const script = `${keyFunctions('archive-push').replaceAll(DEFAULT_CONFIG, defaultConfig)}\ncall_key "$@"\nprintf %s "$key"`;
  return execFileSync('dash', ['-c', script, 'sh', String(skip), ...args], { env: { PATH: process.env['PATH']!, ...env }, cwd, encoding: 'utf8' });
}

describe("the front-ends' Node", () => {
  const findNode = (executable: string) => {
    const text = readFileSync(path.join(BIN_DIR, executable), 'utf8');
    return text.slice(text.indexOf('# find_node:'), text.indexOf('\n}\n', text.indexOf('find_node() {')));
  };

  it('is found by the same shell function in the three', () => {
    expect(findNode('archive-push')).toMatch(/^# find_node:[\s\S]*find_node\(\) \{/);
    expect(findNode('archive-fetch')).toBe(findNode('archive-push'));
    expect(findNode('walbridge')).toBe(findNode('archive-push'));
  });
});

describe('the call key', () => {
  it('is made by the same shell functions in both front-ends', () => {
    expect(keyFunctions('archive-fetch')).toBe(keyFunctions('archive-push'));
  });

  it('is the same for calls that differ only in their WAL files, and is what Node accepts', () => {
    const a = keyOf(1, ['--namespace', 'n1', 'pg_wal/000000010000000000000001']);
    expect(keyOf(1, ['--namespace', 'n1', 'pg_wal/000000010000000000000002'])).toBe(a);
    expect(callKeyOf({ WALBRIDGE_CALL_KEY: a })).toBe(a);
    const fetch = keyOf(3, ['000000010000000000000003', 'pg_wal/RECOVERYXLOG', '000000010000000000000001']);
    expect(keyOf(3, ['000000010000000000000004', 'pg_wal/RECOVERYXLOG', '000000010000000000000002'])).toBe(fetch);
  });

  it('differs with any argument, environment variable or config file byte', async () => {
    const base = keyOf(1, ['--namespace', 'n1', 'x']);
    expect(keyOf(1, ['--namespace', 'n2', 'x'])).not.toBe(base);
    expect(keyOf(1, ['--namespace n1', 'x'])).not.toBe(keyOf(1, ['--namespace', 'n1', 'x']));
    expect(keyOf(1, ['a\nb', 'x'])).not.toBe(keyOf(1, ['a', 'b', 'x']));
    expect(keyOf(2, ['--namespace', 'n1', 'x'])).not.toBe(base);
    expect(keyOf(1, ['--namespace', 'n1', 'x'], { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' })).not.toBe(base);
    expect(keyOf(1, ['--namespace', 'n1', 'x'], { WALBRIDGE_TIMEOUT: '5' })).not.toBe(keyOf(1, ['--namespace', 'n1', 'x'], { WALBRIDGE_TIMEOUT: '6' }));
    const dir = await scratchDir('wb-key-');
    const config = path.join(dir, 'walbridge.conf');
    await writeFile(config, 'namespace = n1\n');
    const byFlag = keyOf(1, ['--config', config, 'x']);
    const byEqual = keyOf(1, [`--config=${config}`, 'x']);
    const byEnv = keyOf(1, ['x'], { WALBRIDGE_CONFIG: config });
    await writeFile(config, 'namespace = n2\n');
    expect(keyOf(1, ['--config', config, 'x'])).not.toBe(byFlag);
    expect(keyOf(1, [`--config=${config}`, 'x'])).not.toBe(byEqual);
    expect(keyOf(1, ['x'], { WALBRIDGE_CONFIG: config })).not.toBe(byEnv);
    // A config file named "-" is that file (Node reads it), not sha256sum's stdin.
    await writeFile(path.join(dir, '-'), 'namespace = n1\n');
    const dash = keyOf(1, ['x'], { WALBRIDGE_CONFIG: '-' }, dir);
    const dashFlag = keyOf(1, ['--config', '-', 'x'], {}, dir);
    await writeFile(path.join(dir, '-'), 'namespace = n2\n');
    expect(keyOf(1, ['x'], { WALBRIDGE_CONFIG: '-' }, dir)).not.toBe(dash);
    expect(keyOf(1, ['--config', '-', 'x'], {}, dir)).not.toBe(dashFlag);
  });

  it('hashes the default config file when no other is named, as Node reads it', async () => {
    expect(keyFunctions('archive-push')).toContain(`config=\${WALBRIDGE_CONFIG-${DEFAULT_CONFIG}}`);
    const dir = await scratchDir('wb-key-default-');
    const file = path.join(dir, 'walbridge.conf');
    const none = keyOf(1, ['x'], {}, dir, file);
    await writeFile(file, 'namespace = n1\n');
    const first = keyOf(1, ['x'], {}, dir, file);
    expect(first).not.toBe(none);
    await writeFile(file, 'namespace = n2\n');
    expect(keyOf(1, ['x'], {}, dir, file)).not.toBe(first);
    // There but unreadable (a directory here; Node fails on it): no key, so Node answers.
    expect(keyOf(1, ['x'], {}, dir, dir)).toBe('');
    expect(keyOf(1, ['x'], { WALBRIDGE_CONFIG: dir }, dir)).toBe('');
    // WALBRIDGE_CONFIG set empty: no file at all (Node reads none either).
    expect(keyOf(1, ['x'], { WALBRIDGE_CONFIG: '' }, dir, file)).toBe(keyOf(1, ['x'], { WALBRIDGE_CONFIG: '' }, dir, path.join(dir, 'absent')));
    await rm(dir, { recursive: true });
  });

  it('leaves out what a shell sets on its own (working directory, level, last command)', () => {
    const base = keyOf(1, ['x'], { PWD: '/a', OLDPWD: '/b', SHLVL: '1', _: '/usr/bin/env' });
    expect(keyOf(1, ['x'], { PWD: '/c', SHLVL: '3', _: '/bin/sh' }, '/')).toBe(base);
  });
});

describe('the file identity', () => {
  it('is written as GNU stat prints it, to the nanosecond', async () => {
    const dir = await scratchDir('wb-identity-');
    const file = path.join(dir, 'f');
    await writeFile(file, 'x');
    execFileSync('touch', ['-d', '2020-01-01 00:00:00.000000007', file], { env: { TZ: 'UTC' } });
    const id = fileIdentity(await stat(file, { bigint: true }));
    expect(statLine(id)).toBe(execFileSync('stat', ['-L', '-c', '%d %i %s %.9Y %.9Z', file], { encoding: 'utf8' }).trim());
    expect(id.mtime).toBe('1577836800.000000007');
    expect(frontEndRecord('k', id)).toBe(`k ${statLine(id)}`);
  });
});

describe('a broken installation', () => {
  it('never answers 1-125 from the front-end when the Node half is missing: 200 for archive-fetch, 70 for archive-push', async () => {
    const dir = await scratchDir('wb-broken-');
    for (const [executable, args, code] of [
      ['archive-fetch', ['000000010000000000000003', 'pg_wal/RECOVERYXLOG', '000000010000000000000002'], 200],
      ['archive-push', ['pg_wal/000000010000000000000003'], 70],
    ] as const) {
      await copyFile(path.join(BIN_DIR, executable), path.join(dir, executable));
      const r = spawnSync('dash', ['-c', `"${dir}/${executable}" "$@"`, 'sh', ...args], { cwd: dir, encoding: 'utf8' });
      expect(r.status).toBe(code);
      expect(r.stderr).toBe(`${executable}: ERROR: walbridge's installation is incomplete (${dir}/node/${executable}.mjs is missing): reinstall it\n`);
    }
  });
});

describe('archive-fetch waiting for a download under way', () => {
  /** Runs bin/archive-fetch's `downloading SPOOL NAME` in dash; resolves with the milliseconds it took. */
  function downloading(spool: string, name: string): Promise<number> {
    const text = readFileSync(path.join(BIN_DIR, 'archive-fetch'), 'utf8');
    const fn = text.slice(text.indexOf('downloading() {'), text.indexOf('\n# %f %p %r'));
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn('dash', ['-c', `sigusr1=0\n${fn}\ndownloading "$1" "$2"`, 'sh', spool, name], { stdio: 'inherit' });
      child.on('error', reject);
      child.on('exit', () => resolve(Date.now() - started));
    });
  }

  it('waits while a live node process downloads the segment, not for a file whose pid another program reuses', async () => {
    const spool = await scratchDir('wb-spool-');
    const name = '000000010000000000000007';
    const fetcher = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
    const other = spawn('sleep', ['20']);
    try {
      await writeFile(path.join(spool, `.${name}.walbridge-${other.pid}-0a0b0c0d`), '');
      expect(await downloading(spool, name)).toBeLessThan(1000); // not a fetcher's: no wait
      await rm(path.join(spool, `.${name}.walbridge-${other.pid}-0a0b0c0d`));
      await writeFile(path.join(spool, `.${name}.walbridge-${fetcher.pid}-0a0b0c0d`), '');
      setTimeout(() => void writeFile(path.join(spool, name), 'x'), 1500);
      expect(await downloading(spool, name)).toBeGreaterThanOrEqual(1400);
    } finally {
      fetcher.kill();
      other.kill();
    }
  });
});

describe("archive-fetch's check before answering a waiting call", () => {
  /** Runs bin/archive-fetch's `no_failover PREFETCH F P` in dash with `key` and `spool`: true if it may answer. */
  function mayAnswer(prefetch: string, f: string, p: string, key: string, spool: string, cwd: string): boolean {
    const text = readFileSync(path.join(BIN_DIR, 'archive-fetch'), 'utf8');
    const fns = text.slice(text.indexOf('no_failover() {'), text.indexOf('\n# %f %p %r'));
    return spawnSync('dash', ['-c', `${fns}\nno_failover "$@"`, 'sh', prefetch, f, p], { env: { PATH: process.env['PATH']!, key, spool }, cwd }).status === 0;
  }

  it("holds while the fetcher's look does: same key, spool and timeline, not expired, no promote file", async () => {
    const data = await scratchDir('wb-waiting-');
    const prefetch = path.join(data, 'pg_wal', 'walbridge', 'prefetch');
    await mkdir(prefetch, { recursive: true });
    const key = 'a'.repeat(128);
    const f = '00000002000000000000000A';
    const now = uptimeCentiseconds()!;
    const look = (line: string) => writeFile(path.join(prefetch, 'front-end-waiting'), line);
    const holder = { key, spool: path.join(prefetch, 'ns-0123456789ab'), timeline: 2 };
    const boot = bootId()!;
    await look(clearanceLine(holder, now + 1000, boot));
    expect(mayAnswer('pg_wal/walbridge/prefetch', f, 'pg_wal/RECOVERYXLOG', key, 'ns-0123456789ab', data)).toBe(true);
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(true);
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), 'b'.repeat(128), 'ns-0123456789ab', '/')).toBe(false);
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'other-0123456789ab', '/')).toBe(false);
    expect(mayAnswer(prefetch, '00000003000000000000000A', path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(false);
    // pg_ctl promote's file, found from a relative %p (the data directory is the working directory) and from an absolute one.
    await writeFile(path.join(data, 'promote'), '');
    expect(mayAnswer('pg_wal/walbridge/prefetch', f, 'pg_wal/RECOVERYXLOG', key, 'ns-0123456789ab', data)).toBe(false);
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(false);
    await rm(path.join(data, 'promote'));
    // Expired, written before a reboot (uptime counts again from 0), or not written by the fetcher.
    await look(clearanceLine(holder, now + 1000, '00000000-0000-4000-8000-000000000000'));
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(false);
    await look(clearanceLine(holder, now - 1, boot));
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(false);
    await look(`${key} ns-0123456789ab\n`);
    expect(mayAnswer(prefetch, f, path.join(data, 'pg_wal', 'RECOVERYXLOG'), key, 'ns-0123456789ab', '/')).toBe(false);
    await rm(data, { recursive: true });
  });

  /** archive-fetch's uptime_cs function. */
  function fetchUptimeFunction(): string {
    const text = readFileSync(path.join(BIN_DIR, 'archive-fetch'), 'utf8');
    return text.slice(text.indexOf('uptime_cs() {'), text.indexOf('\n}\n', text.indexOf('uptime_cs() {')) + 3);
  }

  it('reads /proc/uptime as Node does', () => {
    expect(uptimeCentiseconds(() => '74650.56 55784.17\n')).toBe(7465056);
    expect(uptimeCentiseconds(() => 'garbage')).toBeUndefined();
    expect(uptimeCentiseconds(() => '0.05 0.01\n')).toBe(5);
    // archive-push waits on the same clock, with the same function.
    const push = readFileSync(path.join(BIN_DIR, 'archive-push'), 'utf8');
    const pushFn = push.slice(push.indexOf('uptime_cs() {'), push.indexOf('\n}\n', push.indexOf('uptime_cs() {')) + 3);
    expect(fetchUptimeFunction()).toBe(pushFn);
    const text = readFileSync(path.join(BIN_DIR, 'archive-fetch'), 'utf8');
    const fn = text.slice(text.indexOf('uptime_cs() {'), text.indexOf('\n# %f %p %r'));
    const before = uptimeCentiseconds()!;
    const sh = Number(execFileSync('dash', ['-c', `${fn}\nuptime_cs\nprintf %s "$now"`], { encoding: 'utf8' }));
    expect(sh).toBeGreaterThanOrEqual(before);
    expect(sh).toBeLessThan(before + 100);
  });
});
