/**
 * What `walbridge check` asks a running PostgreSQL server: primary or standby, which cluster, where
 * its data directory is, and how it calls walbridge; and, on a primary, a forced segment switch.
 * node-postgres (`pg`), loaded only by that command.
 */
import pg from 'pg';
import { WalbridgeError } from '../errors.js';

export interface ServerFacts {
  readonly inRecovery: boolean;
  readonly systemIdentifier: string;
  readonly dataDirectory: string;
  readonly archiveMode: string;
  readonly archiveCommand: string;
  readonly restoreCommand: string;
  readonly recoveryEndCommand: string;
}

export interface ServerConnection {
  readonly facts: ServerFacts;
  /**
   * Writes a restore point and switches to a new segment (as `pgbackrest check` does): the name of
   * the segment that then waits for archive_command. Needs pg_create_restore_point and pg_switch_wal.
   */
  switchSegment(): Promise<string>;
  /** pg_stat_archiver's last failure, if there was one. */
  lastArchiveFailure(): Promise<{ readonly wal: string; readonly at: string } | undefined>;
  close(): Promise<void>;
}

/** Connects as libpq would (PG* variables, or `conninfo`). Authentication and privilege failures are 'config'. */
export async function connectServer(conninfo: string | undefined, timeoutMs: number): Promise<ServerConnection> {
  const client = new pg.Client({
    connectionString: conninfo,
    application_name: 'walbridge check',
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<Record<string, string | boolean>>(
      'select pg_is_in_recovery() as recovery, system_identifier::text as sysid, ' +
        "current_setting('data_directory') as datadir, current_setting('archive_mode') as archive_mode, " +
        "current_setting('archive_command') as archive_command, current_setting('restore_command') as restore_command, " +
        "current_setting('recovery_end_command') as recovery_end_command from pg_control_system()",
    );
    const row = rows[0]!;
    const facts: ServerFacts = {
      inRecovery: row['recovery'] === true,
      systemIdentifier: String(row['sysid']),
      dataDirectory: String(row['datadir']),
      archiveMode: String(row['archive_mode']),
      archiveCommand: String(row['archive_command']),
      restoreCommand: String(row['restore_command']),
      recoveryEndCommand: String(row['recovery_end_command']),
    };
    return {
      facts,
      switchSegment: async () => {
        const point = await client.query<{ file: string }>("select pg_walfile_name(pg_create_restore_point('walbridge check')) as file");
        await client.query('select pg_switch_wal()');
        return point.rows[0]!.file;
      },
      lastArchiveFailure: async () => {
        const { rows: failed } = await client.query<{ wal: string | null; at: string | null }>(
          'select last_failed_wal as wal, last_failed_time::text as at from pg_stat_archiver',
        );
        const row = failed[0];
        return row?.wal && row.at ? { wal: row.wal, at: row.at } : undefined;
      },
      close: () => client.end().catch(() => undefined),
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    const code = (err as { code?: string }).code;
    // 28xxx: authentication; 3D000: no such database; 42501: privileges (data_directory needs pg_read_all_settings).
    if (code && (code.startsWith('28') || code === '3D000' || code === '42501')) {
      throw new WalbridgeError(
        'config',
        `cannot use the server: ${(err as Error).message} (check --conninfo / PG* variables, ~/.pgpass, and that the role may read data_directory)`,
      );
    }
    throw new WalbridgeError('config', `cannot connect to the server: ${(err as Error).message} (check --conninfo / PG* variables)`, { cause: err });
  }
}
