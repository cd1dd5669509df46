/**
 * `npm run bench`: walbridge against pgBackRest and barman-cloud on one machine, in one run,
 * on the same real WAL and the same S3 server (Ceph radosgw over TLS).
 *
 * Phases: generate WAL with pgbench → per-segment push latency (rows interleaved per segment)
 * and stored bytes → restore of every segment → archiver-style burst → waiting fetch pickup
 * and failover. Buckets are emptied and RGW's garbage collector run between phases, because
 * the memstore OSD keeps every object (deleted ones too, until gc) in RAM.
 */
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { readlinkSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PG_BIN, chownToClusterUser, makeSharedDir, removeSharedDir } from '../../test/servers/postgres.js';
import { startRadosgw, type Radosgw } from '../../test/servers/radosgw.js';
import { burst, hitPath, pushLatency, restore, sha256, storedBytes, waitingFetch, watchBackground, type RowResult, type WaitingResult } from './phases.js';
import { renderMarkdown, type BenchResults } from './report.js';
import {
  barmanRow,
  createStanza,
  floorRow,
  makeDataDir,
  ownedDir,
  pgbackrestRow,
  probeWalbridge,
  walbridgeRow,
  walbridgeUnavailable,
  type Bench,
  type Row,
} from './rows.js';
import { lossWindow } from './loss.js';
import { killAllRunning, setRssReportDir } from './run.js';
import { BenchS3 } from './s3.js';
import { sleep } from './stats.js';
import { generatePgbenchWal } from './wal.js';

interface Options {
  quick: boolean;
  segments: number;
  idleSegments: number;
  scale: number;
  tries: number;
  pushConcurrency: number;
  prefetch: number;
  lossRuns: number;
  outDir: string;
}

const USAGE = `usage: npm run bench -- [--quick] [--segments N] [--tries N] [--scale N]
                        [--push-concurrency N] [--prefetch N] [--loss-runs N] [--out DIR]
  --quick              smoke run: 12 segments (pgbench -s 10), 3 tries of pickup/failover
  --segments N         segments per phase (default 64; 4 of them idle)
  --tries N            waiting-fetch pickup and failover tries (default 20)
  --scale N            pgbench -i -s (default 30)
  --push-concurrency N walbridge lookahead in the burst (default 4, walbridge's default)
  --prefetch N         walbridge restore prefetch (default 8, walbridge's default)
  --loss-runs N        kill -9 runs per mode in the loss-window phase (default 3; quick 1)
  --out DIR            where results go (default bench/results)`;

const REPO_ROOT = findRepoRoot();

/** The walbridge checkout this benchmark belongs to (it runs from bench/.build/...). */
function findRepoRoot(): string {
  let dir = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 8; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'walbridge') return dir;
    } catch {
      /* keep climbing */
    }
    dir = resolve(dir, '..');
  }
  throw new Error('cannot find the walbridge repository above the benchmark');
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    quick,
    segments: quick ? 12 : 64,
    idleSegments: 4,
    // Small tables stop making full-page images once every page was touched: keep -s ≥ 10.
    scale: quick ? 10 : 30,
    tries: quick ? 3 : 20,
    // walbridge's own defaults
    pushConcurrency: 4,
    prefetch: 8,
    lossRuns: quick ? 1 : 3,
    outDir: join(REPO_ROOT, 'bench', 'results'),
  };
  const numeric: Record<string, keyof Options> = {
    '--segments': 'segments',
    '--tries': 'tries',
    '--scale': 'scale',
    '--push-concurrency': 'pushConcurrency',
    '--prefetch': 'prefetch',
    '--loss-runs': 'lossRuns',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--quick') continue;
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (arg === '--out') {
      o.outDir = resolve(argv[++i] ?? '');
      continue;
    }
    const key = numeric[arg];
    const value = Number(argv[i + 1]);
    if (!key || !Number.isInteger(value) || value < 1) {
      console.error(`bench: bad argument ${arg}\n${USAGE}`);
      process.exit(2);
    }
    (o as unknown as Record<string, number>)[key] = value;
    i++;
  }
  if (o.segments < o.idleSegments + 4) throw new Error(`--segments must be at least ${o.idleSegments + 4}`);
  if (o.tries + 2 > o.segments) o.tries = o.segments - 2; // each pickup try needs a segment of its own
  return o;
}

