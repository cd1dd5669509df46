/** Driving a real primary's archiving (test/servers/postgres.ts) to a known point. */
import type { PgCluster } from '../servers/postgres.js';

/** Switches to a new segment and waits until the one that held our writes is archived; returns its name. */
export async function archiveEverything(pg: PgCluster, timeoutMs = 30_000): Promise<string> {
  const current = await pg.psql('select pg_walfile_name(pg_current_wal_lsn())');
  await pg.psql('select pg_switch_wal()');
  await pg.waitFor('select last_archived_wal from pg_stat_archiver', (out) => out.slice(8) >= current.slice(8) && out !== '', timeoutMs);
  return current;
}
