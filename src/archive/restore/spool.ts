/**
 * The prefetch spool, `pg_wal/walbridge/prefetch/<namespace>-<repository hash>/`: segments
 * downloaded ahead (prefetch.ts, fetcher.ts), each verified like `%p` on arrival, and served by
 * a rename after its page header is checked again against the identity kept beside them. This
 * module is what a call needs to serve from the spool: no SDK, no codec, no request.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { publishFile } from '../../util/durable.js';
import { processAlive } from '../../util/temp-files.js';
import { readRecoverySignal } from '../../wal/datadir.js';
import { nextSegmentName, type WalFileName } from '../../wal/names.js';
import { checkRestoredSegment, type ClusterIdentity } from '../repo/identity.js';
import { frontEndFile, prefetchDir, servedNoteFile, walDirOf, walbridgeDir } from '../local-layout.js';

/** Disk the spool may use, whatever the segment size. */
const SPOOL_BYTES = 1024 * 1024 * 1024;

/** `pg_wal/walbridge/prefetch/<namespace>-<hash of the repository>`, or undefined outside pg_wal. */
export function spoolDir(scope: Pick<SpoolScope, 'repository' | 'namespace'>, destination: string): string | undefined {
  const walDir = walDirOf(destination);
  if (!walDir) return undefined;
  const repo = createHash('sha256').update(scope.repository).digest('hex').slice(0, 12);
  return path.join(prefetchDir(walDir), `${scope.namespace}-${repo}`);
}

/**
 * How many segments the spool may hold on the disk of `dir`: never more than half of what is
 * free once the segment being restored has its place, so prefetching never takes the space
 * PostgreSQL needs (pg_wal is often a volume of its own).
 */
export async function affordableSegments(dir: string, segmentSize: number): Promise<number> {
  try {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize - 2 * segmentSize;
    return Math.max(0, Math.floor(free / 2 / segmentSize));
  } catch {
    return 0;
  }
}

/** The segments to hold after `file`: the next ones on its timeline, within the disk budget. */
export function prefetchWindow(file: WalFileName, segmentSize: number, prefetch: number): string[] {
  const count = Math.min(prefetch, Math.floor(SPOOL_BYTES / segmentSize));
  const names = [file.name];
  for (let i = 0; i < count; i++) names.push(nextSegmentName(names[names.length - 1]!, segmentSize)!);
  return names;
}

/** Removes everything outside `window` (and temp files of killed processes); returns what is spooled. */
async function tidySpool(spool: string, window: readonly string[]): Promise<Set<string>> {
  const keep = new Set(window);
  const spooled = new Set<string>();
  for (const entry of await readdir(spool)) {
    if (entry === IDENTITY_FILE) continue;
    const writer = /\.walbridge-(\d+)-/.exec(entry);
    if (keep.has(entry)) spooled.add(entry);
    else if (!writer || !processAlive(Number(writer[1]))) await unlink(path.join(spool, entry)).catch(() => undefined);
  }
  return spooled;
}

/** What a spool belongs to: the repository (see repo/open.ts repositoryId) and namespace. */
export interface SpoolScope {
  readonly repository: string;
  readonly namespace: string;
  readonly log: Logger;
}

/** The identity spooled files were verified against. */
const IDENTITY_FILE = 'identity';

let identityWrites = 0;

async function writeSpoolIdentity(spool: string, identity: ClusterIdentity): Promise<void> {
  const temp = path.join(spool, `.${IDENTITY_FILE}.walbridge-${process.pid}-${identityWrites++}`);
  await writeFile(temp, JSON.stringify(identity));
  await rename(temp, path.join(spool, IDENTITY_FILE));
}

/**
 * Moves `file` from the spool to `destination` if it is there; false otherwise. Makes no
 * request: the file was verified when it arrived, and its header is checked again here.
 */
