/**
 * The rows of the benchmark: one tool in one configuration, with its own bucket (or archive
 * directory), its own data directory and the exact command lines PostgreSQL would run.
 */
import { chmod, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { chownToClusterUser } from '../../test/servers/postgres.js';
import type { Radosgw } from '../../test/servers/radosgw.js';
import { run, shq, type Invocation } from './run.js';
import type { BenchS3 } from './s3.js';
import type { GeneratedWal } from './wal.js';

export type ToolKind = 'floor' | 'walbridge' | 'pgbackrest' | 'barman';

export interface Row {
  id: string;
  label: string;
  tool: ToolKind;
  /** Why the row cannot run here (e.g. a walbridge flag this build lacks); undefined if it can. */
  unavailable?: string;
  /** Where its commands run (cwd), PostgreSQL's data directory. */
  dataDir: string;
  env: Record<string, string>;
  bucket?: string;
  /** archive_command for `pg_wal/<name>`. */
  pushCommand?: (name: string) => string;
  /** restore_command for `%f` = name, `%p` = pg_wal/RECOVERYXLOG. */
  fetchCommand?: (name: string) => string;
  /** Settings that live outside the command line (pgBackRest's config file), for the report. */
  settings?: string;
}

export const RESTORE_TARGET = 'pg_wal/RECOVERYXLOG';

/** What the benchmark's rows share. */
export interface Bench {
  workDir: string;
  repoRoot: string;
  rgw: Radosgw;
  s3: BenchS3;
  /** A copy of the server's CA certificate the cluster user can read. */
  caFile: string;
  wal: GeneratedWal;
  walbridge: WalbridgeFeatures;
  log: (line: string) => void;
}

/** Environment every command starts from: what a PostgreSQL server under systemd would pass on. */
export function baseEnv(home: string): Record<string, string> {
  return { PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: home, LANG: 'C.UTF-8' };
}

/** A directory the cluster user owns. */
export async function ownedDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true });
  await chownToClusterUser(path);
  return path;
}

export interface DataDirOptions {
  /** Segments to place in pg_wal (hard links to the generated ones). */
  segments?: readonly string[];
  /** Also mark them ready for archiving (archive_status/<name>.ready), as the archiver finds them. */
  ready?: boolean;
  /** recovery.signal, as a server doing archive recovery has. */
  recoverySignal?: boolean;
}

