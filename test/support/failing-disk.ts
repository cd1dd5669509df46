/**
 * Real disk faults for the file:// store, from the kernel rather than from a stand-in:
 *
 * - failingDisk(): an ext4 filesystem on a loop device. breakInside(file) shrinks the device
 *   behind the mounted filesystem, so reading a file past that point fails with EIO, as on a
 *   dying disk or a lost SAN path, while its first blocks still read.
 * - fullDisk(): a tiny tmpfs, so writing more than it holds fails with ENOSPC.
 *
 * Both need root (losetup, mount), as the suite has in CI.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { scratchDir } from './scratch.js';

const run = promisify(execFile);
const BLOCK = 4096;

export const canMount = process.getuid?.() === 0;

export interface TestDisk {
  /** The mounted filesystem's root, writable by every user (PostgreSQL runs as postgres). */
  readonly dir: string;
  cleanup(): Promise<void>;
}

export interface FailingDisk extends TestDisk {
  /** From now on, reading `file` past its first 256 KiB fails with EIO. */
  breakInside(file: string): Promise<void>;
}

export async function failingDisk(): Promise<FailingDisk> {
  const base = await scratchDir('wb-disk-');
  const image = path.join(base, 'disk.img');
  const dir = path.join(base, 'mnt');
  await mkdir(dir);
  await writeFile(image, '');
  await truncate(image, 64 * 1024 * 1024);
  // No journal: nothing the filesystem writes later may land past the cut.
  await run('mkfs.ext4', ['-q', '-F', '-b', String(BLOCK), '-O', '^has_journal', image]);
  const device = (await run('losetup', ['--find', '--show', image])).stdout.trim();
  const mount = async () => {
    await run('mount', [device, dir]);
    await chmod(dir, 0o777);
  };
  await mount();
  return {
    dir,
    breakInside: async (file) => {
      // Where the file's bytes lie on the device (one extent: the filesystem is fresh).
      const extents = (await run('filefrag', ['-v', file])).stdout;
      const first = /^\s*0:\s+0\.\.\s*\d+:\s+(\d+)\.\./m.exec(extents);
      if (!first) throw new Error(`failingDisk: no extent found for ${file}:\n${extents}`);
      // Remounted so no page of the file stays cached; then the device ends 64 blocks into it
      // (past the kernel's readahead of its first pages).
      await run('umount', [dir]);
      await mount();
      await truncate(image, (Number(first[1]) + 64) * BLOCK);
      await run('losetup', ['--set-capacity', device]);
    },
    cleanup: async () => {
      await run('umount', [dir]).catch(() => undefined);
      await run('losetup', ['-d', device]).catch(() => undefined);
      await rm(base, { recursive: true, force: true });
    },
  };
}

export async function fullDisk(bytes: number): Promise<TestDisk> {
  const dir = await scratchDir('wb-full-');
  await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0777`, 'walbridge-test', dir]);
  return {
    dir,
    cleanup: async () => {
      await run('umount', [dir]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
