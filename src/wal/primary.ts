/**
 * A connection to the primary for `walbridge stream`: which cluster it is, its segment size,
 * and where its WAL is flushed to. node-postgres (`pg`), loaded only by that command.
 */
import pg from 'pg';
import { WalbridgeError } from '../errors.js';

export interface PrimaryInfo {
  readonly systemIdentifier: string;
  readonly segmentSize: number;
  /** When its postmaster started (epoch seconds) and its port, as postmaster.pid records them: which server this is. */
  readonly startedAt: number;
  readonly port: number;
}

/** The flush position, or 'in-recovery' while the server is a standby (nothing to ship). */
export type FlushReading = { readonly timeline: number; readonly lsn: bigint } | 'in-recovery';

export interface PrimaryConnection {
  readonly info: PrimaryInfo;
  flushPosition(): Promise<FlushReading>;
  close(): Promise<void>;
}

/** `X/Y` (pg_lsn as text) as a 64-bit position. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!match) throw new Error(`not an LSN: ${JSON.stringify(text)}`);
  return (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`);
}

export async function connectPrimary(conninfo: string | undefined, timeoutMs: number): Promise<PrimaryConnection> {
  const client = new pg.Client({
    connectionString: conninfo,
    application_name: 'walbridge stream',
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  // A server that goes away emits 'error' on an idle client: the next query fails and reconnects.
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ sysid: string; segsize: string; started: string; port: string }>(
      "select system_identifier::text as sysid, (select setting from pg_settings where name = 'wal_segment_size') as segsize, " +
        "floor(extract(epoch from pg_postmaster_start_time()))::bigint::text as started, current_setting('port') as port from pg_control_system()",
    );
    const info = { systemIdentifier: rows[0]!.sysid, segmentSize: Number(rows[0]!.segsize), startedAt: Number(rows[0]!.started), port: Number(rows[0]!.port) };
    return {
      info,
      flushPosition: async () => {
        const result = await client.query<{ recovery: boolean; lsn: string | null; file: string | null }>(
          'select pg_is_in_recovery() as recovery, case when not pg_is_in_recovery() then pg_current_wal_flush_lsn()::text end as lsn, ' +
            'case when not pg_is_in_recovery() then pg_walfile_name(pg_current_wal_flush_lsn()) end as file',
        );
        const row = result.rows[0]!;
        if (row.recovery || !row.lsn || !row.file) return 'in-recovery';
        return { timeline: parseInt(row.file.slice(0, 8), 16), lsn: parseLsn(row.lsn) };
      },
      close: () => client.end().catch(() => undefined),
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    const code = (err as { code?: string }).code;
    // 28xxx: authentication; 3D000: no such database; 42501: privileges.
    if (code && (code.startsWith('28') || code === '3D000' || code === '42501')) {
      throw new WalbridgeError('config', `cannot use the primary: ${(err as Error).message} (check --conninfo / PG* variables, and ~/.pgpass)`);
    }
    throw err;
  }
}
