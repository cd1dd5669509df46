/**
 * The failover lifecycle after a promotion (issue 15), with real PostgreSQL 15 and S3: a primary
 * and two waiting standbys; one standby is promoted. The other one, waiting on timeline 1, stops
 * (exit 200, never a promotion) and, started again, follows timeline 2. The old primary started
 * again as a primary must not grow a dead branch of timeline 1 in the archive: its archive-push
 * and `walbridge stream` refuse WAL past the fork (exit 16), nothing of it is stored, and
 * `walbridge verify` reports such WAL where another tool stored it. Then the old primary rejoins:
 * pg_rewind --restore-target-wal against the running new primary, and it follows timeline 2.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sealBuffer } from '../../src/codec/envelope.js';
import { PG_SUPERUSER, baseBackup, clusterEnv, destroyAll, initPrimary, runAsClusterUser } from '../servers/postgres.js';
import { archiveEverything } from '../support/archiving.js';
import { createRepo } from '../support/repos.js';
import { startStream, stopAllStreamers } from '../support/streamer.js';

afterAll(async () => {
  await stopAllStreamers();
  await destroyAll();
});

const RESTORE = 'archive-fetch %f %p %r';

describe('after a failover: the other standby, the old primary', () => {
  it(
    'the other standby follows timeline 2 after a restart; the old primary is refused past the fork (exit 16) by archive-push and stream, nothing stored; verify reports a stored dead branch; pg_rewind rejoins it as a standby',
    { timeout: 240_000 },
    async () => {
      const repo = await createRepo('s3');
      const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'fence', ...repo.env };
      const walbridge = (args: string[]) => runAsClusterUser('walbridge', args, { env: clusterEnv(env) });
      // wal_log_hints: pg_rewind needs it (or data checksums) on the server it rewinds.
      const primary = await initPrimary({ name: 'fence-primary', env, archiveCommand: 'archive-push %p', conf: { wal_log_hints: 'on' } });
      await primary.psql('create table marks (id serial primary key, note text)');
      await archiveEverything(primary);
      const s1 = await baseBackup(primary, {
        name: 'fence-s1',
        env: { WALBRIDGE_STANDBY: 's1' },
        recovery: { restoreCommand: RESTORE, signal: 'recovery', recoveryEndCommand: 'walbridge trigger clear --standby s1' },
        start: { wait: false },
      });
      const s2 = await baseBackup(primary, {
        name: 'fence-s2',
        env: { WALBRIDGE_STANDBY: 's2' },
        recovery: { restoreCommand: RESTORE, signal: 'recovery' },
        conf: { archive_command: '' },
        start: { wait: false },
      });
      await primary.psql("insert into marks (note) values ('before the failover')");
      await archiveEverything(primary);
      for (const s of [s1, s2]) await s.waitFor('select count(*) from marks', '1', 60_000);

      // The primary stops; s1 is promoted (zero loss) and archives timeline 2's history.
      await primary.stop('fast');
      const triggered = Date.now();
      expect((await walbridge(['trigger', 'smart', '--standby', 's1'])).code).toBe(0);
      await s1.waitFor('select pg_is_in_recovery()', 'f', 60_000, { intervalMs: 100 });
      for (let i = 0; !(await repo.store().head('fence/history/00000002.history')); i++) {
        expect(i, '00000002.history archived').toBeLessThan(300);
        await new Promise((r) => setTimeout(r, 100));
      }

      // The other standby waited on timeline 1, which ended before the segment it waits for: it
      // stops (exit 200, never a promotion), and started again (as systemd's Restart=on-failure
      // would) it follows timeline 2.
      for (let i = 0; s2.isRunning(); i++) {
        expect(i, 's2 stopped after the promotion').toBeLessThan(300);
        await new Promise((r) => setTimeout(r, 100));
      }
      const stoppedAfter = (Date.now() - triggered) / 1000;
      const s2log = await s2.log();
      expect(s2log).toMatch(
        /timeline 2 was promoted from timeline 1 at [0-9A-F]+\/[0-9A-F]+ \(00000002\.history\), so 00000001[0-9A-F]{16} will never be archived\. Under recovery\.signal .*exiting 200/,
      );
      expect(s2log).not.toMatch(/selected new timeline ID|archive recovery complete/);
      await s2.start({ wait: false });
      await s1.psql("insert into marks (note) values ('first on timeline 2')");
      await archiveEverything(s1);
      await s2.waitFor("select count(*) from marks where note = 'first on timeline 2'", '1', 60_000, { intervalMs: 100 });
      const followedAfter = (Date.now() - triggered) / 1000;
      expect(await s2.isInRecovery()).toBe(true);

      // The old primary comes back as a primary and writes: its next segment is refused.
      const revived = Date.now();
      await primary.start();
      const dead = await primary.psql('select pg_walfile_name(pg_current_wal_lsn())');
      expect(dead.slice(0, 8)).toBe('00000001');
      await primary.psql("insert into marks (note) values ('dead branch'); select pg_switch_wal()");
      await primary.waitFor('select last_failed_wal from pg_stat_archiver', dead, 60_000, { intervalMs: 100 });
      const refusedAfter = (Date.now() - revived) / 1000;
      const log = await primary.log();
      expect(log).toMatch(
        new RegExp(
          `archive-push: ERROR: refusing ${dead}: timeline 1 ended at [0-9A-F]+/[0-9A-F]+ when timeline 2 was promoted from it \\(00000002\\.history in namespace "fence"\\)`,
        ),
      );
      expect(log).toMatch(/archive command failed with exit code 16/);
      expect(await repo.store().head(`fence/wal/${dead}`)).toBeUndefined();

      // walbridge stream beside it refuses too, and exits.
      const streamer = startStream(primary, env, 0.2);
      const streamed = await streamer.exited;
      expect(streamed.code, streamed.stderr).toBe(16);
      expect(streamed.stderr).toMatch(/refusing to stream 00000001[0-9A-F]{16} up to [0-9A-F]+\/[0-9A-F]+: timeline 1 ended at/);
      const chunks: string[] = [];
      for await (const o of repo.store().list('fence/stream/')) chunks.push(o.key);
      const segmentOf = (key: string) => key.slice('fence/stream/'.length).split('/')[0]!;
      expect(chunks.filter((k) => segmentOf(k).startsWith('00000001') && segmentOf(k) >= dead)).toEqual([]);

      // The other standby never saw the dead branch.
      expect(await s2.isInRecovery()).toBe(true);
      expect(await s2.psql("select count(*) from marks where note = 'dead branch'")).toBe('0');

      // Nothing dead is stored: verify finds no dead branch. Stored by another tool, it is reported.
      expect((await walbridge(['verify'])).stdout).not.toMatch(/past its end/);
      const bytes = await readFile(path.join(primary.walDir, dead));
      await repo.store().putIfAbsent(`fence/wal/${dead}`, sealBuffer(bytes));
      const verify = await walbridge(['verify']);
      expect(verify.code).toBe(14);
      expect(verify.stdout + verify.stderr).toMatch(
        new RegExp(
          `timeline 1: 1 segment stored past its end at [0-9A-F]+/[0-9A-F]+, where timeline 2 branched off \\(00000002\\.history\\): ${dead}, WAL of an old primary`,
        ),
      );

      // Rejoin: the old primary is stopped, rewound against the new primary (running, with its
      // own walbridge processes) and follows it as a standby. The old WAL it recycled long ago is
      // fetched by pg_rewind --restore-target-wal through archive-fetch (without %r: pg_rewind
      // refuses a restore_command that has it).
      await primary.stop('fast');
      const recycled: string[] = [];
      for (const name of await readdir(primary.walDir)) {
        if (/^00000001[0-9A-F]{16}$/.test(name) && name < dead && (await repo.store().head(`fence/wal/${name}`))) {
          await rm(path.join(primary.walDir, name));
          recycled.push(name);
        }
      }
      expect(recycled.length).toBeGreaterThan(0);
      await primary.appendConf({ restore_command: 'archive-fetch %f %p' });
      const rewindStarted = Date.now();
      const rewind = await runAsClusterUser(
        'pg_rewind',
        [
          '--target-pgdata',
          primary.dataDir,
          '--source-server',
          `host=${s1.socketDir} port=${s1.port} user=${PG_SUPERUSER} dbname=postgres`,
          '--restore-target-wal',
        ],
        { env: clusterEnv(env), timeoutMs: 120_000 },
      );
      const rewoundIn = (Date.now() - rewindStarted) / 1000;
      expect(rewind.code, rewind.stderr + rewind.stdout).toBe(0);
      expect(rewind.stderr + rewind.stdout).toMatch(/Done!/);
      expect(rewind.stderr + rewind.stdout).toMatch(/archive-fetch: .*00000001[0-9A-F]{16}.*asked by pg_rewind: answering at once|asked by pg_rewind/);
      expect(rewind.stderr + rewind.stdout).toMatch(/archive-fetch: (restored|fetched) 00000001[0-9A-F]{16}/);
      // pg_rewind copied the new primary's configuration: this server keeps its own address.
      await primary.appendConf({ port: primary.port, unix_socket_directories: primary.socketDir, listen_addresses: '' });
      await primary.configureRecovery({ restoreCommand: RESTORE, signal: 'standby' });
      await primary.start({ wait: false });
      await s1.psql("insert into marks (note) values ('on timeline 2, after the rejoin')");
      await archiveEverything(s1);
      await primary.waitFor("select count(*) from marks where note = 'on timeline 2, after the rejoin'", '1', 60_000);
      expect(await primary.log()).toMatch(/restored log file "00000002[0-9A-F]{16}" from archive/);
      expect(await primary.psql("select count(*) from marks where note = 'dead branch'")).toBe('0');
      console.log(
        `following: the other standby stopped ${stoppedAfter.toFixed(1)} s after the trigger, started again it replayed the new primary's first row ${followedAfter.toFixed(1)} s after the trigger; ` +
          `fencing: the revived old primary's ${dead} refused (exit 16) ${refusedAfter.toFixed(1)} s after its start; stream refused with exit 16; ` +
          `pg_rewind --restore-target-wal (${recycled.length} segments from the archive) done in ${rewoundIn.toFixed(1)} s; the old primary follows timeline 2`,
      );
    },
  );
});
