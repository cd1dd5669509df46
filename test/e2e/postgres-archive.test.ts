/**
 * Real PostgreSQL (15, and 16-18 in their own runs: vitest.config.ts): a primary whose
 * archive_command is archive-push, and a standby built from a base backup with no WAL of its
 * own, fed only by archive-fetch through the repository.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { loadIdentity } from '../../src/archive/repo/identity.js';
import { PG_MAJOR, baseBackup, destroyAll, initPrimary } from '../servers/postgres.js';
import { BACKENDS, createRepo } from '../support/repos.js';

afterAll(destroyAll);

describe.each(BACKENDS)('PostgreSQL archiving through %s', (backend) => {
  it('archives every finished file and a standby replays them from the repository alone', async () => {
    const repo = await createRepo(backend);
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'pg-main', ...repo.env };
    const primary = await initPrimary({ name: `arch-${backend}`, env, archiveCommand: 'archive-push %p' });
    expect(Math.floor(Number(await primary.psql('show server_version_num')) / 10000)).toBe(PG_MAJOR);
    await primary.psql('create table t (id int primary key, note text); insert into t select g, md5(g::text) from generate_series(1, 1000) g');
    await primary.psql('select pg_switch_wal()');
    await primary.waitFor('select archived_count > 0 and failed_count = 0 from pg_stat_archiver', 't', 30_000);

    // -X none: the standby must get even the backup's own WAL from the repository.
    const standby = await baseBackup(primary, {
      name: `std-${backend}`,
      wal: 'none',
      recovery: { restoreCommand: 'archive-fetch %f %p %r', signal: 'standby' },
      conf: { wal_retrieve_retry_interval: '200ms', recovery_prefetch: 'off' },
      start: { wait: false },
    });
    await standby.waitFor('select count(*) from t', '1000', 60_000);

    await primary.psql("insert into t values (1001, 'after the backup'); select pg_switch_wal()");
    await standby.waitFor('select note from t where id = 1001', 'after the backup', 30_000);

    const stats = await primary.psql('select failed_count from pg_stat_archiver');
    expect(stats).toBe('0');
    const log = await primary.log();
    expect(log).toMatch(/archive-push: archived 0000000100000000000000\w\w/);
    expect(log).toMatch(/\.backup/);
    expect(await standby.log()).toMatch(/archive-fetch: restored/);
    // The namespace knows the cluster's major from its WAL page magic.
    expect((await loadIdentity(repo.store(), 'pg-main'))?.pgVersion).toBe(String(PG_MAJOR));
    await standby.destroy();
    await primary.destroy();
    await repo.cleanup();
  });
});
