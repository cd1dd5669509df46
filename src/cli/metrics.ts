/**
 * `--metrics-file`: counters of archive_command and restore_command calls in Prometheus' text
 * format, for node_exporter's textfile collector. Every call adds itself to the file; the file
 * is replaced atomically (temp file, rename) under a lock file, so concurrent calls (the
 * archiver's, a standby's) never lose each other's counts. Metrics are best effort: a problem
 * with the file is one warning, never a different exit status.
 */
import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ExitCode, type ExitStatus } from '../errors.js';
import type { Logger } from '../log.js';

export type MeteredCommand = 'push' | 'fetch';

export interface CallRecord {
  readonly command: MeteredCommand;
  /** Whose call it was: every series carries the namespace, and a standby's its name when set. */
  readonly namespace: string;
  readonly standby?: string | undefined;
  readonly status: ExitStatus;
  readonly seconds: number;
  /** WAL bytes archived or restored (the plain file's size), when the call succeeded. */
  readonly walBytes?: number;
  /** Unix time of the call's end. */
  readonly at: number;
}

const HELP: Record<string, [type: 'counter' | 'gauge', help: string]> = {
  walbridge_calls_total: ['counter', 'archive_command / restore_command calls by exit status'],
  walbridge_call_duration_seconds_total: ['counter', 'time spent in calls'],
  walbridge_wal_bytes_total: ['counter', 'WAL bytes archived (push) or restored (fetch)'],
  walbridge_last_success_timestamp_seconds: ['gauge', 'end of the last call that exited 0'],
};

const STATUS_NAME = new Map<number, string>(Object.entries(ExitCode).map(([name, code]) => [code, name]));

/** A sample's key: the metric name and its labels, exactly as written in the file. */
export type Samples = Map<string, number>;

/** The samples of a file; those without a namespace label (an older walbridge's) are dropped: nothing updates them again. */
export function parseSamples(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    const m = /^(walbridge_[a-z_]+(?:\{[^}]*\})?) (-?[0-9.e+]+)$/.exec(line.trim());
    if (m && m[1]!.includes('namespace="')) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

/** Adds one call to the samples. */
export function addCall(samples: Samples, call: CallRecord): Samples {
  const out = new Map(samples);
  const add = (key: string, value: number) => out.set(key, (out.get(key) ?? 0) + value);
  // Label values: a namespace and a standby name are restricted to [A-Za-z0-9._-] (settings), nothing to escape.
  const command = `command="${call.command}",namespace="${call.namespace}"${call.standby ? `,standby="${call.standby}"` : ''}`;
  add(`walbridge_calls_total{${command},status="${STATUS_NAME.get(call.status) ?? String(call.status)}"}`, 1);
  add(`walbridge_call_duration_seconds_total{${command}}`, call.seconds);
  if (call.walBytes !== undefined) add(`walbridge_wal_bytes_total{${command}}`, call.walBytes);
  if (call.status === ExitCode.ok) out.set(`walbridge_last_success_timestamp_seconds{${command}}`, call.at);
  return out;
}

export function renderSamples(samples: Samples): string {
  const lines: string[] = [];
  const keys = [...samples.keys()].sort();
  for (const name of Object.keys(HELP)) {
    const own = keys.filter((k) => k === name || k.startsWith(`${name}{`));
    if (own.length === 0) continue;
    const [type, help] = HELP[name]!;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const k of own) lines.push(`${k} ${Number(samples.get(k)!.toFixed(6))}`);
  }
  return `${lines.join('\n')}\n`;
}

const LOCK_WAIT_MS = 2_000;
/** A lock file older than this was left by a killed call. */
const STALE_LOCK_MS = 10_000;

/** Adds `call` to the metrics file. Never throws. */
export async function recordCall(file: string, call: CallRecord, log: Logger): Promise<void> {
  const lock = `${file}.lock`;
  try {
    if (!(await takeLock(lock))) throw new Error(`${lock} stayed locked for ${LOCK_WAIT_MS / 1000} s`);
    try {
      const current = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? '' : Promise.reject(err)));
      const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}`);
      await writeFile(temp, renderSamples(addCall(parseSamples(current), call)), { mode: 0o644 });
      await rename(temp, file);
    } finally {
      await unlink(lock).catch(() => undefined);
    }
  } catch (err) {
    log.warn(`metrics not recorded in ${file}: ${(err as Error).message}`);
  }
}

async function takeLock(lock: string): Promise<boolean> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await (await open(lock, 'wx')).close();
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > STALE_LOCK_MS) await unlink(lock).catch(() => undefined);
      else if (Date.now() > deadline) return false;
      else await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 10));
    }
  }
}

/** The call being metered, if --metrics-file is set (one per process). */
let metered: { file: string; command: MeteredCommand; namespace: string; standby?: string | undefined; walFile?: string } | undefined;

/** Meters this process's call into `file`; on success, `walFile`'s size counts as the WAL bytes moved. */
export function meterCall(file: string | undefined, command: MeteredCommand, who: { namespace: string; standby?: string | undefined }): void {
  if (file) metered = { file, command, namespace: who.namespace, standby: who.standby };
}

/** The file whose size counts as this call's WAL bytes if it succeeds (%p pushed, or %p restored). */
export function meterWalFile(walFile: string): void {
  if (metered) metered.walFile = walFile;
}

/** Records the metered call (if any) with its exit status; the duration counts from process start. */
export async function finishMetering(status: ExitStatus, log: Logger): Promise<void> {
  if (!metered) return;
  const walBytes =
    status === ExitCode.ok && metered.walFile
      ? await stat(metered.walFile).then(
          (s) => s.size,
          () => undefined,
        )
      : undefined;
  const { file, command, namespace, standby } = metered;
  await recordCall(file, { command, namespace, standby, status, seconds: process.uptime(), walBytes, at: Math.round(Date.now() / 1000) }, log);
}
