/**
 * What a standby's fetches remember between calls, in `<data directory>/walbridge.state`:
 * the newest segment restored (so a fast trigger still serves segments PostgreSQL re-reads)
 * and the last `%r` cleaned up to (so cleanup lists the repository only when `%r` moves).
 * Losing the file is harmless: a fast trigger then serves less, and cleanup lists once more.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface StandbyState {
  /** Log/segment part (16 hex digits) of the newest segment restored. */
  readonly restoredUpTo?: string;
  /** The `%r` of the last cleanup. */
  readonly cleanedUpTo?: string;
}

const FILE = 'walbridge.state';

export async function readStandbyState(dataDir: string): Promise<StandbyState> {
  try {
    const value = JSON.parse(await readFile(path.join(dataDir, FILE), 'utf8')) as StandbyState;
    return typeof value === 'object' && value !== null ? value : {};
  } catch {
    return {};
  }
}

export async function writeStandbyState(dataDir: string, state: StandbyState): Promise<void> {
  const target = path.join(dataDir, FILE);
  const temp = `${target}.${process.pid}`;
  await writeFile(temp, JSON.stringify(state) + '\n', { mode: 0o600 });
  await rename(temp, target);
}
