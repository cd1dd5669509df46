/** Durability helpers for local files. */
import { open, rename } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../errors.js';

/** Makes a directory's entries (a rename, a link, an unlink) survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Puts a complete, synced file in place of `destination` by an atomic rename, made durable: how
 * %p appears (from a verified download or from the prefetch spool). A failure is local I/O.
 */
export async function publishFile(from: string, destination: string): Promise<void> {
  try {
    await rename(from, destination);
    await fsyncDir(path.dirname(path.resolve(destination)));
  } catch (err) {
    throw new WalbridgeError('localIo', `cannot publish ${destination}: ${(err as Error).message}`, { cause: err });
  }
}
