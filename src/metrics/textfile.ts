/**
 * The Prometheus textfile that `--metrics-file` names (node_exporter's textfile collector): every
 * series walbridge writes, parsing and rendering, and the one way to change the file. Calls, a
 * standby's waiting call and `walbridge stream` may share a file: each change reads it, applies
 * itself and replaces it atomically (temp file, rename) under a lock file, so no process loses
 * another's samples. Metrics are best effort: a problem with the file is one warning, never a
 * different exit status.
 */
import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ExitCode, type ExitStatus } from '../errors.js';
import type { Logger } from '../log.js';
import { trackTempFile, untrackTempFile } from '../util/temp-files.js';

/** Every series walbridge writes: its type and help (the README's Monitoring table says the same). */
export const METRICS: Readonly<Record<string, readonly [type: 'counter' | 'gauge', help: string]>> = {
  walbridge_calls_total: ['counter', 'archive_command / restore_command calls by exit status'],
  walbridge_call_duration_seconds_total: ['counter', 'time spent in calls'],
  walbridge_wal_bytes_total: ['counter', 'WAL bytes archived (push) or restored (fetch)'],
  walbridge_last_success_timestamp_seconds: ['gauge', 'end of the last call that exited 0'],
  walbridge_last_failure_timestamp_seconds: ['gauge', 'end of the last call that failed (neither 0 nor "not found")'],
  walbridge_archived_position_bytes: ['gauge', 'end (LSN, in bytes) of the furthest WAL segment archived: by this primary (push), in the bucket (status)'],
  walbridge_archive_ready_files: ['gauge', "WAL files PostgreSQL has marked ready and not yet seen archived, at the last push call's end"],
  walbridge_restored_position_bytes: ['gauge', 'end (LSN, in bytes) of the newest WAL segment this standby restored'],
  walbridge_fetch_state: [
    'gauge',
    "1 for the standby's restore_command state: waiting (for a segment not archived yet), holding (on a failure), restored, not_found or failed (the last call's end)",
  ],
  walbridge_fetch_holding: ['gauge', 'while a call holds on a failure: 1, labelled with the failure (an exit status name)'],
  walbridge_fetch_state_timestamp_seconds: ['gauge', 'when walbridge_fetch_state was last written (every 30 s while a call waits or holds)'],
  walbridge_newest_segment_timestamp_seconds: ['gauge', "when the bucket's newest WAL segment was stored (walbridge status)"],
  walbridge_status_problems: ['gauge', 'problems walbridge status sees in the listing (gaps, a timeline without its history, foreign objects)'],
  walbridge_trigger_present: ['gauge', 'a failover trigger in the bucket (walbridge status), by mode and target'],
  walbridge_status_timestamp_seconds: ['gauge', 'when walbridge status last wrote its metrics'],
  walbridge_stream_flush_position_bytes: ['gauge', "the primary's WAL flush position (LSN, in bytes) walbridge stream last read"],
  walbridge_stream_shipped_position_bytes: ['gauge', 'how far (LSN, in bytes) walbridge stream has shipped the segment being written'],
  walbridge_stream_lag_bytes: ['gauge', 'flushed WAL not yet shipped by walbridge stream'],
  walbridge_stream_failing: ['gauge', '1 while walbridge stream cannot reach the primary or the store'],
  walbridge_stream_heartbeat_timestamp_seconds: ['gauge', 'when walbridge stream last wrote its metrics (every 5 s while it runs)'],
};

/** A sample's key: the metric name and its labels, exactly as written in the file. */
export type Samples = Map<string, number>;

/** The exit status's name, as in the `status` and `failure` labels. */
export function statusName(status: ExitStatus): string {
  return STATUS_NAME.get(status) ?? String(status);
}
const STATUS_NAME = new Map<number, string>(Object.entries(ExitCode).map(([name, code]) => [code, name]));

/** Whose series: every one carries the namespace, and a standby's its name when set. */
export interface Owner {
  readonly namespace: string;
  readonly standby?: string | undefined;
}

/** The labels of `command`'s series for `owner`. Label values (namespace, standby: [A-Za-z0-9._-], settings) need no escaping. */
export function ownLabels(command: string, owner: Owner): string {
  return `command="${command}",namespace="${owner.namespace}"${owner.standby ? `,standby="${owner.standby}"` : ''}`;
}

/** The samples of a file; those without a namespace label (an older walbridge's) are dropped: nothing updates them again. */
export function parseSamples(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    const m = /^(walbridge_[a-z_]+(?:\{[^}]*\})?) (-?[0-9.e+]+)$/.exec(line.trim());
    if (m && m[1]!.includes('namespace="')) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

export function renderSamples(samples: Samples): string {
  const lines: string[] = [];
  const keys = [...samples.keys()].sort();
  for (const [name, [type, help]] of Object.entries(METRICS)) {
    const own = keys.filter((k) => k.startsWith(`${name}{`));
    if (own.length === 0) continue;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const k of own) lines.push(`${k} ${Number(samples.get(k)!.toFixed(6))}`);
  }
  return `${lines.join('\n')}\n`;
}

const LOCK_WAIT_MS = 2_000;
/** A lock file older than this was left by a killed process. */
const STALE_LOCK_MS = 10_000;

/** A problem with a file is said once a minute at most (a streamer or a waiting call writes every few seconds). */
const WARN_EVERY_MS = 60_000;
const warnedAt = new Map<string, number>();

/** Applies `change` to the samples in `file`. Never throws. */
export async function updateMetricsFile(file: string, change: (samples: Samples) => Samples, log: Logger): Promise<void> {
  const lock = `${file}.lock`;
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}`);
  try {
    if (!(await takeLock(lock))) throw new Error(`${lock} stayed locked for ${LOCK_WAIT_MS / 1000} s`);
    // A process ended by a signal meanwhile removes them as it exits: a lock left behind would hold up every writer for 10 s.
    trackTempFile(lock);
    try {
      const current = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? '' : Promise.reject(err)));
      trackTempFile(temp);
      await writeFile(temp, renderSamples(change(parseSamples(current))), { mode: 0o644 });
      await rename(temp, file);
    } finally {
      untrackTempFile(temp);
      await unlink(lock).catch(() => undefined);
      untrackTempFile(lock);
    }
  } catch (err) {
    if (Date.now() - (warnedAt.get(file) ?? -Infinity) < WARN_EVERY_MS) return;
    warnedAt.set(file, Date.now());
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
