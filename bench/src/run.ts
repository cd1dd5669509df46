/**
 * Runs a tool the way PostgreSQL does: one process per file, `/bin/sh -c '<command>'`, as the
 * cluster's OS user, in the data directory, with an explicit environment. GNU time wraps each
 * run to report the peak RSS and CPU time of the command (not of background processes it
 * detaches: phases.ts watchBackground samples those).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { clusterUser } from '../../test/servers/postgres.js';

export const GNU_TIME = '/usr/bin/time';

export interface Invocation {
  /** Shell command line, as it would stand in archive_command / restore_command. */
  command: string;
  cwd: string;
  env: Record<string, string>;
  /** Kill the command's process group after this long. Default 180 s. */
  timeoutMs?: number;
  /** Keep stdout (otherwise discarded, as PostgreSQL's log would take it). */
  captureStdout?: boolean;
}

export interface RunResult {
  command: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Spawn to exit, as the caller (PostgreSQL's archiver or startup process) waits. */
  wallMs: number;
  /** performance.now() at exit, for measuring from other events. */
  exitedAt: number;
  peakRssKiB: number | undefined;
  /** User + system CPU seconds of the command and what it waited for (not what it detached). */
  cpuSeconds: number | undefined;
  stderr: string;
  stdout: string;
  timedOut: boolean;
}

export interface RunningCommand {
  child: ChildProcess;
  startedAt: number;
  done: Promise<RunResult>;
}

let runCounter = 0;
const live = new Set<ChildProcess>();

/** Kill every command still running (their process groups), e.g. on exit. */
export function killAllRunning(): void {
  for (const child of live) {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  live.clear();
}

/** Directory GNU time writes its reports into (writable by the cluster user). */
let rssDir = '/tmp';
export function setRssReportDir(dir: string): void {
  rssDir = dir;
}

export function start(inv: Invocation): RunningCommand {
  const user = clusterUser();
  const rssFile = join(rssDir, `rss-${process.pid}-${++runCounter}`);
  const startedAt = performance.now();
  const child = spawn(GNU_TIME, ['-o', rssFile, '-f', '%M %U %S', '/bin/sh', '-c', inv.command], {
    cwd: inv.cwd,
    env: inv.env,
    // Own process group, so a timeout kills everything the command started.
    detached: true,
    stdio: ['ignore', inv.captureStdout ? 'pipe' : 'ignore', 'pipe'],
    ...(user.viaRunuser ? { uid: user.uid, gid: user.gid } : {}),
  });
  live.add(child);
  let stderr = '';
  let stdout = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 64_000) stderr += d.toString();
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, inv.timeoutMs ?? 180_000);
  const done = new Promise<RunResult>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(new Error(`cannot run ${GNU_TIME} for ${inv.command}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      const exitedAt = performance.now();
      clearTimeout(timer);
      live.delete(child);
      void (async () => {
        // A detached daemon (pgBackRest's async process) may hold the pipes open: wait a little only.
        const closed = [child.stderr, child.stdout].filter((s) => s !== null).map((s) => new Promise((r) => s.once('close', r)));
        await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 50))]);
        let peakRssKiB: number | undefined;
        let cpuSeconds: number | undefined;
        try {
          const report = await readFile(rssFile, 'utf8');
          const last = /^(\d+) ([\d.]+) ([\d.]+)$/.exec(report.trim().split('\n').at(-1) ?? '');
          if (last) {
            peakRssKiB = Number(last[1]);
            cpuSeconds = Number(last[2]) + Number(last[3]);
          }
        } catch {
          /* killed before time wrote it */
        }
        await rm(rssFile, { force: true });
        resolve({
          command: inv.command,
          exitCode: code,
          signal,
          wallMs: exitedAt - startedAt,
          exitedAt,
          peakRssKiB,
          cpuSeconds,
          stderr: stderr.trim(),
          stdout,
          timedOut,
        });
      })();
    });
  });
  return { child, startedAt, done };
}

export function run(inv: Invocation): Promise<RunResult> {
  return start(inv).done;
}

/** Single-quote for /bin/sh. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A short description of a failed run, for the report. */
export function failureText(r: RunResult): string {
  const why = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.exitCode}`;
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  return `${why}: ${lines.slice(-2).join(' | ').slice(0, 300) || '(no output)'}`;
}
