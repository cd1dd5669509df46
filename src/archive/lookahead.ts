/**
 * Lookahead push. PostgreSQL's archiver calls archive_command for one file at a time, so a
 * burst of WAL is archived at one upload per process start. When asked for one file, we also
 * upload the next files the archiver has marked `.ready`, in parallel, and leave a marker per
 * file stored. The archiver's later call for such a file then only has to confirm, cheaply,
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
 * archive_command for `walPath`, with up to `concurrency - 1` more ready files pushed beside it.
 * The exit status depends on `walPath` alone; a lookahead failure is only logged (the archiver's
 * own call for that file will meet the same problem and report it).
 */
export async function pushWithLookahead(ctx: PushContext, scope: MarkerScope, walPath: string, concurrency: number): Promise<PushResult> {
  const walDir = walDirOf(walPath);
  if (!walDir || concurrency <= 1) return pushWalFile(ctx, walPath);
  const name = path.basename(walPath);

  const ready = await readyWalFiles(walDir);
  const marked = new Set(await listMarkers(walDir));
  const extra = ready.filter((n) => n !== name && !marked.has(n)).slice(0, concurrency - 1);
  const lookahead = extra.map(async (next) => {
    try {
      const result = await pushWalFile(ctx, path.join(walDir, next));
      await writeMarker(ctx, scope, walDir, next, result);
    } catch (err) {
      ctx.log.warn(`lookahead push of ${next} failed (the archiver's own call for it will retry): ${(err as Error).message}`);
    }
  });
  try {
    return await pushWalFile(ctx, walPath);
  } finally {
    await Promise.all(lookahead);
    await pruneMarkers(walDir, new Set(ready), marked);
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
