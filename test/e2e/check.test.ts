/**
 * `walbridge check` against real servers: a correct primary (S3) and standby pass; an
 * archive_command pointing at another namespace, a namespace of another cluster, a missing
 * permission (a file:// repository whose wal/ the server's user may not write) and a store that
 * ignores conditional create (the GCS test server, told to) each fail, named in the output.
 */
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseBackup, destroyAll, initPrimary, runAsClusterUser, type PgCluster } from '../servers/postgres.js';
import { startGcsServer } from '../servers/gcs/server.js';
import { createRepo } from '../support/repos.js';

afterAll(destroyAll);

/** `walbridge check` as the server's OS user, with its environment and a connection to it. */
async function check(pg: PgCluster, env: Record<string, string> = {}, args: string[] = []) {
  const r = await runAsClusterUser('walbridge', ['check', ...args], { env: { ...pg.serverEnv(), ...pg.connectionEnv(), ...env } });
  return { status: r.code, stdout: r.stdout, stderr: r.stderr };
}

async function archived(pg: PgCluster): Promise<void> {
  await pg.psql('select pg_switch_wal()');
  await pg.waitFor('select archived_count > 0 and failed_count = 0 from pg_stat_archiver', 't', 30_000);
}

describe('walbridge check', () => {
  it('passes on a correct primary and standby (S3), and names an archive_command that archives elsewhere and a namespace of another cluster', async () => {
    const repo = await createRepo('s3');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'chk', ...repo.env };
    const primary = await initPrimary({ name: 'chk-primary', env, archiveCommand: 'archive-push %p' });
    await primary.psql('create table t (id int); insert into t select generate_series(1, 100)');
    await archived(primary);

    const good = await check(primary);
    expect(good.stdout).toMatch(/^ok +store: .* is reachable$/m);
    expect(good.stdout).toMatch(/^ok +store: create-if-absent is honoured/m);
    expect(good.stdout).toMatch(/^ok +store: uploads are checked/m);
    expect(good.stdout).toMatch(/^ok +archive_command: archive_command calls archive-push with this repository and namespace$/m);
    expect(good.stdout).toMatch(/^ok +archiving: 0000000100000000000000\w\w archived .* after pg_switch_wal\(\), read back and verified$/m);
    expect(good.stdout).toMatch(/^all checks passed/m);
    expect(good.status, good.stdout + good.stderr).toBe(0);
    const json = JSON.parse((await check(primary, {}, ['--json'])).stdout) as { ok: boolean; findings: { verdict: string }[] };
    expect(json.ok).toBe(true);
    expect(json.findings.filter((f) => f.verdict === 'fail')).toEqual([]);

    const standby = await baseBackup(primary, {
      name: 'chk-standby',
      wal: 'none',
      recovery: { restoreCommand: 'archive-fetch %f %p %r', signal: 'recovery' },
      conf: { wal_retrieve_retry_interval: '200ms' },
      start: { wait: false },
    });
    await standby.waitFor('select count(*) from t', '100', 60_000);
    const standbyCheck = await check(standby);
    expect(standbyCheck.stdout).toMatch(/^ok +server: a standby/m);
    expect(standbyCheck.stdout).toMatch(/^ok +restore_command: recovery\.signal with a waiting archive-fetch$/m);
    expect(standbyCheck.stdout).toMatch(/^ok +restore: the newest archived segment, 0000000100000000000000\w\w, reads back and verifies$/m);
    expect(standbyCheck.stdout).toMatch(/^ok +triggers: no trigger concerns this standby$/m);
    expect(standbyCheck.status, standbyCheck.stdout + standbyCheck.stderr).toBe(0);

    // archive_command pointing at another namespace.
    await primary.psql("alter system set archive_command = 'archive-push --namespace chk-elsewhere %p'; select pg_reload_conf()");
    const elsewhere = await check(primary);
    expect(elsewhere.stdout).toMatch(/^FAIL +archive_command: archive_command reaches .*, namespace "chk-elsewhere", not .*, namespace "chk"$/m);
    expect(elsewhere.stdout).toMatch(/^\d+ checks? failed$/m);
    expect(elsewhere.status).toBe(14);
    // Through another program: its settings are not resolved, the segment switch shows where archiving lands.
    await primary.psql("alter system set archive_command = 'nice -n 5 archive-push %p'; select pg_reload_conf()");
    const wrapped = await check(primary);
    expect(wrapped.stdout).toMatch(
      /^WARN +archive_command: archive_command runs archive-push through nice: its repository and namespace are not resolved here/m,
    );
    expect(wrapped.stdout).toMatch(/^ok +archiving: 0000000100000000000000\w\w archived .* after pg_switch_wal\(\), read back and verified$/m);
    expect(wrapped.status, wrapped.stdout).toBe(0);
    // A command line check cannot read (a list, a variable) is named, never quoted: it may hold a secret.
    await primary.psql("alter system set archive_command = 'AWS_SECRET_ACCESS_KEY=check-never-prints-this archive-push %p || false'; select pg_reload_conf()");
    const unreadable = await check(primary);
    expect(unreadable.stdout).toMatch(/^FAIL +archive_command: archive_command does not call archive-push: it is empty or more than one simple command/m);
    expect(unreadable.stdout + unreadable.stderr).not.toContain('check-never-prints-this');
    expect(unreadable.status).toBe(14);
    await primary.psql('alter system reset archive_command; select pg_reload_conf()');

    // The namespace of another cluster.
    const other = await initPrimary({ name: 'chk-other', env: { ...env, WALBRIDGE_NAMESPACE: 'chk-other' }, archiveCommand: 'archive-push %p' });
    await archived(other);
    const foreign = await check(primary, { WALBRIDGE_NAMESPACE: 'chk-other' });
    expect(foreign.stdout).toMatch(/^FAIL +server: namespace "chk-other" holds cluster \d+, this server is cluster \d+: set the namespace of this cluster$/m);
    expect(foreign.status).toBe(14);

    await Promise.all([standby.destroy(), other.destroy()]);
    await primary.destroy();
    await repo.cleanup();
  });

  it("names a permission the server's user lacks (file://: wal/ not writable) on a primary and on a standby that deletes", async () => {
    const repo = await createRepo('file');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'chk-perm', ...repo.env };
    const primary = await initPrimary({ name: 'chk-perm', env, archiveCommand: 'archive-push %p' });
    await primary.psql('create table t (id int); insert into t values (1)');
    await archived(primary);
    // standby.signal with a waiting archive-fetch (PostgreSQL polls there by itself: a warning), deleting with --cleanup.
    const standby = await baseBackup(primary, {
      name: 'chk-perm-standby',
      wal: 'none',
      recovery: { restoreCommand: 'archive-fetch --cleanup %f %p %r', signal: 'standby' },
      conf: { wal_retrieve_retry_interval: '200ms' },
      start: { wait: false },
    });
    await standby.waitFor('select count(*) from t', '1', 60_000);
    const wal = path.join(new URL(repo.url).pathname, 'chk-perm', 'wal');
    await chmod(wal, 0o555);
    try {
      const r = await check(primary, { WALBRIDGE_TIMEOUT: '5' });
      expect(r.stdout).toMatch(
        /^FAIL +archiving: 0000000100000000000000\w\w was not archived within 5 s of pg_switch_wal\(\): pushed from here as archive_command would, it fails: .*chk-perm\/wal\/.*permission denied.* \(pg_stat_archiver: (last failed 0000000100000000000000\w\w at .*|records no failure)\)$/m,
      );
      expect(r.status).toBe(14);
      const s = await check(standby);
      expect(s.stdout).toMatch(/^WARN +restore_command: standby\.signal with a waiting archive-fetch: PostgreSQL polls by itself there; use --no-wait/m);
      // A delete of a key that is not there answers by permission, as S3 and GCS do.
      expect(s.stdout).toMatch(/^FAIL +store: may not delete objects under chk-perm\/wal\/ \(.*\), which archive-fetch --cleanup needs: /m);
      expect(s.status).toBe(14);
    } finally {
      await chmod(wal, 0o777);
    }
    await standby.destroy();
    await primary.destroy();
    await repo.cleanup();
  });

  it('names a store that ignores conditional create and one that does not check uploads (the GCS test server, told to), and leaves nothing behind', async () => {
    const gcs = await startGcsServer({ ignorePreconditions: true, ignoreHashes: true });
    try {
      gcs.createBucket('ignoring');
      const env = { WALBRIDGE_REPO: 'gs://ignoring/wal', WALBRIDGE_NAMESPACE: 'chk-gcs', STORAGE_EMULATOR_HOST: gcs.url };
      const primary = await initPrimary({ name: 'chk-gcs', env, archiveCommand: 'archive-push %p' });
      await archived(primary);
      const before = [...gcs.objects('ignoring').keys()].sort();
      const r = await check(primary);
      expect(r.stdout).toMatch(/^FAIL +store: the store replaced chk-gcs\/identity\.json although it exists: it ignores If-None-Match \/ ifGenerationMatch/m);
      expect(r.stdout).toMatch(
        /^FAIL +store: the store stored an upload whose Content-MD5 does not match its body: it does not check what it receives \(it was removed\)$/m,
      );
      expect(r.status).toBe(14);
      // The probe went under chk-gcs/check/ and was removed: the namespace holds what archiving wrote, and verifies.
      const after = [...gcs.objects('ignoring').keys()].sort();
      expect(after.filter((k) => !before.includes(k)).every((k) => k.startsWith('wal/chk-gcs/wal/'))).toBe(true);
      const verify = await runAsClusterUser('walbridge', ['verify'], { env: { ...primary.serverEnv(), ...env } });
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      await primary.destroy();
    } finally {
      await gcs.close();
    }
  });
});
