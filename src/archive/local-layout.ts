/**
 * The one place that names walbridge's files beside a cluster. In `pg_wal/walbridge/` (0700,
 * like pg_wal; inside pg_wal so base backups leave it out, in a subdirectory so WAL recycling
 * never looks at it), regular files only:
 *
 *   pusher.pid, fetcher.pid, stream.pid   the running background pusher / fetcher / streamer
 *   pusher.log, fetcher.log               the background processes' logs
 *   waiting.pid                           the archive-fetch call waiting for a segment (walbridge promote)
 *   pushed/<file>                         markers of files the pusher archived ahead (push/markers.ts)
 *   prefetch/<namespace>-<repo hash>/     the prefetch spool (restore/spool.ts)
 *   prefetch/front-end, prefetch/served   what bin/archive-fetch answers from the spool, and what it served (restore/spool.ts)
 *
 * Sockets never go there (pg_rewind and file-level backups fail on them): they live in a
 * private runtime directory outside the data directory (util/runtime-dir.ts).
 */
import path from 'node:path';
import { clusterRuntime, socketIn } from '../util/runtime-dir.js';
import { dataDirOfWalPath } from '../wal/datadir.js';

export type BackgroundRole = 'pusher' | 'fetcher';

/** walbridge's own directory in pg_wal. */
export function walbridgeDir(walDir: string): string {
  return path.join(walDir, 'walbridge');
}

/** The pg_wal directory `walPath` is in, or undefined if it is not a data directory's pg_wal. */
export function walDirOf(walPath: string): string | undefined {
  return dataDirOfWalPath(walPath) ? path.dirname(path.resolve(walPath)) : undefined;
}

export function pidFile(walDir: string, who: BackgroundRole | 'stream' | 'waiting'): string {
  return path.join(walbridgeDir(walDir), `${who}.pid`);
}

export function backgroundLogFile(walDir: string, role: BackgroundRole): string {
  return path.join(walbridgeDir(walDir), `${role}.log`);
}

export function markerDir(walDir: string): string {
  return path.join(walbridgeDir(walDir), 'pushed');
}

export function prefetchDir(walDir: string): string {
  return path.join(walbridgeDir(walDir), 'prefetch');
}

/** Which calls bin/archive-fetch answers from which spool (restore/spool.ts recordFrontEnd). */
export function frontEndFile(walDir: string): string {
  return path.join(prefetchDir(walDir), 'front-end');
}

/** Which waiting calls bin/archive-fetch may answer from the spool, until when (restore/clearance.ts). */
export function waitingFrontEndFile(walDir: string): string {
  return path.join(prefetchDir(walDir), 'front-end-waiting');
}

/** The last segment bin/archive-fetch served from the spool by itself. */
export function servedNoteFile(walDir: string): string {
  return path.join(prefetchDir(walDir), 'served');
}

/** The background process's socket, or undefined where none can be (pg_wal unreadable, no short path). */
export function backgroundSocket(walDir: string, role: BackgroundRole): string | undefined {
  const runtime = clusterRuntime(walDir);
  return runtime && socketIn(runtime, `${role}.sock`);
}

/** The single-instance lock name of a background role (or the streamer) for this pg_wal. */
export function instanceName(walDir: string, who: BackgroundRole | 'stream'): string | undefined {
  const runtime = clusterRuntime(walDir);
  return runtime && `${runtime.id}-${who}`;
}
