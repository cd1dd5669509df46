/**
 * The prefetch spool, `pg_wal/walbridge/prefetch/<namespace>-<repository hash>/`: segments
 * downloaded ahead (prefetch.ts, fetcher.ts), each verified like `%p` on arrival, and served by
 * a rename after its page header is checked again against the identity kept beside them. This
 * module is what a call needs to serve from the spool: no SDK, no codec, no request.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../errors.js';
import type { Logger } from '../log.js';
import { fsyncDir } from '../util/durable.js';
import { processAlive } from '../util/pid-lock.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { nextSegmentName, type WalFileName } from '../wal/names.js';
import { checkRestoredSegment, type ClusterIdentity } from './identity.js';

/** Disk the spool may use, whatever the segment size. */
const SPOOL_BYTES = 1024 * 1024 * 1024;

/** `pg_wal/walbridge/prefetch/<namespace>-<hash of the repository>`, or undefined outside pg_wal. */
export function spoolDir(scope: Pick<SpoolScope, 'repository' | 'namespace'>, destination: string): string | undefined {
  if (!dataDirOfWalPath(destination)) return undefined;
  const repo = createHash('sha256').update(scope.repository).digest('hex').slice(0, 12);
  return path.join(path.dirname(path.resolve(destination)), 'walbridge', 'prefetch', `${scope.namespace}-${repo}`);
}

/** The segments to hold after `file`: the next ones on its timeline, within the disk budget. */
export function prefetchWindow(file: WalFileName, segmentSize: number, prefetch: number): string[] {
  const count = Math.min(prefetch, Math.max(1, Math.floor(SPOOL_BYTES / segmentSize)));
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

/** What a spool belongs to: the repository (see cli/repository.ts repositoryId) and namespace. */
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
  try {
    await rename(spooled, destination);
    await fsyncDir(path.dirname(path.resolve(destination)));
  } catch (err) {
    throw new WalbridgeError('localIo', `cannot publish ${destination}: ${(err as Error).message}`);
  }
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

/** Creates the spool if needed, keeps only `window` in it, records `identity`; returns what is spooled. */
export async function prepareSpool(spool: string, window: readonly string[], identity: ClusterIdentity): Promise<Set<string>> {
  await mkdir(spool, { recursive: true });
  const spooled = await tidySpool(spool, window);
  await writeSpoolIdentity(spool, identity);
  return spooled;
}
