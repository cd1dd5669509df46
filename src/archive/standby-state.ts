/**
 * What a standby's fetches remember between calls, in `<data directory>/walbridge.state`:
 * the newest segment restored (so a fast trigger still serves segments PostgreSQL re-reads),
 * the last `%r` cleaned up to (so cleanup lists the repository only when `%r` moves), and the
 * triggers that were there when this recovery first looked (leftovers, see trigger.ts).
 * Losing the file is harmless: a fast trigger then serves less, cleanup lists once more, and
 * triggers present at the next look count as leftovers (ignored, and said so: never a promotion).
 */
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../errors.js';

export interface StandbyState {
  /** Log/segment part (16 hex digits) of the newest segment restored. */
  readonly restoredUpTo?: string;
  /** The `%r` of the last cleanup. */
  readonly cleanedUpTo?: string;
  /** The recovery (its signal file's identity) and the ids of the triggers present at its first look. */
  readonly recovery?: { readonly signal: string; readonly leftoverTriggers: readonly string[] };
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
  try {
    await writeFile(temp, JSON.stringify(state) + '\n', { mode: 0o600 });
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw new WalbridgeError('localIo', `cannot record this standby's state in ${target}: ${(err as Error).message}`);
  }
}
