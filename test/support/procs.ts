/**
 * What the kernel says about processes, for tests of what runs, where, and what it listens on:
 * /proc/<pid>/{stat,cmdline,cwd,fd}, /proc/net/unix and /proc/net/tcp{,6}. Linux only, and the
 * test process must be able to read other users' /proc entries (root, as the suite runs).
 * Nothing here uses walbridge's own code, so the same checks can run against another build.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../servers/postgres.js';

export interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly argv: readonly string[];
  /** The working directory (" (deleted)" cut off), undefined if it cannot be read. */
  readonly cwd: string | undefined;
}

/** A live process (zombies and vanished processes are undefined). */
export function procInfo(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((a) => a !== '');
    let cwd: string | undefined;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`).replace(/ \(deleted\)$/, '');
    } catch {
      cwd = undefined;
    }
    return { pid, ppid: Number(fields[1]), argv, cwd };
  } catch {
    return undefined;
  }
}

export function allProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const p = procInfo(Number(e));
    if (p) out.push(p);
  }
  return out;
}

const BIN = `${path.join(REPO_ROOT, 'bin')}/`;

/** A process running one of this checkout's executables (a call or a background process). */
export function isWalbridge(p: ProcInfo): boolean {
  return p.argv.some((a) => a.startsWith(BIN));
}

/**
 * walbridge processes of the cluster whose data directory is `dataDir`: calls (PostgreSQL runs
 * them in the data directory) and background processes (their command line names its pg_wal).
 */
export function walbridgeProcsOf(dataDir: string): ProcInfo[] {
  return allProcs().filter((p) => isWalbridge(p) && (p.cwd === dataDir || p.argv.some((a) => a === dataDir || a.startsWith(`${dataDir}/`))));
}

/** Every process whose working directory is `dir` (a server's processes, the `sh -c` of its commands, ...). */
export function procsIn(dir: string): ProcInfo[] {
  return allProcs().filter((p) => p.cwd === dir || p.cwd?.startsWith(`${dir}/`));
}

/** The background pusher or fetcher processes of the pg_wal `walDir`. */
export function backgroundProcs(walDir: string, role: 'pusher' | 'fetcher'): ProcInfo[] {
  // The subcommand is the role's name.
  return allProcs().filter((p) => isWalbridge(p) && p.argv.includes(role) && p.argv.includes(walDir));
}

/** Inodes of the sockets `pid` has open. */
export function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Paths of the Unix stream sockets `pid` listens on (abstract names start with "@"). */
export function listeningUnixSockets(pid: number): string[] {
  const mine = socketInodes(pid);
  const out: string[] = [];
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening)
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[3] !== '00010000' || !mine.has(f[6]!)) continue;
    out.push(f.slice(7).join(' '));
  }
  return out;
}

export interface TcpListener {
  readonly port: number;
  readonly inode: string;
}

/** Every TCP socket in LISTEN state on this host (this network namespace), IPv4 and IPv6. */
export function tcpListeners(): TcpListener[] {
  const out: TcpListener[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue;
      out.push({ port: parseInt(f[1]!.split(':')[1]!, 16), inode: f[9]! });
    }
  }
  return out;
}

/**
 * TCP listeners that would let someone attach to Node's inspector: any owned by one of `pids`,
 * and any on the inspector's ports (9229, and 65535 which the executables' shebang names) owned
 * by a process of this checkout (other people's processes on the machine are not ours to judge).
 * Empty when nothing can attach.
 */
export function inspectorListeners(pids: readonly number[]): string[] {
  const listeners = tcpListeners();
  const found: string[] = [];
  for (const pid of pids) {
    const mine = socketInodes(pid);
    for (const l of listeners) if (mine.has(l.inode)) found.push(`pid ${pid} listens on TCP ${l.port}`);
  }
  const suspects = listeners.filter((l) => l.port === 9229 || l.port === 65535);
  if (suspects.length > 0) {
    for (const p of allProcs()) {
      if (!isWalbridge(p) || pids.includes(p.pid)) continue;
      const mine = socketInodes(p.pid);
      for (const l of suspects) if (mine.has(l.inode)) found.push(`pid ${p.pid} (${p.argv.join(' ')}) listens on TCP ${l.port}`);
    }
  }
  return found;
}
