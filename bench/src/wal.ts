/**
 * Real WAL for the benchmark: a throw-away PostgreSQL 15 primary runs `pgbench -i` and then a
 * concurrent pgbench load (-c4 -j2) until enough segments are complete, then a few mostly-empty
 * segments are forced by pg_switch_wal() on the idle server. archive_command copies each
 * completed segment atomically into a directory. The last `segments` segments form one
 * contiguous run (so restore-side prefetching sees the names it would see in a real recovery),
 * and always end with the idle ones.
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PG_BIN, chownToClusterUser, initPrimary, makeSharedDir, walFileName, type PgCluster } from '../../test/servers/postgres.js';
import { sleep } from './stats.js';

export interface WalOptions {
  /** How many segments the benchmark gets in total. */
  segments: number;
  /** How many of them are mostly empty (pg_switch_wal on an idle server). */
  idleSegments: number;
  /** pgbench -i -s: the size of the tables the load runs against. */
  scale: number;
  log: (line: string) => void;
}

export interface GeneratedWal {
  /** Directory holding the segments (owned by the cluster user). */
  dir: string;
  /** Segment names, contiguous and sorted; the last ones are the idle ones. */
  names: string[];
  idleNames: Set<string>;
  segmentBytes: number;
  systemIdentifier: string;
  /** global/pg_control and PG_VERSION of the generating cluster: tools read the cluster's identity from them. */
  pgControl: Buffer;
  pgVersion: string;
  /** Seconds the generation took, and what ran. */
  seconds: number;
  description: string;
}

const SEGMENT_MB = 16;

export async function generatePgbenchWal(opts: WalOptions): Promise<GeneratedWal> {
  const started = Date.now();
  const segmentBytes = SEGMENT_MB * 1024 * 1024;
  const dir = await makeSharedDir('bench-wal');
  const primary = await initPrimary({
    name: 'bench-walgen',
    archiveCommand: `cp %p '${dir}/%f.tmp' && mv '${dir}/%f.tmp' '${dir}/%f'`,
    // No autovacuum: nothing may write WAL behind our back while the idle segments are made.
    conf: { autovacuum: false, archive_timeout: 0, max_connections: 20 },
  });
  try {
    const segno = async (): Promise<bigint> =>
      BigInt(await primary.psql("select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")) / BigInt(segmentBytes);
    const loadTarget = opts.segments - opts.idleSegments;
    const firstSegno = await segno();
    const completed = async (): Promise<number> => Number((await segno()) - firstSegno);

    opts.log(`pgbench -i -s ${opts.scale}`);
    await primary.pgbench(['-i', '-s', String(opts.scale), '-q'], { timeoutMs: 600_000 });
    // As on a server that checkpoints every few minutes: the load's first touch of each page
    // after the checkpoint writes a full-page image, which is most of real pgbench WAL.
    await primary.psql('checkpoint');
    opts.log(`  ${await completed()} segments after pgbench -i and a checkpoint`);
    let loadSeconds = 0;
    if ((await completed()) < loadTarget) {
      const loadStarted = Date.now();
      await runPgbenchUntil(primary, async () => (await completed()) >= loadTarget);
      loadSeconds = (Date.now() - loadStarted) / 1000;
      opts.log(`  ${await completed()} segments after ${loadSeconds.toFixed(1)} s of pgbench -c4 -j2`);
    }
    // The first switch completes the segment the load left half-filled; each later one
    // completes a segment holding one tiny record.
    for (let i = 0; i <= opts.idleSegments; i++) await primary.psql('select txid_current(); select pg_switch_wal()');
    const endSegno = await segno();
    const names: string[] = [];
    for (let s = endSegno - BigInt(opts.segments); s < endSegno; s++) names.push(walFileName(1, s, segmentBytes));
    if (endSegno - BigInt(opts.segments) < firstSegno) {
      throw new Error(`WAL generator: only ${Number(endSegno - firstSegno)} segments were made, ${opts.segments} wanted`);
    }
    await waitForArchived(dir, names);
    const systemIdentifier = await primary.psql('select system_identifier from pg_control_system()');
    const pgVersion = (await readFile(join(primary.dataDir, 'PG_VERSION'), 'utf8')).trim();
    await primary.stop('immediate'); // a clean stop would switch and archive one segment more
    const pgControl = await readFile(join(primary.dataDir, 'global', 'pg_control'));
    // Only the chosen segments stay: the directory's size is what the benchmark copies around.
    const keep = new Set(names);
    for (const f of await readdir(dir)) if (!keep.has(f)) await rm(join(dir, f), { force: true });
    await chownToClusterUser(dir, { recursive: true });
    return {
      dir,
      names,
      idleNames: new Set(names.slice(names.length - opts.idleSegments)),
      segmentBytes,
      systemIdentifier,
      pgControl,
      pgVersion,
      seconds: (Date.now() - started) / 1000,
      description:
        `PostgreSQL ${pgVersion}: pgbench -i -s ${opts.scale}, a checkpoint, ` +
        (loadSeconds > 0 ? `pgbench -c4 -j2 for ${loadSeconds.toFixed(0)} s, ` : '') +
        `then ${opts.idleSegments} idle segments from pg_switch_wal(); the last ${opts.segments} segments, contiguous`,
    };
  } finally {
    await primary.destroy();
  }
}

/** pgbench -c4 -j2 in the background until `enough()` says so (checked every 100 ms). */
async function runPgbenchUntil(primary: PgCluster, enough: () => Promise<boolean>): Promise<void> {
  const child = spawn(join(PG_BIN, 'pgbench'), ['-c', '4', '-j', '2', '-T', '3600', '-n'], {
    env: { PATH: `${PG_BIN}:/usr/bin:/bin`, LANG: 'C.UTF-8', HOME: primary.rootDir, ...primary.connectionEnv() },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let running = true;
  void exited.then(() => (running = false));
  try {
    const deadline = Date.now() + 20 * 60_000;
    while (!(await enough())) {
      if (!running) throw new Error(`pgbench exited early:\n${stderr.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error('WAL generator: pgbench made too little WAL in 20 minutes');
      await sleep(100);
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

async function waitForArchived(dir: string, names: string[]): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const have = new Set(await readdir(dir));
    const missing = names.filter((n) => !have.has(n));
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`WAL generator: not archived within 120 s: ${missing.join(' ')}`);
    await sleep(50);
  }
}
