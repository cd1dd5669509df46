/** Durability helpers for local files. */
import { open } from 'node:fs/promises';

/** Makes a directory's entries (a rename, a link, an unlink) survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
