/**
 * The system identifier from a data directory's pg_control (ControlFileData starts with it,
 * a uint64). Used to tie `.history` and `.backup` files, which carry no WAL header, to a cluster.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';

/** The data directory of a file PostgreSQL hands to archive_command (`pg_wal/<name>`), if it is one. */
export function dataDirOfWalPath(walPath: string): string | undefined {
  const walDir = path.dirname(path.resolve(walPath));
  return path.basename(walDir) === 'pg_wal' ? path.dirname(walDir) : undefined;
}

/** Reads the system identifier, or undefined when there is no readable pg_control. */
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
