/**
 * What walbridge reads from a PostgreSQL data directory: the system identifier in pg_control,
 * the recovery signal files, and pg_ctl's promote request. archive_command and restore_command
 * run with the data directory as working directory and get paths under pg_wal/, which is how
 * the data directory is found.
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';

/** The data directory of a path PostgreSQL hands to archive/restore commands (`pg_wal/<name>`), if it is one. */
export function dataDirOfWalPath(walPath: string): string | undefined {
  const walDir = path.dirname(path.resolve(walPath));
  return path.basename(walDir) === 'pg_wal' ? path.dirname(walDir) : undefined;
}

/** Reads the system identifier (ControlFileData starts with it), or undefined without a readable pg_control. */
export async function readControlSystemIdentifier(dataDir: string): Promise<string | undefined> {
  try {
    const fh = await open(path.join(dataDir, 'global', 'pg_control'), 'r');
    try {
      const buf = Buffer.alloc(8);
      const { bytesRead } = await fh.read(buf, 0, 8, 0);
      return bytesRead === 8 ? buf.readBigUInt64LE(0).toString() : undefined;
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

export interface RecoverySignal {
  /** standby.signal: PostgreSQL keeps retrying; recovery.signal: "not available" ends recovery. */
  readonly mode: 'standby' | 'recovery';
  /**
   * Names this signal file among all that were ever written here (its inode and modification
   * time): a new recovery (a new standby, or this one set up again) writes a new one. Not the
   * device (an NFS remount or a reboot may renumber it) nor the change time (a chown touches it).
   * Only ever compared for equality, on this host: no clock is compared with another's.
   */
  readonly identity: string;
}

/** The signal file that put the server into recovery (standby.signal wins, as in PostgreSQL). */
export async function readRecoverySignal(dataDir: string): Promise<RecoverySignal | undefined> {
  for (const mode of ['standby', 'recovery'] as const) {
    try {
      const info = await stat(path.join(dataDir, `${mode}.signal`));
      return { mode, identity: `${mode}:${info.ino}:${info.mtimeMs}` };
    } catch {
      // not this one
    }
  }
  return undefined;
}

/** True once `pg_ctl promote` asked the server to end recovery. */
export async function promoteRequested(dataDir: string): Promise<boolean> {
  try {
    await stat(path.join(dataDir, 'promote'));
    return true;
  } catch {
    return false;
  }
}
