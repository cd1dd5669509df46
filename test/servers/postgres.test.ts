import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  PG15_WAL_PAGE_MAGIC,
  REPO_ROOT,
  baseBackup,
  clusterUser,
  destroyAll,
  generateWalSegments,
  initPrimary,
  makeSharedDir,
  pidAlive,
  removeSharedDir,
  runAsClusterUser,
  walFileName,
  type GeneratedWal,
  type PgCluster,
} from './postgres.js';
import { scratchDir } from '../support/scratch.js';

afterAll(destroyAll);

/** archive_command that publishes atomically into dir. */
const atomicCopy = (dir: string) => `cp %p '${dir}/%f.tmp' && mv '${dir}/%f.tmp' '${dir}/%f'`;

async function waitForFile(path: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Check a segment's first (long) page header against what we expect. */
async function checkSegmentHeader(path: string, g: GeneratedWal): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(40);
    await fh.read(buf, 0, 40, 0);
    const name = path.slice(-24);
    expect(buf.readUInt16LE(0), `magic of ${name}`).toBe(PG15_WAL_PAGE_MAGIC);
    expect(buf[0]).toBe(0x10);
    expect(buf[1]).toBe(0xd1);
    expect(buf.readUInt16LE(2) & 0x0002, 'XLP_LONG_HEADER').toBe(0x0002);
    // The first segment of a new timeline starts with a copy of the old one's WAL (old TLI).
    const tli = buf.readUInt32LE(4);
    expect(tli, 'timeline').toBeGreaterThanOrEqual(1);
    expect(tli, 'timeline').toBeLessThanOrEqual(parseInt(name.slice(0, 8), 16));
    const perId = 0x1_0000_0000n / BigInt(g.walSegSizeBytes);
    const segno = BigInt(parseInt(name.slice(8, 16), 16)) * perId + BigInt(parseInt(name.slice(16, 24), 16));
    expect(buf.readBigUInt64LE(8), 'page address').toBe(segno * BigInt(g.walSegSizeBytes));
    expect(buf.readBigUInt64LE(24), 'system identifier').toBe(g.systemIdentifier);
    expect(buf.readUInt32LE(32), 'segment size').toBe(g.walSegSizeBytes);
    expect(buf.readUInt32LE(36), 'block size').toBe(8192);
  } finally {
    await fh.close();
  }
}

