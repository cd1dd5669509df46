/** The Markdown summary of one run: medians per row, and walbridge ÷ best peer. */
import type { LossResult } from './loss.js';
import type { RowResult, WaitingResult } from './phases.js';
import { max, median, quantile } from './stats.js';

export interface Machine {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  kernel: string;
  node: string;
  /** 1-minute load average at the start and at the end of the run. */
  loadAverage: number[];
}

export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  runtimeSeconds: number;
  mode: 'full' | 'quick';
  machine: Machine;
  versions: Record<string, string>;
  wal: { description: string; segments: number; idleSegments: number; generationSeconds: number };
  walbridgeFeatures: { codecs: string[]; pushConcurrency: boolean; prefetch: boolean };
  push: RowResult[];
  burst: RowResult[];
  restore: RowResult[];
  /** Calls answered from the background work alone (absent in runs before it was measured). */
  hit?: RowResult[];
  waiting: WaitingResult;
  loss?: LossResult;
  notes: string[];
}

const PEERS = new Set(['pgbackrest', 'barman']);

const okMs = (r: RowResult): number[] => r.samples.filter((s) => s.ok).map((s) => s.wallMs);
const rssMiB = (r: RowResult): number | undefined => {
  const m = max(r.samples.map((s) => s.peakRssKiB ?? 0));
  return m ? m / 1024 : undefined;
};

const p90 = (r: RowResult): number | undefined => (okMs(r).length ? quantile(okMs(r), 0.9) : undefined);
/** CPU seconds per segment: the calls' own (GNU time) and the background processes' (sampled). */
const cpuPerSegment = (r: RowResult, segments: number): number | undefined => {
  const calls = r.samples.filter((s) => s.ok && s.cpuMs !== undefined);
  if (calls.length === 0 || segments === 0) return undefined;
  return (calls.reduce((a, s) => a + s.cpuMs!, 0) / 1000 + (r.background?.cpuSeconds ?? 0)) / segments;
};
const backgroundRss = (r: RowResult): number | undefined => (r.background?.processes ? r.background.peakRssKiB / 1024 : undefined);

const fmt = (v: number | undefined, digits = 0): string => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits));
const ratioText = (v: number | undefined, best: number | undefined): string =>
  v === undefined || best === undefined || best === 0 ? '–' : (v / best).toFixed(2);

/** Lowest value among the peers' rows (pgBackRest, barman-cloud). */
function bestPeer(rows: RowResult[], value: (r: RowResult) => number | undefined): { row?: RowResult; value?: number } {
  let best: { row?: RowResult; value?: number } = {};
  for (const r of rows) {
    if (!PEERS.has(r.tool) || !usable(r)) continue;
    const v = value(r);
    if (v !== undefined && !Number.isNaN(v) && (best.value === undefined || v < best.value)) best = { row: r, value: v };
  }
  return best;
}

function bestWalbridge(rows: RowResult[], value: (r: RowResult) => number | undefined): { row?: RowResult; value?: number } {
  let best: { row?: RowResult; value?: number } = {};
  for (const r of rows) {
    if (r.tool !== 'walbridge' || !usable(r)) continue;
    const v = value(r);
    if (v !== undefined && !Number.isNaN(v) && (best.value === undefined || v < best.value)) best = { row: r, value: v };
  }
  return best;
}

const usable = (r: RowResult): boolean => !r.unavailable && !r.aborted;

function status(r: RowResult): string {
  if (r.unavailable) return r.unavailable;
  if (r.aborted) return `failed: ${r.aborted}`;
  const notes = [...(r.failures.length ? [`${r.failures.length} failed calls`] : []), ...r.warnings.map((w) => `warning: ${w}`)];
  return notes.join('; ').replace(/\|/g, '/');
}

const pushP50 = (r: RowResult): number | undefined => median(okMs(r));
const storedKiB = (r: RowResult): number | undefined => (r.stored && r.stored.missing === 0 ? r.stored.meanKiB : undefined);
const totalS = (r: RowResult): number | undefined => r.totalSeconds;

