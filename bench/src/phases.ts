/**
 * The measurements. Every call is one process started the way PostgreSQL starts it; what is
 * timed is what the server waits for (spawn to exit), except where stated.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, watch } from 'node:fs';
import { mkdir, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chownToClusterUser } from '../../test/servers/postgres.js';
import { RESTORE_TARGET, type Bench, type Row } from './rows.js';
import { failureText, run, shq, start, type RunResult } from './run.js';
import { rotate, sleep } from './stats.js';

export interface CallSample {
  segment: string;
  wallMs: number;
  peakRssKiB?: number;
  /** User + system CPU of the call (GNU time). */
  cpuMs?: number;
  ok: boolean;
}

/** What a row's detached background processes used (walbridge's pusher/fetcher, pgBackRest's async process). */
export interface BackgroundUse {
  processes: number;
  cpuSeconds: number;
  peakRssKiB: number;
}

export interface StoredSummary {
  /** Bytes stored per segment name. */
  perSegment: Record<string, number>;
  meanKiB: number;
  loadMeanKiB: number;
  idleMeanKiB: number;
  /** Segment bytes / stored bytes. */
  ratio: number;
  missing: number;
}

export interface RowResult {
  id: string;
  label: string;
  tool: Row['tool'];
  command: string;
  /** Settings outside the command line (pgBackRest's config file). */
  settings?: string;
  unavailable?: string;
  /** Set when the row stopped early; the reason. */
  aborted?: string;
  samples: CallSample[];
  failures: string[];
  /** Notable stderr lines (warnings), deduplicated. */
  warnings: string[];
  /** Burst and restore: first call's start to last call's exit. */
  totalSeconds?: number;
  stored?: StoredSummary;
  /** Restore: segments whose restored bytes matched the original. */
  verified?: number;
  /** Burst and restore: the row's background processes, sampled until they exited. */
  background?: BackgroundUse;
}

const MAX_FAILURES = 3;

function newResult(row: Row, exampleSegment: string, kind: 'push' | 'fetch'): RowResult {
  const command = kind === 'push' ? row.pushCommand?.(exampleSegment) : row.fetchCommand?.(exampleSegment);
  return {
    id: row.id,
    label: row.label,
    tool: row.tool,
    command: command ?? '',
    settings: row.settings,
    unavailable: row.unavailable,
    samples: [],
    failures: [],
    warnings: [],
  };
}

/** Keep warnings (not walbridge's per-file info lines) so that e.g. a codec fallback shows in the report. */
function noteWarnings(result: RowResult, r: RunResult): void {
  for (const line of r.stderr.split('\n')) {
    if (!/warn|cannot be loaded|deprecat/i.test(line)) continue;
    const text = line
      .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z?/g, '')
      .trim()
      .slice(0, 300);
    if (result.warnings.length < 5 && !result.warnings.includes(text)) result.warnings.push(text);
  }
}

