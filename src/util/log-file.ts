/** Keeps a background process's log (its stderr, a file in pg_wal/walbridge/) bounded. */
import { fstatSync, ftruncateSync } from 'node:fs';

/** The log starts afresh past this size. */
export const LOG_LIMIT = 1024 * 1024;

/** Empties stderr when it is a regular file over LOG_LIMIT (appends then start at 0 again). */
export function trimStderrLog(): void {
  try {
    const stats = fstatSync(2);
    if (stats.isFile() && stats.size > LOG_LIMIT) ftruncateSync(2, 0);
  } catch {
    // not a file, or closed: nothing to trim
  }
}