export function renderMarkdown(res: BenchResults): string {
  const out: string[] = [];
  const m = res.machine;
  const n = res.wal.segments;
  out.push(`# walbridge benchmark, ${res.startedAt.slice(0, 10)} (${res.mode} run)`);
  out.push('');
  out.push(
    `Machine: ${m.cpus} CPUs (${m.cpuModel}), ${m.memGiB.toFixed(1)} GiB RAM, Linux ${m.kernel}, Node ${m.node}. ` +
      `Started ${res.startedAt}, ran ${(res.runtimeSeconds / 60).toFixed(1)} min; ` +
      `1-min load average ${m.loadAverage.map((l) => l.toFixed(1)).join(' at the start, ')} at the end (other work on the machine shows here).`,
  );
  out.push(
    `Versions: ${Object.entries(res.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  out.push(`WAL: ${n} segments of 16 MiB (${n - res.wal.idleSegments} under load, ${res.wal.idleSegments} idle); ${res.wal.description}.`);
  out.push(
    'Server: Ceph radosgw (memstore OSD) on 127.0.0.1, TLS with a self-signed CA every client verifies; one bucket per row. ' +
      'Every call is one process, `/bin/sh -c` as the postgres user, timed from spawn to exit. ' +
      '"÷ best peer" divides by the best pgBackRest or barman-cloud row (lower is better; the floor is no peer).',
  );
  out.push('');

  // --- push latency + stored bytes
  const bestPushPeer = bestPeer(res.push, pushP50);
  const bestStoredPeer = bestPeer(res.push, storedKiB);
  out.push(`## Push, one segment per call (${n} segments, serial as the archiver calls; rows interleaved per segment)`);
  out.push('');
  out.push('| row | p50 ms | p90 ms | ÷ best peer | stored KiB/seg | 16 MiB ÷ stored | idle seg KiB | ÷ best peer (bytes) | peak RSS MiB | notes |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of res.push) {
    const ms = okMs(r);
    out.push(
      `| ${r.label} | ${fmt(median(ms))} | ${fmt(quantile(ms, 0.9))} | ${ratioText(pushP50(r), bestPushPeer.value)} | ` +
        `${fmt(storedKiB(r), 0)} | ${r.stored && storedKiB(r) ? r.stored.ratio.toFixed(2) : '–'} | ${r.stored ? fmt(r.stored.idleMeanKiB, 1) : '–'} | ` +
        `${ratioText(storedKiB(r), bestStoredPeer.value)} | ${fmt(rssMiB(r))} | ${status(r)} |`,
    );
  }
  out.push('');

  // --- burst
  const bestBurstPeer = bestPeer(res.burst, totalS);
  out.push(`## Burst: ${n} ready segments pushed the archiver's way (call, then .ready → .done)`);
  out.push('');
  out.push('| row | total s | ÷ best peer | per call p50 ms | p90 ms | call peak RSS MiB | background peak RSS MiB | CPU s per segment | notes |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of res.burst) {
    out.push(
      `| ${r.label} | ${fmt(r.totalSeconds, 1)} | ${ratioText(r.totalSeconds, bestBurstPeer.value)} | ${fmt(median(okMs(r)))} | ${fmt(p90(r))} | ${fmt(rssMiB(r))} | ${fmt(backgroundRss(r))} | ${fmt(cpuPerSegment(r, n), 3)} | ${status(r)} |`,
    );
  }
  out.push('');

  // --- restore
  const bestRestorePeer = bestPeer(res.restore, totalS);
  out.push(`## Restore: ${n} segments, one restore_command per segment, in order`);
  out.push('');
  out.push('| row | total s | ÷ best peer | per call p50 ms | p90 ms | call peak RSS MiB | background peak RSS MiB | CPU s per segment | verified | notes |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of res.restore) {
    const verified = r.verified === undefined ? '–' : `${r.verified}/${n}`;
    out.push(
      `| ${r.label} | ${fmt(r.totalSeconds, 1)} | ${ratioText(r.totalSeconds, bestRestorePeer.value)} | ${fmt(median(okMs(r)))} | ${fmt(p90(r))} | ${fmt(rssMiB(r))} | ${fmt(backgroundRss(r))} | ${fmt(cpuPerSegment(r, n), 3)} | ${verified} | ${status(r)} |`,
    );
  }
  out.push('');
  out.push(
    'CPU s per segment: user + system time of the calls (GNU time) and of the detached background processes (walbridge pusher/fetcher, pgBackRest async; sampled every 100 ms from /proc until they exit), over the segments.',
  );
  out.push('');

  // --- the hit path
  if (res.hit?.length) {
    out.push('## Hit path: calls answered from the background work alone');
    out.push('');
    out.push(
      "Each call timed once what it needs is there (the pusher's marker, the spooled segment); the first two calls, which start the background process, are not timed. The harness floor is `true` run the way every call is (spawned, `sh -c` as postgres, under GNU time): what any call pays here before it does anything.",
    );
    out.push('');
    out.push('| row | calls | p50 ms | p90 ms | max ms | peak RSS MiB | CPU ms p50 | notes |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---|');
    for (const r of res.hit) {
      const ms = okMs(r);
      const cpu = r.samples.filter((s) => s.ok && s.cpuMs !== undefined).map((s) => s.cpuMs!);
      out.push(
        `| ${r.label} | ${ms.length} | ${fmt(median(ms))} | ${fmt(p90(r))} | ${fmt(max(ms))} | ${fmt(rssMiB(r), 1)} | ${fmt(cpu.length ? median(cpu) : undefined)} | ${status(r)} |`,
      );
    }
    out.push('');
  }

  // --- waiting fetch
  const w = res.waiting;
  out.push('## Waiting fetch (walbridge archive-fetch; pgBackRest and barman-cloud have none)');
  out.push('');
  if (w.unavailable) {
    out.push(w.unavailable);
  } else {
    out.push('| measure | median ms | p10 ms | p90 ms | ok tries | fetch peak RSS MiB |');
    out.push('|---|---:|---:|---:|---:|---:|');
    const line = (label: string, samples: typeof w.pickup, pick: (s: (typeof w.pickup)[number]) => number | undefined): void => {
      const ok = samples.filter((s) => s.ok);
      const v = ok.map(pick).filter((x): x is number => x !== undefined && !Number.isNaN(x));
      const rss = max(ok.map((s) => s.fetchPeakRssKiB ?? 0));
      out.push(
        `| ${label} | ${fmt(median(v))} | ${fmt(quantile(v, 0.1))} | ${fmt(quantile(v, 0.9))} | ${ok.length}/${samples.length} | ${rss ? fmt(rss / 1024) : '–'} |`,
      );
    };
    line('pickup: push exits 0 → %p written', w.pickup, (s) => s.ms);
    line('pickup: push exits 0 → archive-fetch exits 0', w.pickup, (s) => s.exitMs);
    line('failover: `walbridge trigger fast` exits → archive-fetch exits 1', w.failover, (s) => s.ms);
    out.push('');
    out.push(`The fetch waits ~1-1.4 s before the segment lands or the trigger is written; polling: ${w.pollSettings}.`);
    if (w.failures.length) out.push(`Failures: ${w.failures.slice(0, 5).join('; ')}`);
  }
  out.push('');

  // --- loss window
  if (res.loss) {
    const l = res.loss;
    out.push('## Loss window: kill -9 of the primary under load, then a smart failover');
    out.push('');
    out.push(
      `archive_timeout = 60 s; load: ${l.load} (each probe notes when each of its commits was acknowledged), for ~${l.loadSeconds}-${l.loadSeconds + 2} s, then kill -9 of the primary and \`walbridge trigger smart\`. "stream" adds \`walbridge stream\` (every ${l.streamIntervalSeconds} s). Loss window: from the oldest acknowledged commit missing on the promoted standby to the kill.`,
    );
    out.push('');
    out.push(
      '| mode | runs | acknowledged commits (median) | missing on the promoted standby (median / max) | loss window ms (median / max) | failover s (median) |',
    );
    out.push('|---|---:|---:|---:|---:|---:|');
    for (const mode of ['archive', 'stream'] as const) {
      const runs = l.runs.filter((r) => r.mode === mode && !r.error);
      const failed = l.runs.filter((r) => r.mode === mode && r.error);
      const label = mode === 'archive' ? 'whole-file archiving only' : 'with walbridge stream';
      out.push(
        `| ${label} | ${runs.length}${failed.length ? ` (+${failed.length} failed: ${failed[0]!.error})` : ''} | ${fmt(median(runs.map((r) => r.acknowledged)))} | ${fmt(median(runs.map((r) => r.missing)))} / ${fmt(max(runs.map((r) => r.missing)))} | ${fmt(median(runs.map((r) => r.windowMs)))} / ${fmt(max(runs.map((r) => r.windowMs)))} | ${fmt(median(runs.map((r) => r.failoverSeconds)), 1)} |`,
      );
    }
    out.push('');
  }

  // --- summary ratios
  out.push('## walbridge ÷ best peer (below 1: walbridge is better)');
  out.push('');
  out.push('| measure | best walbridge row | value | best peer row | value | ratio |');
  out.push('|---|---|---:|---|---:|---:|');
  const summary = (label: string, rows: RowResult[], value: (r: RowResult) => number | undefined, unit: string, digits: number): void => {
    const wb = bestWalbridge(rows, value);
    const peer = bestPeer(rows, value);
    out.push(
      `| ${label} | ${wb.row?.label ?? '–'} | ${fmt(wb.value, digits)} ${unit} | ${peer.row?.label ?? '–'} | ${fmt(peer.value, digits)} ${unit} | ${ratioText(wb.value, peer.value)} |`,
    );
  };
  summary('push latency p50', res.push, pushP50, 'ms', 0);
  summary('stored bytes per segment', res.push, storedKiB, 'KiB', 0);
  summary(`burst of ${n}`, res.burst, totalS, 's', 1);
  summary(`restore of ${n}`, res.restore, totalS, 's', 1);
  out.push('');

  if (res.notes.length) {
    out.push('## Notes');
    out.push('');
    for (const note of res.notes) out.push(`- ${note}`);
    out.push('');
  }
  out.push('## Commands (as archive_command / restore_command would run them)');
  out.push('');
  const seen = new Set<string>();
  for (const [phase, rows] of [
    ['push', res.push],
    ['burst', res.burst],
    ['restore', res.restore],
    ['hit', res.hit ?? []],
  ] as const) {
    for (const r of rows) {
      const command = r.command.replace(/--config=\S+/, '--config=…').replace(/\/\S*\/bin\//, 'bin/');
      const line = command + (r.settings ? ` (config: ${r.settings})` : '');
      if (!command || seen.has(line)) continue;
      seen.add(line);
      out.push(`- ${phase} ${r.id}: \`${command}\`${r.settings ? ` with ${r.settings}` : ''}`);
    }
  }
  out.push('');
  return out.join('\n');
}
