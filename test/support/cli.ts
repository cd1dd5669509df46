/** Runs walbridge's executables as PostgreSQL would: a child process with its own environment. */
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
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
export function leakedSecrets(env: Record<string, string>, output: string, others: readonly string[] = []): string[] {
  return [
    ...Object.entries(env)
      .filter(([name, value]) => SECRET_NAME.test(name) && value.length >= 8 && output.includes(value))
      .map(([name]) => name),
    ...others.filter((secret) => output.includes(secret)).map((_, i) => `secret #${i + 1} of the test`),
  ];
}

/**
 * The background pusher and fetcher log to pg_wal/walbridge/*.log, not to the call's stderr: the
 * directories the calls pointed at, with the secrets those calls were given, are remembered and
 * their logs read at every later call (and once more by test/setup/each-file.ts at the end).
 */
const backgroundLogDirs = new Map<string, { env: Record<string, string>; secrets: readonly string[] }>();

export function rememberBackgroundLogs(args: string[], env: Record<string, string>, secrets: readonly string[] = []): void {
  for (const arg of args) {
    if (path.isAbsolute(arg)) backgroundLogDirs.set(path.join(path.dirname(arg), 'walbridge'), { env, secrets });
  }
}

/** Secrets found in the background processes' logs so far, as messages. */
export function backgroundLogLeaks(): string[] {
  const found: string[] = [];
  for (const [dir, given] of backgroundLogDirs) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.log'));
    } catch {
      continue; // never created, or removed with its test's directory
    }
    for (const name of names) {
      const leaked = leakedSecrets(given.env, readFileSync(path.join(dir, name), 'utf8'), given.secrets);
      if (leaked.length > 0) found.push(`${path.join(dir, name)} holds the value of ${leaked.join(', ')}`);
    }
  }
  return found;
}

export function runCli(
  executable: 'archive-push' | 'archive-fetch' | 'walbridge',
  args: string[],
  env: Record<string, string>,
  /** secrets: more values that must not be printed (the content of a key file, say). */
  opts: { cwd?: string; timeoutMs?: number; secrets?: readonly string[] } = {},
): Promise<CliResult> {
  rememberBackgroundLogs(args, env, opts.secrets);
  return new Promise((resolve, reject) => {
    execFile(
      path.join(BIN_DIR, executable),
      args,
      {
        // Only what the test gives: the developer's own AWS or Google settings must not leak in.
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', WALBRIDGE_CONFIG: '', ...env },
        cwd: opts.cwd,
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const e = error as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        const leaked = leakedSecrets(env, stdout + stderr, opts.secrets);
        if (leaked.length > 0) return reject(new Error(`${executable} ${args.join(' ')} printed the value of ${leaked.join(', ')}`));
        const inLogs = backgroundLogLeaks();
        if (inLogs.length > 0) return reject(new Error(inLogs.join('; ')));
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
