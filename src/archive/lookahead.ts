/**
 * Lookahead push. PostgreSQL's archiver calls archive_command for one file at a time, so a
 * burst of WAL is archived at one upload per process start. When asked for one file, we also
 * upload the next files the archiver has marked `.ready`, in parallel, and leave a marker per
 * file stored. The archiver's later call for such a file then only has to confirm, cheaply,
 * that the marker still describes the file on disk and the object in the store.
 *
 * Safety: a marker is written only after the object was stored and read back verified, and is
 * trusted only if the file's identity on disk (device, inode, size, mtime, ctime) is unchanged
 * and the store still holds an object with the marker's content hash. Markers never make us
 * skip a check that could fail; losing one (crash, full disk) only means a normal push later.
 * The archiver's own `.ready`/`.done` files are never touched.
 *
 * Markers live in `pg_wal/walbridge/pushed/`: inside pg_wal so base backups do not copy them,
 * in a subdirectory so PostgreSQL's WAL recycling never looks at them.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describeContent } from '../codec/envelope.js';
import { readyWalFiles } from '../wal/archive-status.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { parseWalFileName } from '../wal/names.js';
import { walFileKey } from './layout.js';
import { pushWalFile, sourceIdentity, type PushContext, type PushResult, type SourceIdentity } from './push.js';

interface Marker {
  readonly walbridge: 1;
  readonly location: string;
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
export async function pushWithLookahead(ctx: PushContext, walPath: string, concurrency: number): Promise<PushResult | 'confirmed'> {
  const walDir = dataDirOfWalPath(walPath) ? path.dirname(path.resolve(walPath)) : undefined;
  if (!walDir || concurrency <= 1) return pushWalFile(ctx, walPath);
  const name = path.basename(walPath);
  if (await confirmPushed(ctx, walDir, name)) return 'confirmed';

  const ready = await readyWalFiles(walDir);
  const marked = new Set(await listMarkers(walDir));
  const extra = ready.filter((n) => n !== name && !marked.has(n)).slice(0, concurrency - 1);
  const lookahead = extra.map(async (next) => {
    try {
      const result = await pushWalFile(ctx, path.join(walDir, next));
      await writeMarker(ctx, walDir, next, result);
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

/** True if a marker proves `name` is stored with exactly the bytes now on disk. Consumes the marker. */
async function confirmPushed(ctx: PushContext, walDir: string, name: string): Promise<boolean> {
  const file = path.join(markerDir(walDir), name);
  let marker: Marker;
  try {
    marker = JSON.parse(await readFile(file, 'utf8')) as Marker;
  } catch {
    return false;
  }
  try {
    const parsed = parseWalFileName(name);
    if (!parsed || marker.walbridge !== 1 || marker.location !== ctx.store.location || marker.namespace !== ctx.namespace) return false;
    const onDisk = sourceIdentity(await stat(path.join(walDir, name)));
    if (!sameIdentity(onDisk, marker.source)) return false;
    const stored = await ctx.store.head(walFileKey(ctx.namespace, parsed));
    const promised = stored && describeContent(stored.metadata);
    if (!promised || typeof promised === 'string' || promised.sha256 !== marker.sha256 || promised.size !== marker.size) return false;
    ctx.log.info(`${name} was archived ahead of time (verified: same file on disk, object present with its content hash)`);
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

async function writeMarker(ctx: PushContext, walDir: string, name: string, result: PushResult): Promise<void> {
  const dir = markerDir(walDir);
  const marker: Marker = { walbridge: 1, location: ctx.store.location, namespace: ctx.namespace, sha256: result.sha256, size: result.size, source: result.source };
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