function record(result: RowResult, segment: string, r: RunResult): boolean {
  const ok = r.exitCode === 0;
  result.samples.push({ segment, wallMs: r.wallMs, peakRssKiB: r.peakRssKiB, cpuMs: r.cpuSeconds === undefined ? undefined : r.cpuSeconds * 1000, ok });
  noteWarnings(result, r);
  if (!ok) {
    result.failures.push(`${segment}: ${failureText(r)}`);
    if (result.failures.length >= MAX_FAILURES) result.aborted = `stopped after ${MAX_FAILURES} failures; last: ${failureText(r)}`;
  }
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Per-segment push latency: serial calls as the archiver makes them when it keeps up (one .ready
// file at a time), rows interleaved per segment.

export async function pushLatency(bench: Bench, rows: Row[], names: readonly string[]): Promise<RowResult[]> {
  const results = new Map(rows.map((row) => [row.id, newResult(row, names[0]!, 'push')]));
  const runnable = rows.filter((row) => !row.unavailable);
  for (const [i, name] of names.entries()) {
    // A different row goes first for every segment, so drift in machine load hits every row alike.
    for (const row of rotate(runnable, i)) {
      const result = results.get(row.id)!;
      if (result.aborted) continue;
      // As the archiver sees it: this segment, and only it, is ready.
      const status = join(row.dataDir, 'pg_wal', 'archive_status');
      await writeFile(join(status, `${name}.ready`), '');
      const r = await run({ command: row.pushCommand!(name), cwd: row.dataDir, env: row.env });
      if (record(result, name, r)) await rename(join(status, `${name}.ready`), join(status, `${name}.done`));
      else await rm(join(status, `${name}.ready`), { force: true });
    }
    if ((i + 1) % 8 === 0 || i === names.length - 1) bench.log(`  push latency: ${i + 1}/${names.length} segments`);
  }
  return rows.map((row) => results.get(row.id)!);
}

/** What a row's bucket (or archive directory) holds per segment. */
export async function storedBytes(bench: Bench, row: Row, names: readonly string[], archiveDir?: string): Promise<StoredSummary> {
  const sizes = new Map<string, number>();
  if (archiveDir) {
    for (const f of await readdir(archiveDir)) if (/^[0-9A-F]{24}$/.test(f)) sizes.set(f, (await stat(join(archiveDir, f))).size);
  } else {
    for (const [name, size] of await bench.s3.segmentSizes(row.bucket!)) sizes.set(name, size);
  }
  const perSegment: Record<string, number> = {};
  const kib = (list: string[]): number => (list.length ? list.reduce((a, n) => a + (sizes.get(n) ?? 0), 0) / list.length / 1024 : 0);
  const present = names.filter((n) => sizes.has(n));
  for (const n of present) perSegment[n] = sizes.get(n)!;
  const meanKiB = kib(present);
  return {
    perSegment,
    meanKiB,
    loadMeanKiB: kib(present.filter((n) => !bench.wal.idleNames.has(n))),
    idleMeanKiB: kib(present.filter((n) => bench.wal.idleNames.has(n))),
    ratio: meanKiB > 0 ? bench.wal.segmentBytes / 1024 / meanKiB : 0,
    missing: names.length - present.length,
  };
}

// ---------------------------------------------------------------------------------------------
// Background processes: their CPU and memory are the row's cost too.

/** A detached background process: walbridge's pusher or fetcher, pgBackRest's async archive-push/get. */
// walbridge's pusher and fetcher run as `node …/bin/node/walbridge.mjs pusher|fetcher …`; pgBackRest's async workers carry `:async`.
const BACKGROUND = /\bwalbridge(\.mjs)? (pusher|fetcher)\b|:async\b/;
const TICKS_PER_SECOND = 100; // Linux's USER_HZ on every architecture it reports /proc times in

/**
 * Samples, every 100 ms until stop(), the background processes of the row living under `home`
 * (working directory or command line): the CPU each had used when last seen, and its peak RSS
 * (VmHWM). stop() is meant for after they exited; the last 100 ms before an exit go unseen.
 */
export function watchBackground(home: string): { stop(): Promise<BackgroundUse> } {
  const seen = new Map<number, { cpu: number; hwmKiB: number }>();
  const sample = async (): Promise<void> => {
    for (const entry of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0/g, ' ');
        if (!BACKGROUND.test(cmdline)) continue;
        const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => '');
        if (!cmdline.includes(home) && cwd !== home && !cwd.startsWith(`${home}/`)) continue;
        const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const cpu = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
        const hwm = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${entry}/status`, 'utf8'));
        const before = seen.get(Number(entry));
        seen.set(Number(entry), { cpu: Math.max(cpu, before?.cpu ?? 0), hwmKiB: Math.max(Number(hwm?.[1] ?? 0), before?.hwmKiB ?? 0) });
      } catch {
        /* gone meanwhile */
      }
    }
  };
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      await sample();
      await sleep(100);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      const all = [...seen.values()];
      return { processes: all.length, cpuSeconds: all.reduce((a, p) => a + p.cpu, 0), peakRssKiB: Math.max(0, ...all.map((p) => p.hwmKiB)) };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Burst: the archiver's loop over a backlog of .ready files.

/**
 * pg_wal holds every segment with its .ready file. Like PostgreSQL's archiver: call the
 * command for the oldest .ready segment; on exit 0 rename .ready to .done; on failure wait 1 s
 * and call it again (three failures end the row).
 */
export async function burst(row: Row, names: readonly string[]): Promise<RowResult> {
  const result = newResult(row, names[0]!, 'push');
  if (row.unavailable) return result;
  const status = join(row.dataDir, 'pg_wal', 'archive_status');
  const started = performance.now();
  for (const name of names) {
    for (;;) {
      const r = await run({ command: row.pushCommand!(name), cwd: row.dataDir, env: row.env });
      if (record(result, name, r)) {
        await rename(join(status, `${name}.ready`), join(status, `${name}.done`));
        break;
      }
      if (result.aborted) return result;
      await sleep(1000);
    }
  }
  result.totalSeconds = (performance.now() - started) / 1000;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Restore: the startup process asks for one segment after the other.

/**
 * As in archive recovery: remove pg_wal/RECOVERYXLOG, call restore_command for the next
 * segment, take the file. Here "take" is a rename out of the way (replay costs nothing), and
 * the restored bytes are compared with the originals after the row, outside the timing.
 */
export async function restore(row: Row, names: readonly string[], originals: Map<string, string>): Promise<RowResult> {
  const result = newResult(row, names[0]!, 'fetch');
  if (row.unavailable) return result;
  const target = join(row.dataDir, RESTORE_TARGET);
  const keptDir = join(row.dataDir, '..', 'restored');
  await rm(keptDir, { recursive: true, force: true });
  await mkdir(keptDir);
  const started = performance.now();
  for (const name of names) {
    await rm(target, { force: true });
    const r = await run({ command: row.fetchCommand!(name), cwd: row.dataDir, env: row.env });
    if (!record(result, name, r)) {
      // In recovery a failed restore_command ends recovery: nothing later would be asked for.
      result.aborted = `${name}: ${failureText(r)}`;
      return result;
    }
    if (!existsSync(target)) {
      result.aborted = `${name}: exit 0 but ${RESTORE_TARGET} is missing`;
      return result;
    }
    await rename(target, join(keptDir, name));
  }
  result.totalSeconds = (performance.now() - started) / 1000;
  let verified = 0;
  for (const name of names) {
    if ((await sha256(join(keptDir, name))) === originals.get(name)) verified++;
    else result.failures.push(`${name}: restored bytes differ from the original`);
  }
  result.verified = verified;
  await rm(keptDir, { recursive: true, force: true });
  return result;
}

export async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// The waiting fetch (walbridge only: pgBackRest and barman-cloud answer "not found" at once and
// leave the waiting to PostgreSQL's retry loop).

export interface WaitingSample {
  /** Pickup: push exit → %p appears (negative if it appeared first). Failover: trigger exit → fetch exit. */
  ms: number;
  /** Pickup: push exit → fetch exit. */
  exitMs?: number;
  fetchExitCode: number | null;
  fetchPeakRssKiB?: number;
  ok: boolean;
}

export interface WaitingResult {
  unavailable?: string;
  pickup: WaitingSample[];
  failover: WaitingSample[];
  failures: string[];
  pollSettings: string;
}

export interface WaitingRows {
  /** Pushes into the pickup namespace. */
  pickupPush: Row;
  /** Waits in the pickup namespace. */
  pickupFetch: Row;
  /** Pushes the failover namespace's first segment (so it has an identity). */
  failoverPush: Row;
  /** Waits in the failover namespace for a segment that never comes. */
  failoverFetch: Row;
  /** `walbridge` with the failover namespace's environment. */
  walbridgeBin: string;
}

/** How long the fetch waits before the segment lands or the trigger is written: ~1 s, jittered so polls fall at every phase. */
const waitBeforeEventMs = (): number => 1000 + Math.random() * 400;

export async function waitingFetch(rows: WaitingRows, names: readonly string[], tries: number): Promise<WaitingResult> {
  const out: WaitingResult = {
    pickup: [],
    failover: [],
    failures: [],
    pollSettings: 'archive-fetch defaults (--poll-interval 0.05, --max-poll-interval 0.25)',
  };
  const first = await run({ command: rows.failoverPush.pushCommand!(names[0]!), cwd: rows.failoverPush.dataDir, env: rows.failoverPush.env });
  if (first.exitCode !== 0) throw new Error(`waiting fetch setup: push into the failover namespace failed: ${failureText(first)}`);
  const absent = names[1]!;
  const trigger = (action: string): Promise<RunResult> =>
    run({ command: `${shq(rows.walbridgeBin)} trigger ${action}`, cwd: rows.failoverFetch.dataDir, env: rows.failoverFetch.env });

  for (let k = 0; k < tries; k++) {
    // --- pickup: the segment lands while the fetch waits for it.
    const name = names[k + 1]!;
    const target = join(rows.pickupFetch.dataDir, RESTORE_TARGET);
    await rm(target, { force: true });
    const fetch = start({ command: rows.pickupFetch.fetchCommand!(name), cwd: rows.pickupFetch.dataDir, env: rows.pickupFetch.env, timeoutMs: 60_000 });
    await sleep(waitBeforeEventMs());
    const appeared = waitForFile(target, 30_000);
    const push = await run({ command: rows.pickupPush.pushCommand!(name), cwd: rows.pickupPush.dataDir, env: rows.pickupPush.env });
    const fetched = await fetch.done;
    // Exit 0 means the file is there; the watcher reports it within a poll.
    const landedAt = await Promise.race([appeared.catch(() => undefined), sleep(200).then(() => undefined)]);
    const ok = push.exitCode === 0 && fetched.exitCode === 0 && landedAt !== undefined;
    if (!ok) out.failures.push(`pickup ${name}: push ${failureText(push)}; fetch ${failureText(fetched)}`);
    out.pickup.push({
      // Negative when the fetch saw the object before the push had finished verifying it.
      ms: landedAt !== undefined ? landedAt - push.exitedAt : NaN,
      exitMs: fetched.exitedAt - push.exitedAt,
      fetchExitCode: fetched.exitCode,
      fetchPeakRssKiB: fetched.peakRssKiB,
      ok,
    });

    // --- failover: `walbridge trigger fast` while the fetch waits for a segment that never comes.
    // recovery.signal rewritten now: this "standby" is set up before the trigger, so it obeys it.
    await writeFile(join(rows.failoverFetch.dataDir, 'recovery.signal'), '');
    await chownToClusterUser(join(rows.failoverFetch.dataDir, 'recovery.signal'));
    const waiting = start({
      command: rows.failoverFetch.fetchCommand!(absent),
      cwd: rows.failoverFetch.dataDir,
      env: rows.failoverFetch.env,
      timeoutMs: 60_000,
    });
    await sleep(waitBeforeEventMs());
    const fired = await trigger('fast');
    const ended = await waiting.done;
    const failedOver = fired.exitCode === 0 && ended.exitCode === 1;
    if (!failedOver) out.failures.push(`failover: trigger ${failureText(fired)}; fetch ${failureText(ended)}`);
    out.failover.push({ ms: ended.exitedAt - fired.exitedAt, fetchExitCode: ended.exitCode, fetchPeakRssKiB: ended.peakRssKiB, ok: failedOver });
    const cleared = await trigger('clear');
    if (cleared.exitCode !== 0) throw new Error(`walbridge trigger clear failed: ${failureText(cleared)}`);
    if (out.failures.length > Math.max(3, tries / 2)) {
      out.failures.push('stopped: too many failures');
      break;
    }
  }
  return out;
}

/** performance.now() when `file` exists: fs.watch on its directory, and a 5 ms poll as a fallback. */
function waitForFile(file: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const dir = join(file, '..');
    let done = false;
    const finish = (at?: number): void => {
      if (done) return;
      done = true;
      watcher.close();
      clearInterval(poll);
      clearTimeout(timer);
      if (at === undefined) reject(new Error(`${file} did not appear within ${timeoutMs} ms`));
      else resolve(at);
    };
    const check = (): void => {
      if (existsSync(file)) finish(performance.now());
    };
    const watcher = watch(dir, check);
    const poll = setInterval(check, 5);
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    check();
  });
}

// ---------------------------------------------------------------------------------------------
// The hit path: calls answered from the background work alone.

/**
 * archive-push for files the background pusher has already stored, and archive-fetch --no-wait
 * for segments already in the prefetch spool: the first two calls of each start the background
 * process and are not timed; every later call is timed only once what it needs is there (the
 * pusher's marker, the spooled file), so that only the answer itself is measured.
 */
export async function hitPath(pushRow: Row, fetchRow: Row, names: readonly string[]): Promise<RowResult[]> {
  const push = newResult(pushRow, names[2] ?? names[0]!, 'push');
  const fetch = newResult(fetchRow, names[2] ?? names[0]!, 'fetch');
  // What the harness itself costs a call (spawn, uid switch, sh -c, GNU time): a command that does nothing.
  const floorRow: Row = {
    id: 'hit-floor',
    label: 'harness floor: `true`, spawned the same way (sh -c as postgres, GNU time)',
    tool: 'floor',
    dataDir: pushRow.dataDir,
    env: pushRow.env,
    pushCommand: () => 'true',
  };
  const floor = newResult(floorRow, names[0]!, 'push');
  if (pushRow.unavailable || fetchRow.unavailable || names.length < 4) return [floor, push, fetch];
  for (const name of names.slice(2)) record(floor, name, await run({ command: 'true', cwd: floorRow.dataDir, env: floorRow.env }));
  const status = join(pushRow.dataDir, 'pg_wal', 'archive_status');
  const pushOne = async (name: string, into?: RowResult): Promise<boolean> => {
    const r = await run({ command: pushRow.pushCommand!(name), cwd: pushRow.dataDir, env: pushRow.env });
    const ok = into ? record(into, name, r) : r.exitCode === 0;
    if (ok) await rename(join(status, `${name}.ready`), join(status, `${name}.done`));
    else if (!into) push.aborted = `${name}: ${failureText(r)}`;
    return ok;
  };
  // The archiver's call pushes the oldest ready file itself: the first two calls start the pusher and go through Node.
  if (!(await pushOne(names[0]!)) || !(await pushOne(names[1]!))) return [floor, push, fetch];
  const pushed = join(pushRow.dataDir, 'pg_wal', 'walbridge', 'pushed');
  const marked = async (name: string) => (await stat(join(pushed, name)).catch(() => undefined))?.size;
  for (const name of names.slice(2)) {
    if (!(await until(async () => ((await marked(name)) ?? 0) > 0, 120_000))) {
      push.aborted = `the pusher did not mark ${name} within 120 s`;
      break;
    }
    if (!(await pushOne(name, push)) && push.aborted) break;
  }

  const target = join(fetchRow.dataDir, RESTORE_TARGET);
  const prefetch = join(fetchRow.dataDir, 'pg_wal', 'walbridge', 'prefetch');
  const spooled = async (name: string) => {
    for (const dir of await readdir(prefetch).catch(() => [] as string[])) if (existsSync(join(prefetch, dir, name))) return true;
    return false;
  };
  for (const [i, name] of names.entries()) {
    if (i >= 2 && !(await until(() => spooled(name), 120_000))) {
      fetch.aborted = `the fetcher did not spool ${name} within 120 s`;
      break;
    }
    await rm(target, { force: true });
    const r = await run({ command: fetchRow.fetchCommand!(name), cwd: fetchRow.dataDir, env: fetchRow.env });
    if (i < 2 ? r.exitCode !== 0 : !record(fetch, name, r)) {
      fetch.aborted ??= `${name}: ${failureText(r)}`;
      break;
    }
  }
  return [floor, push, fetch];
}

async function until(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}
