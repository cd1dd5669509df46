/**
 * `--metrics-file` for archive_command and restore_command: every call adds itself to counters
 * by exit status; a push records the newest segment archived and PostgreSQL's backlog of `.ready`
 * files, a fetch the newest segment restored; and a standby's waiting call says while it waits
 * whether it is waiting for a segment or holding on a failure (and which), refreshed every 30 s,
 * so that a standby stuck for an hour shows before its call ends.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { ExitCode, type ExitStatus } from '../errors.js';
import type { Logger } from '../log.js';
import { parseWalFileName, segmentNumber } from '../wal/names.js';
import { ownLabels, type Owner, type Samples, statusName, updateMetricsFile } from './textfile.js';

export type MeteredCommand = 'push' | 'fetch';

/** A fetch call's state, as walbridge_fetch_state's `state` label. */
export type FetchState = 'waiting' | 'holding' | 'restored' | 'not_found' | 'failed';
const FETCH_STATES: readonly FetchState[] = ['waiting', 'holding', 'restored', 'not_found', 'failed'];

export interface CallRecord extends Owner {
  readonly command: MeteredCommand;
  readonly status: ExitStatus;
  readonly seconds: number;
  /** WAL bytes archived or restored (the plain file's size), when the call succeeded. */
  readonly walBytes?: number;
  /** End (LSN in bytes) of the segment archived or restored, when the call succeeded with a segment. */
  readonly segmentEnd?: number;
  /** push: `.ready` files left for PostgreSQL to archive (the call's own not counted once it is archived). */
  readonly readyFiles?: number;
  /** Unix time of the call's end. */
  readonly at: number;
}

/** Adds one call to the samples. */
export function addCall(samples: Samples, call: CallRecord): Samples {
  const out = new Map(samples);
  const add = (key: string, value: number) => out.set(key, (out.get(key) ?? 0) + value);
  const labels = ownLabels(call.command, call);
  add(`walbridge_calls_total{${labels},status="${statusName(call.status)}"}`, 1);
  add(`walbridge_call_duration_seconds_total{${labels}}`, call.seconds);
  if (call.walBytes !== undefined) add(`walbridge_wal_bytes_total{${labels}}`, call.walBytes);
  if (call.status === ExitCode.ok) out.set(`walbridge_last_success_timestamp_seconds{${labels}}`, call.at);
  // "Not found" is a restore_command's everyday answer, not a failure.
  else if (call.status !== ExitCode.notFound) out.set(`walbridge_last_failure_timestamp_seconds{${labels}}`, call.at);
  if (call.segmentEnd !== undefined) {
    const key = `walbridge_${call.command === 'push' ? 'archived' : 'restored'}_position_bytes{${labels}}`;
    out.set(key, Math.max(out.get(key) ?? 0, call.segmentEnd)); // a late call for an older segment does not move it back
  }
  if (call.readyFiles !== undefined) out.set(`walbridge_archive_ready_files{${labels}}`, call.readyFiles);
  if (call.command === 'push') {
    // A host that archives into the namespace is its primary (a standby promoted here): its
    // standby series would otherwise stay as they were last written, silent and behind for ever.
    const standbySide = ['walbridge_fetch_', 'walbridge_restored_position_bytes{'];
    for (const key of out.keys())
      if (standbySide.some((prefix) => key.startsWith(prefix)) && key.includes(`command="fetch",namespace="${call.namespace}"`)) out.delete(key);
  }
  if (call.command !== 'fetch') return out;
  const state: FetchState = call.status === ExitCode.ok ? 'restored' : call.status === ExitCode.notFound ? 'not_found' : 'failed';
  return withFetchState(out, call, state, undefined, call.at);
}

/** Sets walbridge_fetch_state to `state` (one series per state, 1 for the current one) and the holding failure, if any. */
export function withFetchState(samples: Samples, owner: Owner, state: FetchState, failure: string | undefined, at: number): Samples {
  const out = new Map(samples);
  const labels = ownLabels('fetch', owner);
  for (const s of FETCH_STATES) out.set(`walbridge_fetch_state{${labels},state="${s}"}`, s === state ? 1 : 0);
  for (const key of out.keys()) if (key.startsWith(`walbridge_fetch_holding{${labels},`)) out.delete(key);
  if (state === 'holding' && failure) out.set(`walbridge_fetch_holding{${labels},failure="${failure}"}`, 1);
  out.set(`walbridge_fetch_state_timestamp_seconds{${labels}}`, at);
  return out;
}

/** Adds `call` to the metrics file. Never throws. */
export function recordCall(file: string, call: CallRecord, log: Logger): Promise<void> {
  return updateMetricsFile(file, (samples) => addCall(samples, call), log);
}

