/**
 * Temp files a command is writing right now, so a signal handler can remove them before the
 * process dies: SIGTERM must leave neither a partial destination nor litter behind.
 */
import { unlinkSync } from 'node:fs';

const pending = new Set<string>();

export function trackTempFile(file: string): void {
  pending.add(file);
}

export function untrackTempFile(file: string): void {
  pending.delete(file);
}

export function removeTempFilesSync(): void {
  for (const file of pending) {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  }
  pending.clear();
}