describe('postgres harness: clusters', () => {
  it('inits, starts and answers psql', async () => {
    const t0 = Date.now();
    const pg = await initPrimary({ name: 'basic' });
    const elapsed = Date.now() - t0;
    try {
      expect(elapsed).toBeLessThan(15_000);
      expect(await pg.psql('select 1 + 1')).toBe('2');
      expect(await pg.psql("select current_setting('server_version_num')::int / 10000")).toBe('15');
      // Several statements run one by one; every result is printed.
      expect(await pg.psql("create table t (a int, b text); insert into t values (1, 'x'), (2, 'y'); select * from t order by a")).toBe('1|x\n2|y');
      await expect(pg.psql('select * from no_such_table')).rejects.toThrow(/relation "no_such_table" does not exist/);
      expect(await pg.psql('show wal_level')).toBe('replica');
      expect(await pg.psql('show archive_mode')).toBe('on');
      expect(await pg.psql('show listen_addresses')).toBe('');
      expect(await pg.psql('show fsync')).toBe('off');
      expect(await pg.psql('show data_directory')).toBe(pg.dataDir);
      expect(await pg.psql('select pg_current_logfile() is null')).toBe('t');
      expect(await pg.isInRecovery()).toBe(false);
      expect(pg.walDir).toBe(join(pg.dataDir, 'pg_wal'));
      expect(existsSync(join(pg.socketDir, `.s.PGSQL.${pg.port}`))).toBe(true);
      expect(await pg.log()).toMatch(/database system is ready to accept connections/);
      expect(String(await pg.systemIdentifier())).toBe(await pg.psql('select system_identifier from pg_control_system()'));
      // Owned by the cluster user.
      const u = clusterUser();
      expect(statSync(pg.dataDir).uid).toBe(u.uid);
      expect(statSync(pg.socketDir).uid).toBe(u.uid);
      expect(await pg.pgbench(['-i', '-s', '1', '-q'])).toMatch(/done/);
      expect(await pg.psql('select count(*) from pgbench_accounts')).toBe('100000');
      // appendConf + reload
      await pg.appendConf({ archive_timeout: 7, 'walbridge.test_value': "it's \\ quoted" });
      await pg.reload();
      await pg.waitFor('show archive_timeout', '7s', 10_000);
      expect(await pg.psql('show walbridge.test_value')).toBe("it's \\ quoted");
    } finally {
      await pg.destroy();
    }
  });

  it('throws with the server log tail when start fails', async () => {
    const pg = await initPrimary({ name: 'badconf', start: false, conf: { shared_buffers: 'lots' } });
    try {
      const err = await pg.start().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect(err!.message).toMatch(/start failed/);
      expect(err!.message).toMatch(/server log tail/);
      expect(err!.message).toMatch(/invalid value for parameter "shared_buffers"/);
    } finally {
      await pg.destroy();
    }
  });

  it('listens on 127.0.0.1 only when asked (tcp: true)', async () => {
    const pg = await initPrimary({ name: 'tcp', tcp: true });
    try {
      expect(await pg.psql('show listen_addresses')).toBe('127.0.0.1');
      await new Promise<void>((resolve, reject) => {
        const s = connect(pg.port, '127.0.0.1', () => {
          s.end();
          resolve();
        });
        s.on('error', reject);
      });
    } finally {
      await pg.destroy();
    }
  });

  it('kill9 crashes the whole server; start() recovers', async () => {
    const pg = await initPrimary({ name: 'crash' });
    try {
      await pg.psql('create table t (a int); insert into t values (42)');
      const pid = pg.pid();
      expect(pid).toBeTypeOf('number');
      await pg.kill9();
      expect(pg.isRunning()).toBe(false);
      expect(pidAlive(pid!)).toBe(false);
      // No live process is left with its cwd in this data dir (backends, archiver, ...).
      const leftovers = readdirSync('/proc')
        .filter((e) => /^\d+$/.test(e))
        .filter((e) => {
          try {
            return readlinkSync(`/proc/${e}/cwd`) === pg.dataDir && pidAlive(Number(e));
          } catch {
            return false;
          }
        });
      expect(leftovers).toEqual([]);
      await pg.start();
      expect(await pg.psql('select a from t')).toBe('42');
      expect(await pg.log()).toMatch(/not properly shut down|interrupted/);
      await pg.stop();
      await pg.stop(); // idempotent
      expect(pg.isRunning()).toBe(false);
    } finally {
      await pg.destroy();
    }
  });

  it('destroy() stops the server and removes every file; it is idempotent', async () => {
    const pg = await initPrimary({ name: 'destroy' });
    const pid = pg.pid()!;
    expect(existsSync(pg.rootDir)).toBe(true);
    await pg.destroy();
    expect(existsSync(pg.rootDir)).toBe(false);
    expect(pidAlive(pid)).toBe(false);
    await pg.destroy();
    await expect(pg.start()).rejects.toThrow(/destroyed/);
  });
});

describe('postgres harness: environment of archive_command', () => {
  it('passes exactly the given env (plus PATH/HOME/LANG) to archive_command, run as the cluster user', async () => {
    const out = await makeSharedDir('envtest');
    process.env.WALBRIDGE_HARNESS_SHOULD_NOT_LEAK = 'leaked';
    let pg: PgCluster | undefined;
    try {
      const report =
        `node -e 'const fs = require("fs"); fs.writeFileSync(process.argv[1], JSON.stringify({` +
        ` MYVAR: process.env.MYVAR, leak: process.env.WALBRIDGE_HARNESS_SHOULD_NOT_LEAK ?? null,` +
        ` PATH: process.env.PATH, HOME: process.env.HOME, uid: process.getuid(),` +
        ` pkg: JSON.parse(fs.readFileSync(process.argv[2], "utf8")).name }))' '${out}/%f.json' '${REPO_ROOT}/package.json'`;
      pg = await initPrimary({
        name: 'env',
        env: { MYVAR: "hello 'quoted' $world" },
        archiveCommand: `echo "$MYVAR" > '${out}/%f.env' && ${report} && ${atomicCopy(out)}`,
      });
      const seg = await pg.psql('create table x (); select pg_walfile_name(pg_current_wal_insert_lsn())');
      await pg.psql('select pg_switch_wal()');
      await waitForFile(join(out, seg));
      expect(await readFile(join(out, `${seg}.env`), 'utf8')).toBe("hello 'quoted' $world\n");
      const seen = JSON.parse(await readFile(join(out, `${seg}.json`), 'utf8')) as Record<string, unknown>;
      expect(seen.MYVAR).toBe("hello 'quoted' $world");
      expect(seen.leak).toBeNull();
      expect(String(seen.PATH).split(':')[0]).toBe(join(REPO_ROOT, 'bin'));
      expect(seen.HOME).toBe(pg.rootDir);
      expect(seen.uid).toBe(clusterUser().uid);
      expect(seen.pkg).toBe('walbridge');
      expect((await stat(join(out, seg))).size).toBe(16 * 1024 * 1024);
      expect(pg.serverEnv().MYVAR).toBe("hello 'quoted' $world");
    } finally {
      delete process.env.WALBRIDGE_HARNESS_SHOULD_NOT_LEAK;
      await pg?.destroy();
      await removeSharedDir(out);
    }
    expect(existsSync(out)).toBe(false);
  });

  it('lets the cluster user run node scripts from the repo', async () => {
    const r = await runAsClusterUser('node', [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '--version']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Version \d+\./);
    const who = await runAsClusterUser('id', ['-u']);
    expect(who.stdout.trim()).toBe(String(clusterUser().uid));
  });
});