const t0 = Date.now();
const log = (line: string): void => console.log(`[bench +${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`);

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  // The SDK's multi-line notice about Node 20 (the harnesses' S3 clients) is noise here.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  // Our children first, then the harnesses' own exit handlers stop radosgw and PostgreSQL.
  process.on('exit', killAllRunning);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      console.error(`bench: ${sig}, cleaning up`);
      killAllRunning();
      process.exit(130);
    });
  }
  const startedAt = new Date();
  const loadAtStart = os.loadavg()[0]!;
  log(`${opts.quick ? 'quick' : 'full'} run: ${opts.segments} segments, ${opts.tries} waiting-fetch tries`);

  const workDir = await makeSharedDir('bench');
  setRssReportDir(await ownedDir(join(workDir, 'rss')));
  let rgw: Radosgw | undefined;
  let s3: BenchS3 | undefined;
  try {
    const walbridge = await probeWalbridge(REPO_ROOT, workDir);
    log(
      `walbridge ${walbridge.version}: codecs ${walbridge.codecs.join(', ')}; --push-concurrency ${walbridge.pushConcurrency ? 'yes' : 'missing'}; --prefetch ${walbridge.prefetch ? 'yes' : 'missing'}`,
    );

    log('starting radosgw (TLS) and generating WAL');
    const rgwStarted = startRadosgw({ tls: true, memstoreBytes: (opts.quick ? 3 : 8) * 1024 ** 3 });
    const wal = await generatePgbenchWal({ segments: opts.segments, idleSegments: opts.idleSegments, scale: opts.scale, log: (l) => log(`wal: ${l}`) });
    rgw = await rgwStarted;
    s3 = new BenchS3(rgw);
    log(`WAL ready in ${wal.seconds.toFixed(0)} s (${wal.names[0]} … ${wal.names.at(-1)}); radosgw ready`);
    const caFile = join(workDir, 'ca.pem');
    await copyFile(rgw.caFile!, caFile);
    await chownToClusterUser(caFile);
    const bench: Bench = { workDir, repoRoot: REPO_ROOT, rgw, s3, caFile, wal, walbridge, log };
    const names = wal.names;
    const originals = new Map<string, string>();
    for (const name of names) originals.set(name, await sha256(join(wal.dir, name)));

    // --- per-segment push latency, then stored bytes
    log('phase 1/6: push latency');
    const pushRows = await makePushRows(bench);
    const push = await pushLatency(bench, pushRows.rows, names);
    for (const row of pushRows.rows) await waitForDetached(bench, row);
    for (const [i, row] of pushRows.rows.entries()) {
      if (row.unavailable) continue;
      push[i]!.stored = await storedBytes(bench, row, names, row.tool === 'floor' ? pushRows.floorArchive : undefined);
    }
    const keptForRestore = new Set(['wb-zstd', 'pgb-zst', 'barman-none']);
    await dropBuckets(
      bench,
      pushRows.rows.filter((r) => !keptForRestore.has(r.id)),
    );

    // --- restore, from what the push phase stored
    log('phase 2/6: restore');
    const restoreRows = await makeRestoreRows(bench, pushRows.floorArchive, opts);
    const restored: RowResult[] = [];
    for (const row of restoreRows) {
      if (!row.unavailable) log(`  restore: ${row.label}`);
      const background = row.dataDir ? watchBackground(resolve(row.dataDir, '..')) : undefined;
      const result = await restore(row, names, originals);
      await waitForDetached(bench, row);
      result.background = await background?.stop();
      restored.push(result);
    }
    await dropBuckets(
      bench,
      pushRows.rows.filter((r) => keptForRestore.has(r.id)),
    );

    // --- bursts, one row at a time (a background uploader must not get other rows' time for free)
    log('phase 3/6: burst');
    const bursts: RowResult[] = [];
    for (const make of burstRowMakers(bench, opts)) {
      const row = await make();
      if (!row.unavailable) log(`  burst: ${row.label}`);
      const background = row.dataDir ? watchBackground(resolve(row.dataDir, '..')) : undefined;
      const result = await burst(row, names);
      await waitForDetached(bench, row);
      result.background = await background?.stop();
      bursts.push(result);
      await dropBuckets(bench, [row]);
    }

    // --- the hit path: calls answered from the pusher's markers and the prefetch spool alone
    log('phase 4/6: hit path');
    const hitNames = names.slice(0, Math.min(names.length, 24));
    const hitBucket = await prepareBucket(bench, 'hit-wb');
    const hitHome = async (id: string) => ownedDir(join(bench.workDir, 'hit', id));
    const hitPush = walbridgeRow(bench, {
      id: 'wb-hit-push',
      label: 'walbridge archive-push, file already stored by the pusher (marker)',
      bucket: hitBucket,
      namespace: 'hit',
      dataDir: await makeDataDir(bench, join(await hitHome('push'), 'data'), { segments: hitNames, ready: true }),
      pushConcurrency: opts.pushConcurrency,
    });
    const hitFetch = walbridgeRow(bench, {
      id: 'wb-hit-fetch',
      label: `walbridge archive-fetch --no-wait, segment already spooled (--prefetch ${opts.prefetch})`,
      bucket: hitBucket,
      namespace: 'hit',
      dataDir: await makeDataDir(bench, join(await hitHome('fetch'), 'data'), { recoverySignal: true }),
      prefetch: opts.prefetch,
    });
    const hits = await hitPath(hitPush, hitFetch, hitNames);
    for (const row of [hitPush, hitFetch]) await waitForDetached(bench, row);
    await dropBuckets(bench, [hitPush]);

    // --- waiting fetch
    log('phase 5/6: waiting fetch pickup and failover');
    const waiting = await measureWaiting(bench, opts.tries);

    // --- loss window of a smart failover after kill -9, with and without walbridge stream
    log('phase 6/6: loss window after kill -9 of the primary');
    const loss = await lossWindow(bench, opts.lossRuns, opts.quick ? 5 : 20);

    const finishedAt = new Date();
    const results: BenchResults = {
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      runtimeSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
      mode: opts.quick ? 'quick' : 'full',
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
        memGiB: os.totalmem() / 1024 ** 3,
        kernel: os.release(),
        node: process.version,
        loadAverage: [loadAtStart, os.loadavg()[0]!],
      },
      versions: versions(walbridge.version),
      wal: { description: wal.description, segments: names.length, idleSegments: wal.idleNames.size, generationSeconds: wal.seconds },
      walbridgeFeatures: { codecs: walbridge.codecs, pushConcurrency: walbridge.pushConcurrency, prefetch: walbridge.prefetch },
      push,
      burst: bursts,
      restore: restored,
      hit: hits,
      waiting,
      loss,
      notes: notes(opts),
    };
    // Paths of this run's temporary directory say nothing: shorten them in the report.
    for (const r of [...push, ...bursts, ...restored]) r.command = r.command.split(workDir).join('$WORK');
    const markdown = renderMarkdown(results);
    await mkdir(opts.outDir, { recursive: true });
    const stamp = startedAt
      .toISOString()
      .replace(/[:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    const base = join(opts.outDir, `${stamp}-${results.mode}`);
    await writeFile(`${base}.md`, markdown);
    await writeFile(`${base}.json`, JSON.stringify(results, null, 2));
    console.log(`\n${markdown}`);
    log(`written ${base}.md and ${base}.json`);
  } finally {
    s3?.destroy();
    await rgw?.stop().catch((e: Error) => console.error(`bench: stopping radosgw: ${e.message}`));
    await removeSharedDir(workDir).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Rows of each phase

async function prepareBucket(bench: Bench, bucket: string): Promise<string> {
  await bench.s3.createBucket(bucket);
  return bucket;
}

async function makePushRows(bench: Bench): Promise<{ rows: Row[]; floorArchive: string }> {
  const names = bench.wal.names;
  const home = async (id: string): Promise<string> => ownedDir(join(bench.workDir, 'push', id));
  const dataDir = async (id: string): Promise<string> => makeDataDir(bench, join(await home(id), 'data'), { segments: names });
  const floorArchive = await ownedDir(join(bench.workDir, 'push', 'floor-archive'));
  const rows: Row[] = [floorRow({ id: 'floor', label: 'cp + fsync to a local dir (floor)', dataDir: await dataDir('floor'), archiveDir: floorArchive })];
  for (const [codec, label] of [
    ['zstd', 'walbridge zstd (level 3)'],
    ['lz4', 'walbridge lz4'],
    ['gzip', 'walbridge gzip (level 6)'],
    ['none', 'walbridge, no compression'],
  ] as const) {
    const id = `wb-${codec}`;
    rows.push(walbridgeRow(bench, { id, label, bucket: await prepareBucket(bench, `push-${id}`), namespace: id, dataDir: await dataDir(id), codec }));
  }
  for (const [type, level, label] of [
    ['zst', 3, 'pgBackRest sync, zst level 3'],
    ['lz4', 1, 'pgBackRest sync, lz4 level 1'],
    ['none', undefined, 'pgBackRest sync, no compression'],
  ] as const) {
    const id = `pgb-${type}`;
    const row = await pgbackrestRow(bench, {
      id,
      label,
      bucket: await prepareBucket(bench, `push-${id}`),
      dataDir: await dataDir(id),
      compressType: type,
      level,
    });
    await createStanza(row);
    rows.push(row);
  }
  for (const [compression, label] of [
    [undefined, 'barman-cloud, no compression'],
    ['gzip', 'barman-cloud, gzip'],
  ] as const) {
    const id = `barman-${compression ?? 'none'}`;
    rows.push(barmanRow(bench, { id, label, bucket: await prepareBucket(bench, `push-${id}`), dataDir: await dataDir(id), compression }));
  }
  return { rows, floorArchive };
}

async function makeRestoreRows(bench: Bench, floorArchive: string, opts: Options): Promise<Row[]> {
  const dataDir = async (id: string): Promise<string> =>
    makeDataDir(bench, join(await ownedDir(join(bench.workDir, 'restore', id)), 'data'), { recoverySignal: true });
  const wb = (id: string, label: string, prefetch?: number, waiting?: boolean): Promise<Row> =>
    dataDir(id).then((d) => walbridgeRow(bench, { id, label, bucket: 'push-wb-zstd', namespace: 'wb-zstd', dataDir: d, prefetch, waiting }));
  const pgb = (id: string, label: string, asyncProcessMax?: number): Promise<Row> =>
    dataDir(id).then((d) => pgbackrestRow(bench, { id, label, bucket: 'push-pgb-zst', dataDir: d, compressType: 'zst', level: 3, asyncProcessMax }));
  return [
    floorRow({ id: 'floor', label: 'cp + fsync from a local dir (floor)', dataDir: await dataDir('floor'), archiveDir: floorArchive }),
    await wb('wb-zstd', 'walbridge zstd, no prefetch', 0),
    await pgb('pgb-zst', 'pgBackRest archive-get sync (zst)'),
    await wb(`wb-zstd-prefetch${opts.prefetch}`, `walbridge zstd, --prefetch ${opts.prefetch}`, opts.prefetch),
    await wb(
      `wb-zstd-wait-prefetch${opts.prefetch}`,
      `walbridge zstd, waiting (its default restore_command), --prefetch ${opts.prefetch}`,
      opts.prefetch,
      true,
    ),
    await pgb('pgb-zst-async-pm2', 'pgBackRest archive-get async, process-max 2', 2),
    await pgb('pgb-zst-async-pm4', 'pgBackRest archive-get async, process-max 4', 4),
    barmanRow(bench, {
      id: 'barman-none',
      label: 'barman-cloud-wal-restore (uncompressed)',
      bucket: 'push-barman-none',
      dataDir: await dataDir('barman-none'),
    }),
  ];
}

/** Each burst row gets a fresh bucket and a fresh pg_wal full of .ready files, made just before it runs. */
function burstRowMakers(bench: Bench, opts: Options): Array<() => Promise<Row>> {
  const names = bench.wal.names;
  const dataDir = async (id: string): Promise<string> =>
    makeDataDir(bench, join(await ownedDir(join(bench.workDir, 'burst', id)), 'data'), { segments: names, ready: true });
  const bucket = (id: string): Promise<string> => prepareBucket(bench, `burst-${id}`);
  const n = opts.pushConcurrency;
  const wb = (id: string, label: string, codec: string, pushConcurrency?: number) => async (): Promise<Row> => {
    const unavailable = walbridgeUnavailable(bench, { codec, pushConcurrency });
    if (unavailable) return { id, label, tool: 'walbridge', unavailable, dataDir: '', env: {} }; // nothing to prepare
    return walbridgeRow(bench, { id, label, bucket: await bucket(id), namespace: id, dataDir: await dataDir(id), codec, pushConcurrency });
  };
  const pgb = (id: string, label: string, compressType: 'zst' | 'lz4', level: number, processMax: number) => async (): Promise<Row> => {
    const row = await pgbackrestRow(bench, {
      id,
      label,
      bucket: await bucket(id),
      dataDir: await dataDir(id),
      compressType,
      level,
      asyncProcessMax: processMax,
    });
    await createStanza(row);
    return row;
  };
  // Without lookahead a burst is the serial push of phase 1 again: worth its minute only as a stand-in.
  const serial = bench.walbridge.pushConcurrency ? [] : [wb('wb-zstd', 'walbridge zstd, no lookahead (this build has none)', 'zstd')];
  return [
    async () =>
      floorRow({
        id: 'floor',
        label: 'cp + fsync to a local dir (floor)',
        dataDir: await dataDir('floor'),
        archiveDir: await ownedDir(join(bench.workDir, 'burst', 'floor-archive')),
      }),
    ...serial,
    pgb('pgb-lz4-async-pm2', 'pgBackRest async lz4, process-max 2', 'lz4', 1, 2),
    wb(`wb-zstd-lookahead${n}`, `walbridge zstd, --push-concurrency ${n}`, 'zstd', n),
    pgb('pgb-lz4-async-pm4', 'pgBackRest async lz4, process-max 4', 'lz4', 1, 4),
    wb(`wb-lz4-lookahead${n}`, `walbridge lz4, --push-concurrency ${n}`, 'lz4', n),
    pgb('pgb-zst-async-pm2', 'pgBackRest async zst, process-max 2', 'zst', 3, 2),
    pgb('pgb-zst-async-pm4', 'pgBackRest async zst, process-max 4', 'zst', 3, 4),
    async () =>
      barmanRow(bench, {
        id: 'barman-none',
        label: 'barman-cloud, no compression',
        bucket: await bucket('barman-none'),
        dataDir: await dataDir('barman-none'),
      }),
  ];
}

async function measureWaiting(bench: Bench, tries: number): Promise<WaitingResult> {
  const names = bench.wal.names;
  const bucket = await prepareBucket(bench, 'waiting');
  const home = (id: string): Promise<string> => ownedDir(join(bench.workDir, 'waiting', id));
  const pushDir = await makeDataDir(bench, join(await home('push'), 'data'), { segments: names });
  const row = async (id: string, namespace: string, waiting: boolean): Promise<Row> =>
    walbridgeRow(bench, {
      id,
      label: id,
      bucket,
      namespace,
      dataDir: waiting ? await makeDataDir(bench, join(await home(id), 'data'), { recoverySignal: true }) : pushDir,
      codec: 'zstd',
      waiting,
    });
  const result = await waitingFetch(
    {
      pickupPush: await row('pickup-push', 'pickup', false),
      pickupFetch: await row('pickup-fetch', 'pickup', true),
      failoverPush: await row('failover-push', 'failover', false),
      failoverFetch: await row('failover-fetch', 'failover', true),
      walbridgeBin: join(bench.repoRoot, 'bin', 'walbridge'),
    },
    names,
    tries,
  );
  await dropBuckets(bench, [{ bucket } as Row]);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Housekeeping

/** Empty and remove the rows' buckets, then let RGW's garbage collector free the memory. */
async function dropBuckets(bench: Bench, rows: Row[]): Promise<void> {
  const buckets = [...new Set(rows.map((r) => r.bucket).filter((b): b is string => !!b))];
  if (buckets.length === 0) return;
  for (const b of buckets) await bench.s3.removeBucket(b).catch((e: Error) => bench.log(`  (could not remove bucket ${b}: ${e.message})`));
  await bench.rgw.gc();
}

/**
 * Background processes a row left (pgBackRest's async process, walbridge's background pusher)
 * must be gone before the next row runs, or they would steal its CPU. Found by their working
 * directory or command line naming the row's directory. Every call of the row has returned by
 * now, so what is left is idle waiting for more work (walbridge's pusher stays --background-idle
 * seconds): after a short grace it is stopped with SIGTERM.
 */
async function waitForDetached(bench: Bench, row: Row): Promise<void> {
  if (!row.dataDir) return;
  const home = resolve(row.dataDir, '..');
  const started = Date.now();
  let signalled = false;
  for (let pids = await processesUnder(home); pids.length > 0; pids = await processesUnder(home)) {
    const waited = Date.now() - started;
    if (waited > 30_000) {
      bench.log(`  ${row.id}: background processes still running after 30 s; going on`);
      return;
    }
    if (waited > 3_000 && !signalled) {
      signalled = true;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* gone meanwhile */
        }
      }
    }
    await sleep(100);
  }
  if (Date.now() - started > 500)
    bench.log(`  ${row.id}: waited ${((Date.now() - started) / 1000).toFixed(1)} s for its background processes${signalled ? ' (stopped idle ones)' : ''}`);
}

async function processesUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cwd = readlinkSync(`/proc/${entry}/cwd`);
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0/g, ' ');
      if (cwd === dir || cwd.startsWith(`${dir}/`) || cmdline.includes(dir)) pids.push(Number(entry));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids;
}