/** A stand-in data directory: pg_control and PG_VERSION of the WAL's cluster, pg_wal/ and archive_status/. */
export async function makeDataDir(bench: Bench, dir: string, opts: DataDirOptions = {}): Promise<string> {
  await mkdir(join(dir, 'global'), { recursive: true });
  await mkdir(join(dir, 'pg_wal', 'archive_status'), { recursive: true });
  await chmod(dir, 0o700);
  await writeFile(join(dir, 'global', 'pg_control'), bench.wal.pgControl, { mode: 0o600 });
  await writeFile(join(dir, 'PG_VERSION'), `${bench.wal.pgVersion}\n`, { mode: 0o600 });
  for (const name of opts.segments ?? []) {
    await link(join(bench.wal.dir, name), join(dir, 'pg_wal', name));
    if (opts.ready) await writeFile(join(dir, 'pg_wal', 'archive_status', `${name}.ready`), '');
  }
  if (opts.recoverySignal) await writeFile(join(dir, 'recovery.signal'), '');
  await chownToClusterUser(dir, { recursive: true });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// walbridge

export interface WalbridgeFeatures {
  codecs: string[];
  pushConcurrency: boolean;
  prefetch: boolean;
  version: string;
}

/**
 * What this build of walbridge offers, read from its --help (flags are being added as we go),
 * run as the cluster user: this also checks that user can run the repository's bin/.
 */
export async function probeWalbridge(repoRoot: string, workDir: string): Promise<WalbridgeFeatures> {
  const help = async (bin: string): Promise<string> => {
    const r = await run({ command: `${shq(join(repoRoot, 'bin', bin))} --help`, cwd: workDir, env: baseEnv(workDir), timeoutMs: 30_000, captureStdout: true });
    if (r.exitCode !== 0) throw new Error(`the cluster user cannot run walbridge (${bin} --help exited ${r.exitCode}): ${r.stderr.slice(-500)}`);
    return r.stdout;
  };
  const push = await help('archive-push');
  const fetch = await help('archive-fetch');
  const codecLine = /compression for new objects:\s*([a-z0-9,\s]+?)\s*[([]/.exec(push);
  const codecs = codecLine
    ? codecLine[1]!
        .split(',')
        .map((c) => c.trim())
        .filter(Boolean)
    : [];
  const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  return { codecs, pushConcurrency: /--push-concurrency\b/.test(push), prefetch: /--prefetch\b/.test(fetch), version: pkg.version };
}

export interface WalbridgeRowOptions {
  id: string;
  label: string;
  bucket: string;
  namespace: string;
  dataDir: string;
  codec?: string;
  level?: number;
  pushConcurrency?: number;
  prefetch?: number;
  /** archive-fetch waits for segments not archived yet (restore_command under recovery.signal). */
  waiting?: boolean;
}

export function walbridgeEnv(bench: Bench, o: { bucket: string; namespace: string; home: string }): Record<string, string> {
  return {
    ...baseEnv(o.home),
    WALBRIDGE_REPO: `s3://${o.bucket}`,
    WALBRIDGE_NAMESPACE: o.namespace,
    WALBRIDGE_S3_ENDPOINT: bench.rgw.httpsEndpoint!,
    WALBRIDGE_S3_PATH_STYLE: '1',
    WALBRIDGE_S3_CHECKSUM: 'when-required',
    AWS_ACCESS_KEY_ID: bench.rgw.accessKey,
    AWS_SECRET_ACCESS_KEY: bench.rgw.secretKey,
    AWS_REGION: bench.rgw.region,
    NODE_EXTRA_CA_CERTS: bench.caFile,
  };
}

/** Why this build of walbridge cannot run a row with these options, or undefined. */
export function walbridgeUnavailable(bench: Bench, o: { codec?: string; pushConcurrency?: number; prefetch?: number }): string | undefined {
  const f = bench.walbridge;
  if (o.codec && !f.codecs.includes(o.codec)) return `n/a (codec ${o.codec} missing)`;
  // Asking for the feature's "off" value (1 upload at a time, no prefetch) is what a build without the flag does anyway.
  if (o.pushConcurrency !== undefined && o.pushConcurrency > 1 && !f.pushConcurrency) return 'n/a (flag --push-concurrency missing)';
  if (o.prefetch !== undefined && o.prefetch > 0 && !f.prefetch) return 'n/a (flag --prefetch missing)';
  return undefined;
}

export function walbridgeRow(bench: Bench, o: WalbridgeRowOptions): Row {
  const bin = (name: string): string => shq(join(bench.repoRoot, 'bin', name));
  const unavailable = walbridgeUnavailable(bench, o);
  const f = bench.walbridge;
  const pushFlags = [
    ...(o.codec ? ['--compress', o.codec] : []),
    ...(o.level !== undefined ? ['--compress-level', String(o.level)] : []),
    ...(o.pushConcurrency !== undefined && f.pushConcurrency ? ['--push-concurrency', String(o.pushConcurrency)] : []),
  ].join(' ');
  const fetchFlags = [...(o.waiting ? [] : ['--no-wait']), ...(o.prefetch !== undefined && f.prefetch ? ['--prefetch', String(o.prefetch)] : [])].join(' ');
  return {
    id: o.id,
    label: o.label,
    tool: 'walbridge',
    unavailable,
    dataDir: o.dataDir,
    bucket: o.bucket,
    env: walbridgeEnv(bench, { bucket: o.bucket, namespace: o.namespace, home: dirname(o.dataDir) }),
    pushCommand: (name) => `${bin('archive-push')} ${pushFlags} pg_wal/${name}`.replace(/ +/g, ' '),
    fetchCommand: (name) => `${bin('archive-fetch')} ${fetchFlags} ${name} ${RESTORE_TARGET}`.replace(/ +/g, ' '),
  };
}

// ---------------------------------------------------------------------------------------------
// pgBackRest

export interface PgbackrestRowOptions {
  id: string;
  label: string;
  bucket: string;
  dataDir: string;
  compressType: 'zst' | 'lz4' | 'gz' | 'none';
  level?: number;
  /** archive-async with this process-max; synchronous when undefined. */
  asyncProcessMax?: number;
}

export const PGBACKREST_STANZA = 'bench';

/** Writes the row's pgbackrest.conf next to its data directory; returns the row. */
export async function pgbackrestRow(bench: Bench, o: PgbackrestRowOptions): Promise<Row> {
  const home = dirname(o.dataDir);
  const config = join(home, 'pgbackrest.conf');
  const url = new URL(bench.rgw.httpsEndpoint!);
  const lines = [
    '[global]',
    'repo1-type=s3',
    'repo1-path=/pgbackrest',
    `repo1-s3-bucket=${o.bucket}`,
    `repo1-s3-endpoint=${url.hostname}`,
    `repo1-storage-port=${url.port}`,
    `repo1-s3-region=${bench.rgw.region}`,
    `repo1-s3-key=${bench.rgw.accessKey}`,
    `repo1-s3-key-secret=${bench.rgw.secretKey}`,
    'repo1-s3-uri-style=path',
    `repo1-storage-ca-file=${bench.caFile}`,
    `compress-type=${o.compressType}`,
    ...(o.level !== undefined ? [`compress-level=${o.level}`] : []),
    'log-level-console=warn',
    'log-level-file=off',
    `lock-path=${join(home, 'lock')}`,
    `spool-path=${join(home, 'spool')}`,
    ...(o.asyncProcessMax !== undefined ? ['archive-async=y', `process-max=${o.asyncProcessMax}`] : []),
    '',
    `[${PGBACKREST_STANZA}]`,
    `pg1-path=${o.dataDir}`,
    '',
  ];
  await ownedDir(join(home, 'lock'));
  await ownedDir(join(home, 'spool'));
  await writeFile(config, lines.join('\n'), { mode: 0o644 });
  const base = `pgbackrest --config=${shq(config)} --stanza=${PGBACKREST_STANZA}`;
  return {
    id: o.id,
    label: o.label,
    tool: 'pgbackrest',
    dataDir: o.dataDir,
    bucket: o.bucket,
    env: baseEnv(home),
    settings: lines.filter((l) => /^(compress-|archive-async|process-max)/.test(l)).join(', '),
    pushCommand: (name) => `${base} archive-push pg_wal/${name}`,
    fetchCommand: (name) => `${base} archive-get ${name} ${RESTORE_TARGET}`,
  };
}

/** stanza-create from pg_control alone (no server runs): the repository's archive.info. */
export async function createStanza(row: Row): Promise<void> {
  const config = join(dirname(row.dataDir), 'pgbackrest.conf');
  const inv: Invocation = {
    command: `pgbackrest --config=${shq(config)} --stanza=${PGBACKREST_STANZA} --no-online stanza-create`,
    cwd: row.dataDir,
    env: row.env,
    timeoutMs: 60_000,
  };
  const r = await run(inv);
  if (r.exitCode !== 0) throw new Error(`${row.id}: pgbackrest stanza-create failed: ${r.stderr.slice(-1000)}`);
}

// ---------------------------------------------------------------------------------------------
// barman-cloud

export interface BarmanRowOptions {
  id: string;
  label: string;
  bucket: string;
  dataDir: string;
  compression?: 'gzip' | 'bzip2';
}

export const BARMAN_SERVER = 'bench';

export function barmanRow(bench: Bench, o: BarmanRowOptions): Row {
  const common = `--cloud-provider aws-s3 --endpoint-url ${shq(bench.rgw.httpsEndpoint!)}`;
  const url = `s3://${o.bucket}/barman`;
  const compression = o.compression ? ` --${o.compression}` : '';
  return {
    id: o.id,
    label: o.label,
    tool: 'barman',
    dataDir: o.dataDir,
    bucket: o.bucket,
    env: {
      ...baseEnv(dirname(o.dataDir)),
      AWS_ACCESS_KEY_ID: bench.rgw.accessKey,
      AWS_SECRET_ACCESS_KEY: bench.rgw.secretKey,
      AWS_DEFAULT_REGION: bench.rgw.region,
      AWS_CA_BUNDLE: bench.caFile,
    },
    pushCommand: (name) => `barman-cloud-wal-archive ${common}${compression} ${url} ${BARMAN_SERVER} pg_wal/${name}`,
    fetchCommand: (name) => `barman-cloud-wal-restore ${common} ${url} ${BARMAN_SERVER} ${name} ${RESTORE_TARGET}`,
  };
}

// ---------------------------------------------------------------------------------------------
// The floor: cp to a local directory, made durable and published atomically.

export function floorRow(o: { id: string; label: string; dataDir: string; archiveDir: string }): Row {
  const a = shq(o.archiveDir);
  const tmp = `${RESTORE_TARGET}.tmp`;
  return {
    id: o.id,
    label: o.label,
    tool: 'floor',
    dataDir: o.dataDir,
    env: baseEnv(dirname(o.dataDir)),
    pushCommand: (name) => `cp pg_wal/${name} ${a}/${name}.tmp && sync ${a}/${name}.tmp && mv ${a}/${name}.tmp ${a}/${name} && sync ${a}`,
    fetchCommand: (name) => `cp ${a}/${name} ${tmp} && sync ${tmp} && mv ${tmp} ${RESTORE_TARGET}`,
  };
}