describe('postgres harness: generateWalSegments', () => {
  it('returns n real 16 MiB segments of one system, memoized', async () => {
    const t0 = Date.now();
    const g = await generateWalSegments(5);
    const first = Date.now() - t0;
    expect(g.segments).toHaveLength(5);
    expect(g.walSegSizeBytes).toBe(16 * 1024 * 1024);
    expect(g.historyFiles).toEqual([]);
    expect(g.partialFiles).toEqual([]);
    expect(g.segments.map((s) => s.slice(-24))).toEqual([1, 2, 3, 4, 5].map((s) => walFileName(1, BigInt(s), g.walSegSizeBytes)));
    for (const s of g.segments) {
      expect((await stat(s)).size).toBe(16 * 1024 * 1024);
      await checkSegmentHeader(s, g);
    }
    const t1 = Date.now();
    expect(await generateWalSegments(5)).toBe(g);
    expect(Date.now() - t1).toBeLessThan(50);
    expect(first).toBeLessThan(60_000);
  });

  it('the system identifier equals pg_control_system() of the server that wrote them', async () => {
    // A fresh server has a different one; the generator read its own with this query.
    const g = await generateWalSegments(5);
    const pg = await initPrimary({ name: 'sysid' });
    try {
      const mine = await pg.psql('select system_identifier from pg_control_system()');
      expect(mine).toMatch(/^\d+$/);
      expect(BigInt(mine)).not.toBe(g.systemIdentifier);
    } finally {
      await pg.destroy();
    }
  });

  it('supports 1 MiB segments and a timeline switch (.history, .partial)', async () => {
    const g = await generateWalSegments(6, { walSegSizeMb: 1, timelineSwitch: true });
    expect(g.segments).toHaveLength(6);
    expect(g.walSegSizeBytes).toBe(1024 * 1024);
    for (const s of g.segments) {
      expect((await stat(s)).size).toBe(1024 * 1024);
      await checkSegmentHeader(s, g);
    }
    const tlis = g.segments.map((s) => s.slice(-24, -16));
    expect(tlis).toContain('00000001');
    expect(tlis).toContain('00000002');
    expect(g.historyFiles.map((f) => f.slice(-16))).toEqual(['00000002.history']);
    expect(await readFile(g.historyFiles[0]!, 'utf8')).toMatch(/^1\t[0-9A-F]+\/[0-9A-F]+\t/);
    expect(g.partialFiles).toHaveLength(1);
    expect(g.partialFiles[0]).toMatch(/\/00000001[0-9A-F]{16}\.partial$/);
    expect(g.files).toEqual([...g.segments, ...g.historyFiles, ...g.partialFiles].sort());
  });

  it('supports 64 MiB segments', async () => {
    const g = await generateWalSegments(1, { walSegSizeMb: 64 });
    expect(g.segments).toHaveLength(1);
    expect((await stat(g.segments[0]!)).size).toBe(64 * 1024 * 1024);
    await checkSegmentHeader(g.segments[0]!, g);
  });
});

