/**
 * An archive-push into a file:// repository caught (SIGSTOP) while its temp file exists, so a
 * test can end it by a signal at exactly that moment. The temp directory is watched (inotify);
 * a push that outran the watcher is let finish and another one started, a few times at most.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, watch } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { BIN_DIR } from './cli.js';

export interface StoppedPush {
  readonly child: ChildProcess;
  /** The temp file it was writing when stopped. */
  readonly temp: string;
  /** Resolves with how it ended. */
  readonly exited: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * `pushArgs(attempt)` gives the arguments and environment of one try (use a fresh namespace or
 * WAL file per attempt: a file already archived is never written again).
 */
export async function stopPushWhileWriting(
  tempDirOf: (attempt: number) => string,
  pushArgs: (attempt: number) => { args: string[]; env: Record<string, string> },
): Promise<StoppedPush> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const tempDir = tempDirOf(attempt);
    await mkdir(tempDir, { recursive: true, mode: 0o777 });
    const watcher = watch(tempDir);
    const { args, env } = pushArgs(attempt);
    const child = spawn(path.join(BIN_DIR, 'archive-push'), args, {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', WALBRIDGE_CONFIG: '', ...env },
      stdio: 'ignore',
    });
    const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (status, signal) => resolve({ status, signal })),
    );
    const temp = await new Promise<string | undefined>((resolve) => {
      let caught = false;
      watcher.on('change', (_event, name) => {
        // Only the WAL file's temp (not identity.json's): stop first, then look.
        if (caught || !String(name).startsWith('wal%2F') || !child.kill('SIGSTOP')) return;
        const file = path.join(tempDir, String(name));
        if (existsSync(file)) {
          caught = true;
          return resolve(file);
        }
        child.kill('SIGCONT');
      });
      void exited.then(() => resolve(undefined));
    });
    watcher.close();
    if (temp) return { child, temp, exited };
    await exited;
  }
  throw new Error('archive-push was never caught while writing its temp file (10 tries)');
}