export async function serveSpooled(scope: SpoolScope, file: WalFileName, destination: string, announce = true): Promise<boolean> {
  const spool = spoolDir(scope, destination);
  if (!spool || file.kind !== 'segment') return false;
  const spooled = path.join(spool, file.name);
  let fh;
  let identity: ClusterIdentity;
  try {
    identity = JSON.parse(await readFile(path.join(spool, IDENTITY_FILE), 'utf8')) as ClusterIdentity;
    fh = await open(spooled, 'r');
  } catch {
    return false;
  }
  try {
    await checkRestoredSegment({ log: scope.log, namespace: scope.namespace }, fh, file, identity, spooled);
  } catch (err) {
    await unlink(spooled).catch(() => undefined);
    throw err;
  } finally {
    await fh.close();
  }
  await publishFile(spooled, destination);
  if (announce) scope.log.info(`restored ${file.name} from the prefetch spool`);
  return true;
}

/** Whether the spool holds `file` (verified when it arrived), for the call whose `%p` is `destination`. */
export async function isSpooled(scope: Pick<SpoolScope, 'repository' | 'namespace'>, file: WalFileName, destination: string): Promise<boolean> {
  const spool = spoolDir(scope, destination);
  if (!spool || file.kind !== 'segment') return false;
  return stat(path.join(spool, file.name)).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Creates the spool if needed, keeps only `window` in it, records `identity`; returns what is
 * spooled. Never creates pg_wal/walbridge/ itself (a background process must not re-create
 * what was removed): `home` says whether the caller, a live call, may.
 */
export async function prepareSpool(
  spool: string,
  window: readonly string[],
  identity: ClusterIdentity,
  home: 'create-home' | 'home-exists',
): Promise<Set<string>> {
  const walDir = path.dirname(path.dirname(path.dirname(spool)));
  for (const dir of [...(home === 'create-home' ? [walbridgeDir(walDir)] : []), prefetchDir(walDir), spool]) {
    await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
  const spooled = await tidySpool(spool, window);
  await writeSpoolIdentity(spool, identity);
  return spooled;
}

/**
 * Lets bin/archive-fetch answer the calls with `key` (front-end.ts) from `spool` by itself, with
 * no Node start: a rename, as serveSpooled does once the header is checked again (every spooled
 * file was verified and made durable when it arrived). The caller says only for calls that need
 * nothing else: without waiting (a waiting call consults the triggers first), without --cleanup,
 * without --metrics-file. Best effort: without it, calls go through Node.
 */
export async function recordFrontEnd(walDir: string, key: string, spool: string): Promise<void> {
  const file = frontEndFile(walDir);
  const line = `${key} ${path.basename(spool)}\n`;
  if ((await readFile(file, 'utf8').catch(() => '')) === line) return;
  const temp = path.join(prefetchDir(walDir), `.front-end.walbridge-${process.pid}`);
  try {
    // A live call may make it (the first call of a standby, before any spool): the next call's script reads the record.
    await mkdir(prefetchDir(walDir), { recursive: true, mode: 0o700 });
    await writeFile(temp, line);
    await rename(temp, file);
  } catch {
    await unlink(temp).catch(() => undefined);
  }
}

/** The segment bin/archive-fetch last served from the spool by itself, if any. */
export async function readServedNote(walDir: string): Promise<string | undefined> {
  const name = (await readFile(servedNoteFile(walDir), 'utf8').catch(() => '')).trim();
  return name === '' ? undefined : name;
}

/** Empties the spool (the disk is full: the segment being restored comes first). */
export async function emptySpool(spool: string): Promise<void> {
  await tidySpool(spool, []).catch(() => undefined);
}

/**
 * Once recovery has ended (no signal file left), the spool can serve nobody: it is removed.
 * True if recovery has ended. Costs one stat while there is no spool and no recovery.
 */
export async function removeSpoolAfterRecovery(walDir: string): Promise<boolean> {
  if (await readRecoverySignal(path.dirname(walDir))) return false;
  await rm(prefetchDir(walDir), { recursive: true, force: true }).catch(() => undefined);
  return true;
}

/** Whether `err` is the disk being full (or over quota). */
export function diskFull(err: unknown): boolean {
  const code = ((err as { cause?: { code?: string } }).cause ?? (err as { code?: string }))?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