describe('postgres harness: standbys from base backups', () => {
  for (const wal of ['none', 'fetch'] as const) {
    it(`replays archived WAL with restore_command (pg_basebackup -X ${wal}), then promotes`, async () => {
      const archive = await makeSharedDir(`standby-${wal}`);
      const primary = await initPrimary({ name: `prim-${wal}`, archiveCommand: atomicCopy(archive) });
      let standby: PgCluster | undefined;
      try {
        await primary.psql('create table t (a int); insert into t values (1)');
        const endCommandMarker = join(archive, 'recovery-ended');
        standby = await baseBackup(primary, {
          name: `standby-${wal}`,
          wal,
          conf: { archive_command: '' },
          recovery: {
            restoreCommand: `cp '${archive}/%f' %p`,
            recoveryEndCommand: `touch '${endCommandMarker}'`,
          },
          start: true,
        });
        expect(await standby.isInRecovery()).toBe(true);
        expect(await standby.psql('show recovery_prefetch')).toBe('off');
        expect(await standby.psql('show recovery_target_timeline')).toBe('latest');
        expect(existsSync(join(standby.dataDir, 'standby.signal'))).toBe(true);
        expect(standby.port).not.toBe(primary.port);
        expect(await standby.psql('select count(*) from t')).toBe('1');

        await primary.psql('insert into t values (2); select pg_switch_wal()');
        await standby.waitFor('select count(*) from t', '2', 30_000);

        await standby.promote();
        expect(await standby.isInRecovery()).toBe(false);
        expect(await standby.psql('select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)')).toBe('00000002');
        expect(existsSync(endCommandMarker)).toBe(true);
        await standby.psql('insert into t values (3)');
        expect(await standby.psql('select count(*) from t')).toBe('3');
        expect(await primary.psql('select count(*) from t')).toBe('2');
      } finally {
        await standby?.destroy();
        await primary.destroy();
        await removeSharedDir(archive);
      }
    });
  }
});

describe('postgres harness: a standby waiting for WAL', () => {
  it('start({ wait: false }) returns while restore_command waits; the standby opens once WAL arrives; stop() ends the wait', async () => {
    const archive = await makeSharedDir('wait-archive');
    const later = await makeSharedDir('wait-later');
    const primary = await initPrimary({ name: 'wait-prim', archiveCommand: atomicCopy(archive) });
    let standby: PgCluster | undefined;
    try {
      await primary.psql('create table t (a int); insert into t values (1)');
      // Like archive-fetch: .history answers "not found" at once, segments are waited for.
      const waiting =
        `case %f in *.history) [ -f '${later}/%f' ] && exec cp '${later}/%f' %p; exit 1;; esac; ` +
        `while [ ! -f '${later}/%f' ]; do sleep 0.05; done; cp '${later}/%f' %p`;
      standby = await baseBackup(primary, {
        name: 'wait-standby',
        wal: 'none',
        conf: { archive_command: '' },
        recovery: { restoreCommand: waiting },
      });
      const t0 = Date.now();
      await standby.start({ wait: false });
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(standby.isRunning()).toBe(true);
      await expect(standby.psql('select 1', { timeoutMs: 5_000 })).rejects.toThrow(/not yet accepting connections|starting up/);

      for (const f of readdirSync(archive).filter((n) => !n.endsWith('.tmp'))) {
        await runAsClusterUser('sh', ['-c', `cp '${archive}/${f}' '${later}/${f}.tmp' && mv '${later}/${f}.tmp' '${later}/${f}'`]);
      }
      await standby.waitFor('select count(*) from t', '1', 30_000);
      expect(await standby.isInRecovery()).toBe(true);

      const t1 = Date.now();
      await standby.stop('fast'); // the restore_command is in its wait loop now
      expect(Date.now() - t1).toBeLessThan(15_000);
      expect(standby.isRunning()).toBe(false);
    } finally {
      await standby?.destroy();
      await primary.destroy();
      await removeSharedDir(archive);
      await removeSharedDir(later);
    }
  });
});

describe('postgres harness: cleanup when the test process dies', () => {
  it('stops servers and removes dirs after SIGKILL of the process that made them', async () => {
    const script = join(REPO_ROOT, 'test/servers/postgres.ts');
    const code =
      `import { initPrimary, makeSharedDir } from ${JSON.stringify(script)};\n` +
      `const pg = await initPrimary({ name: 'orphan' });\n` +
      `const d = await makeSharedDir('orphan');\n` +
      `console.log(JSON.stringify({ root: pg.rootDir, pid: pg.pid(), shared: d }));\n` +
      `setInterval(() => {}, 1000);\n`;
    const tmp = await scratchDir('walbridge-pg-orphan-test-');
    const file = join(tmp, 'orphan.ts');
    await writeFile(file, code);
    const child = spawn(join(REPO_ROOT, 'node_modules/.bin/vite-node'), [file], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const info = await new Promise<{ root: string; pid: number; shared: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child did not report: ${out} ${err}`)), 60_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) {
          clearTimeout(timer);
          resolve(JSON.parse(line) as { root: string; pid: number; shared: string });
        }
      });
      child.on('exit', (c) => reject(new Error(`child exited ${c}: ${out} ${err}`)));
    });
    expect(pidAlive(info.pid)).toBe(true);
    child.kill('SIGKILL');
    const deadline = Date.now() + 30_000;
    while (existsSync(info.root) || existsSync(info.shared) || pidAlive(info.pid)) {
      if (Date.now() > deadline) throw new Error(`leftovers after SIGKILL: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await rm(tmp, { recursive: true, force: true });
  });
});
