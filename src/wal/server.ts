/**
 * The PostgreSQL server (postmaster) whose data directory a walbridge process works in, and
 * whether it still runs. A restore_command runs as `postmaster -> startup process -> sh -c ->
 * archive-fetch`: when the postmaster is killed, the startup process sits in system() and
 * never ends the call, so watching the parent (the sh) is not enough. A process is known by its
 * pid and its start time (/proc/PID/stat), so a pid reused after a reboot is not mistaken for it.
 * Linux only, as walbridge is.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export interface ServerProcess {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat: clock ticks after boot at which the process started. */
  readonly startTime: string;
}

interface ProcStat {
  readonly state: string;
  readonly ppid: number;
  readonly startTime: string;
}

function procStat(pid: number): ProcStat | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const [state, ppid, startTime] = [fields[0], Number(fields[1]), fields[19]];
  return state && startTime ? { state, ppid, startTime } : undefined;
}

/** The names (comm) PostgreSQL's processes run under. */
const POSTGRES_NAMES = new Set(['postgres', 'postmaster']);

/** Whether `process` runs (a zombie, or another process under a reused pid, does not). */
export function processRunning(process: ServerProcess): boolean {
  const stat = procStat(process.pid);
  return stat !== undefined && stat.state !== 'Z' && stat.startTime === process.startTime;
}

/** This process as a ServerProcess (for the processes it starts to watch). */
export function thisProcess(): ServerProcess | undefined {
  const stat = procStat(process.pid);
  return stat && { pid: process.pid, startTime: stat.startTime };
}

/** The first line of `dataDir`/postmaster.pid: the postmaster's pid (a standalone backend's, negated); NaN without the file. */
async function pidFilePid(dataDir: string): Promise<number> {
  return Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
}

/**
 * The postmaster running in `dataDir` (its postmaster.pid), if it runs and, with `ancestorOnly`,
 * if this process descends from it (a call PostgreSQL made, not one a person or a tool made
 * beside a running server).
 */
export async function runningServer(dataDir: string, opts: { ancestorOnly?: boolean } = {}): Promise<ServerProcess | undefined> {
  const pid = await pidFilePid(dataDir);
  const stat = procStat(pid);
  if (!stat || stat.state === 'Z') return undefined;
  if (opts.ancestorOnly && !isAncestor(pid)) return undefined;
  return { pid, startTime: stat.startTime };
}

/**
 * Whether this process was started by a PostgreSQL process (the nearest ancestor named postgres
 * or postmaster) of a server that is gone: postmaster.pid names a postmaster (a positive pid; a
 * standalone backend writes its own negated) that is not a running ancestor of this process. The
 * startup process may run restore_command before it notices its postmaster died (or was killed
 * and started again), and then sits in system() for as long as the command runs: such a call
 * has nobody to answer and must end at once. Undecided (false) without postmaster.pid or without
 * a PostgreSQL ancestor (a call run by hand).
 */
export async function calledByGoneServer(dataDir: string): Promise<boolean> {
  const pid = await pidFilePid(dataDir);
  // startup process -> sh [-> sh] -> call: the asker is a few levels up, never a distant ancestor.
  if (
    !Number.isInteger(pid) ||
    pid <= 0 ||
    !ancestors()
      .slice(0, 4)
      .some((p) => POSTGRES_NAMES.has(procName(p) ?? ''))
  )
    return false;
  const stat = procStat(pid);
  return !stat || stat.state === 'Z' || !isAncestor(pid);
}

/**
 * True when a process of this name is among this process's ancestors: `pg_rewind
 * --restore-target-wal` runs restore_command itself, with no server behind it.
 */
export function calledBy(name: string): boolean {
  return ancestors().some((p) => procName(p) === name);
}

/**
 * This process's ancestors, nearest first (at most 64), up to pid 1 included: in a container the
 * postmaster itself may be pid 1.
 */
function ancestors(): number[] {
  const found: number[] = [];
  for (let p = process.ppid; p > 0 && found.length < 64; ) {
    found.push(p);
    if (p === 1) break;
    const stat = procStat(p);
    if (!stat) break;
    p = stat.ppid;
  }
  return found;
}

function procName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function isAncestor(pid: number): boolean {
  return ancestors().includes(pid);
}

/** An ancestor as it was when this process started; `ppid` undefined: its parent is not watched. */
interface Ancestor extends ServerProcess {
  readonly ppid: number | undefined;
}

/**
 * Who asked this process for its work, up to the process PostgreSQL's death shows in: the
 * ancestors below the postmaster, as they are when the call starts. PostgreSQL runs a command
 * as postmaster -> startup process -> sh -> command, or without the sh where sh execs a single
 * command (dash and bash do for `sh -c`). A killed postmaster leaves the startup process in
 * system(), re-parented; the postmaster's own parent (pg_ctl, which exits once the server is up)
 * is none of the call's business. Without the postmaster known, the nearest PostgreSQL process
 * (comm "postgres" or "postmaster") stands for the startup process; with none close by (a call
 * run by hand), only the parent is watched.
 */
export type Lineage = readonly Ancestor[];

export function callerLineage(server?: ServerProcess): Lineage | undefined {
  const chain: Ancestor[] = [];
  for (let pid = process.ppid; pid > 1 && chain.length < 4; ) {
    const stat = procStat(pid);
    if (!stat) break;
    chain.push({ pid, startTime: stat.startTime, ppid: stat.ppid });
    if (server ? stat.ppid === server.pid : POSTGRES_NAMES.has(procName(pid) ?? '')) return chain;
    pid = stat.ppid;
  }
  const parent = chain[0];
  return parent && [{ ...parent, ppid: undefined }];
}

/** Whether whoever asked still waits for the answer: every ancestor recorded still runs, under the same parent. */
export function lineageIntact(lineage: Lineage | undefined): boolean {
  if (!lineage?.length) return true;
  if (process.ppid !== lineage[0]!.pid) return false;
  return lineage.every((a) => {
    const now = procStat(a.pid);
    return now !== undefined && now.state !== 'Z' && now.startTime === a.startTime && (a.ppid === undefined || now.ppid === a.ppid);
  });
}

/** `pid:startTime`, as handed to a background process on its command line. */
export function formatServer(server: ServerProcess): string {
  return `${server.pid}:${server.startTime}`;
}

export function parseServer(text: string): ServerProcess | undefined {
  const m = /^(\d+):(\d+)$/.exec(text);
  return m ? { pid: Number(m[1]), startTime: m[2]! } : undefined;
}
