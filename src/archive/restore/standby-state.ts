/**
 * What a standby's fetches remember between calls, in `<data directory>/walbridge.state`:
 * the newest segment restored (so a fast trigger still serves segments PostgreSQL re-reads),
 * the last `%r` cleaned up to (so cleanup lists the repository only when `%r` moves), and the
 * triggers that were there when this recovery first looked (leftovers, see repo/trigger.ts).
 * Losing the file is harmless: a fast trigger then serves less, cleanup lists once more, and
 * triggers present at the next look count as leftovers (ignored, and said so: never a promotion).
 */
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../../errors.js';

export interface StandbyState {
  /** Log/segment part (16 hex digits) of the newest segment restored. */
  readonly restoredUpTo?: string;
  /** The `%r` of the last cleanup. */
  readonly cleanedUpTo?: string;
  /** The recovery (its signal file's identity) and the ids of the triggers present at its first look. */
  readonly recovery?: { readonly signal: string; readonly leftoverTriggers: readonly string[] };
}

const FILE = 'walbridge.state';

/**
 * The state, {} when there is none yet. A file that cannot be read is a local failure (held like
 * any): taken for empty, it would make a pending trigger count as a leftover.
 */
export async function readStandbyState(dataDir: string): Promise<StandbyState> {
  const file = path.join(dataDir, FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new WalbridgeError('localIo', `cannot read this standby's state in ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const value = JSON.parse(text) as StandbyState;
    return typeof value === 'object' && value !== null ? value : {};
  } catch {
    return {}; // not walbridge's writing (it replaces the file whole): start afresh
  }
}

/** Records that `position` (log/segment, 16 hex digits) was restored, if it is the newest. */
export async function recordRestored(dataDir: string, position: string): Promise<void> {
  const state = await readStandbyState(dataDir);
  if (state.restoredUpTo !== undefined && position <= state.restoredUpTo) return;
  await writeStandbyState(dataDir, { ...state, restoredUpTo: position });
}

let writes = 0;

export async function writeStandbyState(dataDir: string, state: StandbyState): Promise<void> {
  const target = path.join(dataDir, FILE);
  // One temp file per write: the fetcher's look for bin/archive-fetch and a call's watch may write at once.
  const temp = `${target}.${process.pid}-${writes++}`;
  try {
    await writeFile(temp, `${JSON.stringify(state)}\n`, { mode: 0o600 });
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw new WalbridgeError('localIo', `cannot record this standby's state in ${target}: ${(err as Error).message}`);
  }
}
