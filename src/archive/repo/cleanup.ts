/**
 * `%r` cleanup, as pg_archivecleanup does it: delete the WAL files whose log/segment part sorts
 * before the restart file's, whatever their timeline. Never `.history` files (timeline selection
 * needs them); `.backup` files only when asked.
 */
import { WalbridgeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Store } from '../../storage/store.js';
import { parseWalFileName, precedesRestartPoint } from '../../wal/names.js';
import { walPrefix } from './layout.js';

export interface CleanupOptions {
  readonly includeBackup: boolean;
  readonly dryRun: boolean;
}

/** Parses `%r`, which must name a segment. */
export function parseRestartFile(name: string) {
  const restart = parseWalFileName(name);
  if (!restart || restart.kind !== 'segment') {
    throw new WalbridgeError('badName', `refusing to clean up before ${JSON.stringify(name)}: not a WAL segment name (expected %r)`);
  }
  return restart;
}

/** Deletes (or, dry, lists) what precedes `restartName`; returns the keys concerned. */
export async function cleanupBefore(store: Store, namespace: string, restartName: string, opts: CleanupOptions, log: Logger): Promise<string[]> {
  const restart = parseRestartFile(restartName);
  const prefix = walPrefix(namespace);
  const doomed: string[] = [];
  for await (const entry of store.list(prefix)) {
    const name = entry.key.slice(prefix.length);
    if (precedesRestartPoint(name, restart, { includeBackup: opts.includeBackup })) doomed.push(entry.key);
    // Names sort by timeline first, so the listing cannot stop early at the restart point.
  }
  if (opts.dryRun) {
    log.info(`dry run: ${doomed.length} files precede ${restartName}`);
    return doomed;
  }
  if (doomed.length > 0) await store.deleteMany(doomed);
  log.info(`cleaned up ${doomed.length} files preceding ${restartName}`);
  return doomed;
}
