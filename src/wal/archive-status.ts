/**
 * PostgreSQL's archive_status directory, read only: the archiver owns it and renames
 * `<file>.ready` to `<file>.done` itself after archive_command succeeds.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { parseWalFileName } from './names.js';

/**
 * The order the archiver will ask for files in (pgarch.c): timeline history files first,
 * then the rest by name, which for one timeline is WAL order.
 */
export function archiverOrder(names: readonly string[]): string[] {
  const rank = (n: string) => (n.endsWith('.history') ? 0 : 1);
  return [...names].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** WAL files waiting to be archived (`.ready`), in the archiver's order; none if unreadable. */
export async function readyWalFiles(walDir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(path.join(walDir, 'archive_status'));
  } catch {
    return [];
  }
  const ready = entries
    .filter((e) => e.endsWith('.ready'))
    .map((e) => e.slice(0, -'.ready'.length))
    .filter((n) => parseWalFileName(n) !== undefined);
  return archiverOrder(ready);
}
