/**
 * Markers: the background pusher's record that a file the archiver has not asked for yet is
 * stored. The archiver's later call for that file is answered from the marker, with no SDK
 * loaded and no request made.
 *
 * Safety: a marker is written only after the object was stored and read back verified (the
 * same proof a normal push gives before exiting 0), names the repository and namespace, and is
 * trusted only while the file's identity on disk (device, inode, size, mtime, ctime) is
 * unchanged: PostgreSQL neither rewrites nor recycles a segment before it is archived, so the
 * bytes are those that were verified. Losing a marker (crash, full disk) only means a normal
 * push later. The archiver's own `.ready`/`.done` files are never touched.
 *
 * Markers live in `pg_wal/walbridge/pushed/`: inside pg_wal so base backups do not copy them,
 * in a subdirectory so PostgreSQL's WAL recycling never looks at them. This module stays free
 * of heavy imports: it runs on every archive_command call.
 */
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { fileIdentity, sameFile, type FileIdentity } from '../../util/file-identity.js';
import { processAlive } from '../../util/temp-files.js';
import { parseWalFileName } from '../../wal/names.js';
import { frontEndRecord } from '../front-end.js';
import { markerDir, walDirOf } from '../local-layout.js';

/** Which repository and namespace markers belong to (see repo/open.ts repositoryId). */
export interface MarkerScope {
  readonly repository: string;
  readonly namespace: string;
  /**
   * The call key (front-end.ts) of the calls bin/archive-push may answer from these markers
   * without starting Node; undefined where every call must go through Node.
   */
  readonly callKey?: string | undefined;
}

/** What a push proved: the plain content stored, and the file on disk it was read from. */
export interface StoredFile {
  readonly sha256: string;
  readonly size: number;
  readonly source: FileIdentity;
}

interface Marker extends StoredFile {
  readonly walbridge: 1;
  readonly repository: string;
  readonly namespace: string;
  /** What bin/archive-push compares (front-end.ts frontEndRecord). */
  readonly fast?: string;
}

/** True if a marker proves `walPath` is archived with exactly the bytes now on disk. Consumes the marker. */
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
    if (!inScope(marker, scope)) return false;
    if (!sameFile(fileIdentity(await stat(walPath, { bigint: true })), marker.source)) return false;
    log.info(
      `${name} was archived ahead of time (${marker.size} bytes, sha256 ${marker.sha256.slice(0, 12)}…, verified in the store then; unchanged on disk since)`,
    );
    return true;
  } catch {
    return false; // whatever went wrong, a full push decides
  } finally {
    await unlink(file).catch(() => undefined);
  }
}

function inScope(marker: Marker, scope: MarkerScope): boolean {
  return marker.walbridge === 1 && marker.repository === scope.repository && marker.namespace === scope.namespace;
}

let writes = 0;

export async function writeMarker(walDir: string, scope: MarkerScope, name: string, stored: StoredFile, log: Logger): Promise<void> {
  const dir = markerDir(walDir);
  const marker: Marker = {
    walbridge: 1,
    repository: scope.repository,
    namespace: scope.namespace,
    sha256: stored.sha256,
    size: stored.size,
    source: stored.source,
    ...(scope.callKey ? { fast: frontEndRecord(scope.callKey, stored.source) } : {}),
  };
  const temp = path.join(dir, `.${name}.${process.pid}.${writes++}`);
  try {
    // No mkdir here: the pusher made the directory when it started, and must never re-create it under an rm -rf.
    await writeFile(temp, JSON.stringify(marker));
    await rename(temp, path.join(dir, name));
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    log.warn(`could not record that ${name} was archived ahead (it will be pushed again when asked): ${(err as Error).message}`);
  }
}

/**
 * `.<name>.pushing`, holding a pid, while a process stores `name`: the pusher (bin/archive-push
 * then waits for its marker rather than start Node) or a call pushing its own file (the pusher's
 * scan then leaves that file alone). Removed once the push ended; one left by a process that
 * died names a pid that is gone, and the next pusher removes it (prepareMarkers).
 */
export function inFlightFile(walDir: string, name: string): string {
  return path.join(markerDir(walDir), `.${name}.pushing`);
}

/** `create`: a live call may make the directory (a background process never re-creates what was removed). */
export async function markInFlight(walDir: string, name: string, create = false): Promise<void> {
  if (create) await mkdir(markerDir(walDir), { recursive: true, mode: 0o700 }).catch(() => undefined);
  // Written whole, then renamed: bin/archive-push reads the pid in it, and a file it finds still
  // empty names no live pusher (it then starts Node when the pusher was about to answer).
  const temp = path.join(markerDir(walDir), `.${name}.${process.pid}.${writes++}`);
  await writeFile(temp, `${process.pid}\n`)
    .then(() => rename(temp, inFlightFile(walDir, name)))
    .catch(() => unlink(temp).catch(() => undefined));
}

export async function clearInFlight(walDir: string, name: string): Promise<void> {
  await unlink(inFlightFile(walDir, name)).catch(() => undefined);
}

/** Whether another live process (a call pushing its own file) is storing `name`. */
export async function pushedElsewhere(walDir: string, name: string): Promise<boolean> {
  const pid = Number((await readFile(inFlightFile(walDir, name), 'utf8').catch(() => '')).trim());
  return Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid);
}

export async function listMarkers(walDir: string): Promise<string[]> {
  try {
    return (await readdir(markerDir(walDir))).filter((n) => parseWalFileName(n) !== undefined);
  } catch {
    return [];
  }
}

export async function removeMarker(walDir: string, name: string): Promise<void> {
  await unlink(path.join(markerDir(walDir), name)).catch(() => undefined);
}

/**
 * Makes the marker directory (not its parent, pg_wal/walbridge/, which a call made) and removes
 * what no pusher of `scope` can use: half-written markers and `.pushing` files of killed
 * processes (only the pusher holding the lock writes markers) and markers for another
 * repository or namespace.
 */
export async function prepareMarkers(walDir: string, scope: MarkerScope): Promise<void> {
  await mkdir(markerDir(walDir), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  for (const entry of await readdir(markerDir(walDir)).catch(() => [] as string[])) {
    const file = path.join(markerDir(walDir), entry);
    const pushing = /^\.(.+)\.pushing$/.exec(entry);
    if (pushing && (await pushedElsewhere(walDir, pushing[1]!))) continue; // a call pushing its own file
    // A temp file another live process (a call, a pusher retiring) is about to rename into place.
    const writer = /^\..+\.(\d+)\.\d+$/.exec(entry);
    if (writer && Number(writer[1]) !== process.pid && processAlive(Number(writer[1]))) continue;
    const usable =
      !entry.startsWith('.') &&
      (await readFile(file, 'utf8')
        .then((text) => inScope(JSON.parse(text) as Marker, scope))
        .catch(() => false));
    if (!usable) await unlink(file).catch(() => undefined);
  }
}
