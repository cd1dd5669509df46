/**
 * Lookahead push. PostgreSQL's archiver calls archive_command for one file at a time, so a
 * burst of WAL is archived at one upload per process start. A call also makes sure a background
 * pusher runs, which uploads the other files the archiver has marked `.ready`, in parallel, and
 * leaves a marker per file stored. The archiver's later call for such a file then only has to confirm, cheaply,
 * that the marker still describes the file on disk and the object in the store.
 *
 * Safety: a marker is written only after the object was stored and read back verified (the
 * same proof a normal push gives before exiting 0), names the repository and namespace, and is
 * trusted only while the file's identity on disk (device, inode, size, mtime, ctime) is
 * unchanged: PostgreSQL neither rewrites nor recycles a segment before it is archived, so the
 * bytes are those that were verified. The check needs no request, so it runs before any SDK is
 * loaded. Losing a marker (crash, full disk) only means a normal push later. The archiver's
 * own `.ready`/`.done` files are never touched.
 *
 * Markers live in `pg_wal/walbridge/pushed/`: inside pg_wal so base backups do not copy them,
 * in a subdirectory so PostgreSQL's WAL recycling never looks at them.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { readyWalFiles } from '../wal/archive-status.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { parseWalFileName } from '../wal/names.js';
import { pushWalFile, sourceIdentity, type PushContext, type PushResult, type SourceIdentity } from './push.js';

/** Which repository and namespace markers belong to (see cli/repository.ts repositoryId). */
export interface MarkerScope {
  readonly repository: string;
  readonly namespace: string;
}

interface Marker {
  readonly walbridge: 1;
  readonly repository: string;
  readonly namespace: string;
  readonly sha256: string;
  readonly size: number;
  readonly source: SourceIdentity;
}

function markerDir(walDir: string): string {
  return path.join(walDir, 'walbridge', 'pushed');
}

/**
 * archive_command for `walPath`. With lookahead on, a background pusher (see pushAhead) is
 * started if none runs for this pg_wal, to store the other ready files while the archiver
 * works through them; this call waits only for its own file.
 */
export async function pushWithLookahead(
  ctx: PushContext,
  walPath: string,
  concurrency: number,
  startPusher: () => void,
): Promise<PushResult> {
  const walDir = walDirOf(walPath);
  if (walDir && concurrency > 1 && !(await pusherRunning(walDir))) {
    try {
      startPusher();
    } catch (err) {
      ctx.log.warn(`could not start the background pusher (only the file asked for is pushed): ${(err as Error).message}`);
    }
  }
  return pushWalFile(ctx, walPath);
}

/** How long the background pusher waits for new `.ready` files before it exits. */
const PUSHER_IDLE_MS = 3_000;
const PUSHER_SCAN_MS = 100;

/**
 * The background pusher: stores the files PostgreSQL marked `.ready`, `concurrency` at a time,
 * leaving a marker for each one stored and verified, until none has appeared for a while.
 * One per pg_wal (a pid file in pg_wal/walbridge/ is its lock). It skips the oldest ready file,
 * which the archiver's own call is pushing, and a file that failed (the archiver's call for it
 * meets the same problem and reports it).
 */
export async function pushAhead(ctx: PushContext, scope: MarkerScope, walDir: string, concurrency: number): Promise<void> {
  const lock = path.join(walDir, 'walbridge', 'pusher.pid');
  if (!(await takeLock(lock))) return;
  await sweepLeftovers(walDir);
  const inFlight = new Map<string, Promise<void>>();
  const failed = new Set<string>();
  let lastWork = Date.now();
  try {
    for (;;) {
      const ready = await readyWalFiles(walDir);
      const marked = new Set(await listMarkers(walDir));
      await pruneMarkers(walDir, new Set(ready), marked);
      for (const name of ready.slice(1)) {
        if (inFlight.size >= concurrency) break;
        if (marked.has(name) || inFlight.has(name) || failed.has(name)) continue;
        const job = pushWalFile(ctx, path.join(walDir, name))
          .then((result) => writeMarker(ctx, scope, walDir, name, result))
          .catch((err: unknown) => {
            failed.add(name);
            ctx.log.warn(`background push of ${name} failed (the archiver's own call for it will retry): ${(err as Error).message}`);
          })
          .finally(() => inFlight.delete(name));
        inFlight.set(name, job);
      }
      if (inFlight.size > 0) lastWork = Date.now();
      else if (Date.now() - lastWork > PUSHER_IDLE_MS) return;
      await Promise.race([...inFlight.values(), new Promise((resolve) => setTimeout(resolve, PUSHER_SCAN_MS))]);
    }
  } finally {
    await Promise.all(inFlight.values());
    await unlink(lock).catch(() => undefined);
  }
}