function versions(walbridgeVersion: string): Record<string, string> {
  const first = (cmd: string, args: string[], pattern: RegExp): string => {
    try {
      const text = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return pattern.exec(text)?.[1] ?? text.trim().split('\n')[0]!;
    } catch {
      return 'unknown';
    }
  };
  let rev = 'unknown';
  try {
    rev = execFileSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no', '--', 'src'], { encoding: 'utf8' }).trim();
    if (dirty) rev += ' + uncommitted src changes';
  } catch {
    /* not a git checkout */
  }
  return {
    walbridge: `${walbridgeVersion} (${rev})`,
    PostgreSQL: first(join(PG_BIN, 'postgres'), ['--version'], /(\d+\.\d+)/),
    'Ceph radosgw': first('radosgw', ['--version'], /version (\S+)/),
    pgBackRest: first('pgbackrest', ['version'], /pgBackRest (\S+)/),
    'barman-cloud': first('barman-cloud-wal-archive', ['--version'], /(\d+\.\d+\.\d+)/),
  };
}

function notes(opts: Options): string[] {
  return [
    "Burst and restore rows run one after another, not interleaved per segment: a background uploader or prefetcher would otherwise work during other rows' calls for free. Each waits until the previous row's background processes are gone (idle ones are stopped after 3 s, once every call of the row has returned).",
    'walbridge push rows run with its defaults: the first call starts the background pusher, which then serves the later calls over its socket (SDK loaded, connections open) and uploads ready files ahead; in the per-segment rows nothing is marked ready, so each call waits for its own upload.',
    "Peak RSS is the command's own process (GNU time); pgBackRest's detached async process and walbridge's background pusher are not included.",
    `Restore "verified" compares each restored file's sha256 with the original segment.`,
    `walbridge lookahead / prefetch: --push-concurrency ${opts.pushConcurrency}, --prefetch ${opts.prefetch}; rows show "n/a (flag missing)" when this build lacks the flag.`,
    'The machine may be shared: compare rows within this run (the ratios), not absolute numbers across runs.',
  ];
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  killAllRunning();
  process.exit(1);
});
