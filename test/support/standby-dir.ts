/** A directory shaped like a standby's data directory, for restore_command tests without a server. */
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { scratchDir } from './scratch.js';

export interface FakeDataDir {
  readonly dir: string;
  /** Where PostgreSQL asks restore_command to write: pg_wal/RECOVERYXLOG. */
  readonly destination: string;
}

/** A data directory with pg_wal/ and a signal file written at `since` (default: now). */
export async function fakeDataDir(signal: 'recovery' | 'standby' | 'none', since?: Date): Promise<FakeDataDir> {
  const dir = await scratchDir('wb-pgdata-');
  await mkdir(path.join(dir, 'pg_wal'));
  if (signal !== 'none') {
    const file = path.join(dir, `${signal}.signal`);
    await writeFile(file, '');
    if (since) await utimes(file, since, since);
  }
  return { dir, destination: path.join(dir, 'pg_wal', 'RECOVERYXLOG') };
}