/**
 * Removes what killed processes left: half-written markers (only a pusher writes markers, and
 * this one holds the lock) and spilled bodies (`.walbridge-body-<pid>-*`) of dead processes.
 */
async function sweepLeftovers(walDir: string): Promise<void> {
  const remove = (file: string) => unlink(file).catch(() => undefined);
  for (const entry of await readdir(markerDir(walDir)).catch(() => [] as string[])) {
    if (entry.startsWith('.')) await remove(path.join(markerDir(walDir), entry));
  }
  for (const entry of await readdir(walDir).catch(() => [] as string[])) {
    const owner = /^\.walbridge-body-(\d+)-/.exec(entry);
    if (owner && !processAlive(Number(owner[1]))) await remove(path.join(walDir, entry));
  }
}

async function pusherRunning(walDir: string): Promise<boolean> {
  try {
    return processAlive(Number(await readFile(path.join(walDir, 'walbridge', 'pusher.pid'), 'utf8')));
  } catch {
    return false;
  }
}

/** Creates the pid file, replacing one left by a dead process; false if a live pusher holds it. */
async function takeLock(lock: string): Promise<boolean> {
  await mkdir(path.dirname(lock), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lock, String(process.pid), { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(await readFile(lock, 'utf8').catch(() => ''));
      if (processAlive(holder)) return false;
      await unlink(lock).catch(() => undefined);
    }
  }
  return false;
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function walDirOf(walPath: string): string | undefined {
  return dataDirOfWalPath(walPath) ? path.dirname(path.resolve(walPath)) : undefined;
}

/** True if a lookahead marker proves `walPath` is archived with exactly the bytes now on disk. Consumes the marker. */
export async function confirmPushed(scope: MarkerScope, walPath: string, log: Logger): Promise<boolean> {
  const walDir = walDirOf(walPath);
  const name = path.basename(walPath);
  if (!walDir || !parseWalFileName(name)) return false;
  const file = path.join(markerDir(walDir), name);
  let marker: Marker;
  try {
    marker = JSON.parse(await readFile(file, 'utf8')) as Marker;
  } catch {
    return false;
  }
  try {
    if (marker.walbridge !== 1 || marker.repository !== scope.repository || marker.namespace !== scope.namespace) return false;
    if (!sameIdentity(sourceIdentity(await stat(walPath)), marker.source)) return false;
    log.info(`${name} was archived ahead of time (${marker.size} bytes, sha256 ${marker.sha256.slice(0, 12)}…, verified in the store then; unchanged on disk since)`);
    return true;
  } catch {
    return false; // whatever went wrong, a full push decides
  } finally {
    await unlink(file).catch(() => undefined);
  }
}

function sameIdentity(a: SourceIdentity, b: SourceIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

async function writeMarker(ctx: PushContext, scope: MarkerScope, walDir: string, name: string, result: PushResult): Promise<void> {
  const dir = markerDir(walDir);
  const marker: Marker = { walbridge: 1, repository: scope.repository, namespace: scope.namespace, sha256: result.sha256, size: result.size, source: result.source };
  const temp = path.join(dir, `.${name}.${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(temp, JSON.stringify(marker));
    await rename(temp, path.join(dir, name));
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    ctx.log.warn(`could not record that ${name} was archived ahead (it will be pushed again when asked): ${(err as Error).message}`);
  }
}

async function listMarkers(walDir: string): Promise<string[]> {
  try {
    return (await readdir(markerDir(walDir))).filter((n) => parseWalFileName(n) !== undefined);
  } catch {
    return [];
  }
}

/** Markers of files no longer waiting to be archived can never be used: remove them. */
async function pruneMarkers(walDir: string, ready: Set<string>, seen: Set<string>): Promise<void> {
  for (const name of seen) {
    if (!ready.has(name)) await unlink(path.join(markerDir(walDir), name)).catch(() => undefined);
  }
}