/** The call being metered, if --metrics-file is set (one per process). */
let metered:
  | {
      readonly file: string;
      readonly command: MeteredCommand;
      readonly owner: Owner;
      readonly log: Logger;
      walFile?: { path: string; name: string };
      /** The state a waiting fetch last wrote, or is about to. */
      state?: { name: 'waiting' | 'holding'; failure?: string | undefined };
      timer?: NodeJS.Timeout;
      heartbeat?: NodeJS.Timeout;
      /** Writes in flight, in order. */
      writes: Promise<void>;
    }
  | undefined;

/** A waiting call says so once it has waited this long (most calls are answered sooner: no write for them). */
const WAITING_AFTER_MS = 2_000;
/** While a call waits or holds, its state is written again this often (walbridge_fetch_state_timestamp_seconds). */
const REFRESH_EVERY_MS = 30_000;

/** Meters this process's call into `file` (--metrics-file), if set. */
export function meterCall(file: string | undefined, command: MeteredCommand, owner: Owner, log: Logger): void {
  if (file) metered = { file, command, owner: { namespace: owner.namespace, standby: owner.standby }, log, writes: Promise.resolve() };
}

/** The WAL file this call moves: `path` (%p) counts as its bytes if it succeeds, `name` (%f for a fetch) says which segment. */
export function meterWalFile(walPath: string, name = path.basename(walPath)): void {
  if (metered) metered.walFile = { path: walPath, name };
}

/**
 * A waiting fetch is (again) waiting for its segment: said once it has gone on for a moment
 * without an answer, or, after holding on a failure, once an attempt has gone on for longer
 * than a failure would take to show (`afterHoldingMs`), so that the state does not flap.
 */
export function meterWaiting(afterHoldingMs: number): void {
  const m = metered;
  if (m?.command !== 'fetch' || m.state?.name === 'waiting') return;
  clearTimeout(m.timer);
  m.timer = setTimeout(() => writeState({ name: 'waiting' }), m.state?.name === 'holding' ? afterHoldingMs : WAITING_AFTER_MS);
  m.timer.unref();
}

/** A waiting fetch holds on a failure (its exit status, had it not held): written at once. */
export function meterHolding(status: ExitStatus): void {
  const m = metered;
  if (m?.command !== 'fetch') return;
  clearTimeout(m.timer);
  const failure = statusName(status);
  if (m.state?.name !== 'holding' || m.state.failure !== failure) writeState({ name: 'holding', failure });
}

function writeState(state: { name: 'waiting' | 'holding'; failure?: string | undefined }): void {
  const m = metered!;
  m.state = state;
  const write = () =>
    (m.writes = m.writes.then(() =>
      updateMetricsFile(m.file, (samples) => withFetchState(samples, m.owner, state.name, state.failure, Math.round(Date.now() / 1000)), m.log),
    ));
  void write();
  clearInterval(m.heartbeat);
  m.heartbeat = setInterval(() => {
    if (m.state === state) void write();
  }, REFRESH_EVERY_MS);
  m.heartbeat.unref();
}

/** Records the metered call (if any) with its exit status; the duration counts from process start. Never throws. */
export async function finishMetering(status: ExitStatus): Promise<void> {
  const m = metered;
  if (!m) return;
  clearTimeout(m.timer);
  clearInterval(m.heartbeat);
  m.state = undefined;
  try {
    await m.writes;
    const moved = m.walFile && status === ExitCode.ok ? await movedSegment(m.walFile) : {};
    const readyFiles = m.command === 'push' && m.walFile ? await readyFilesBeside(m.walFile, status === ExitCode.ok) : undefined;
    const at = Math.round(Date.now() / 1000);
    await recordCall(m.file, { command: m.command, ...m.owner, status, seconds: process.uptime(), ...moved, readyFiles, at }, m.log);
  } catch (err) {
    m.log.warn(`metrics not recorded in ${m.file}: ${(err as Error).message}`);
  }
}

/** The bytes moved, and the end of the segment if it is one (its size is the segment size: a power of two, 1 MiB to 1 GiB). */
async function movedSegment(walFile: { path: string; name: string }): Promise<{ walBytes?: number; segmentEnd?: number }> {
  const size = await stat(walFile.path).then(
    (s) => s.size,
    () => undefined,
  );
  if (size === undefined) return {};
  const file = parseWalFileName(walFile.name);
  const segmentSize = size >= 1 << 20 && size <= 1 << 30 && (size & (size - 1)) === 0;
  if (file?.kind !== 'segment' || !segmentSize) return { walBytes: size };
  return { walBytes: size, segmentEnd: Number((segmentNumber(file, size) + 1n) * BigInt(size)) };
}

/** `.ready` files in the archive_status beside %p (none when %p is not in a pg_wal). */
async function readyFilesBeside(walFile: { path: string; name: string }, archived: boolean): Promise<number | undefined> {
  const names = await readdir(path.join(path.dirname(path.resolve(walFile.path)), 'archive_status')).catch(() => undefined);
  if (!names) return undefined;
  return names.filter((n) => n.endsWith('.ready') && !(archived && n === `${walFile.name}.ready`)).length;
}
