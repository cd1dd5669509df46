/** Runs walbridge's executables as PostgreSQL would: a child process with its own environment. */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN_DIR = path.resolve(fileURLToPath(new URL('../../bin', import.meta.url)));

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Environment names whose values are secrets: they must never appear in anything walbridge prints. */
const SECRET_NAME = /SECRET|TOKEN|PASSWORD|PRIVATE|(^|_)KEY$/;

/**
 * The secrets a call was given, as found in its output, if any. Every test's calls go through
 * here, so every test run checks that no credential reaches stdout or stderr (PostgreSQL's log).
 */
export function leakedSecrets(env: Record<string, string>, output: string): string[] {
  return Object.entries(env)
    .filter(([name, value]) => SECRET_NAME.test(name) && value.length >= 8 && output.includes(value))
    .map(([name]) => name);
}

export function runCli(
  executable: 'archive-push' | 'archive-fetch' | 'walbridge',
  args: string[],
  env: Record<string, string>,
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      path.join(BIN_DIR, executable),
      args,
      {
        // Only what the test gives: the developer's own AWS or Google settings must not leak in.
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env },
        cwd: opts.cwd,
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        const leaked = leakedSecrets(env, stdout + stderr);
        if (leaked.length > 0) return reject(new Error(`${executable} ${args.join(' ')} printed the value of ${leaked.join(', ')}`));
        resolve({
          status: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout,
          stderr,
        });
      },
    );
  });
}
