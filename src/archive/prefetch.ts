/**
 * Prefetch for restore_command. The startup process asks for one segment at a time and waits
 * for each, so catching up from the archive costs one download per process start. When a
 * segment has to be downloaded we also download the next few of its timeline, in parallel,
 * into a spool (`pg_wal/walbridge/prefetch/<namespace>-<repo hash>/`); the next calls are
 * answered from it by a rename, without waiting for any download.
 *
 * Safety: a spooled file gets there only through the same verified download as `%p` (content
 * hash, size, page header, cluster identity, atomic rename), and its page header is checked
 * again when served, against the identity it was verified with (kept beside it), so serving
 * needs no request and, without waiting, no SDK at all. Wrong guesses cost only disk and bandwidth: the
 * spool holds only the window after the segment being restored (a timeline switch, a moved
 * `%r` or pg_rewind's calls just leave files that the next call removes), and at most
 * SPOOL_BYTES of segments.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WalbridgeError } from '../errors.js';
import type { Logger } from '../log.js';
import { fsyncDir } from '../util/durable.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { nextSegmentName, parseWalFileName, type WalFileName } from '../wal/names.js';
import { checkRestoredSegment, restoreIfPresent, type FetchContext } from './fetch.js';
import type { ClusterIdentity } from './identity.js';
import { walFileKey, walPrefix } from './layout.js';

/** Disk the spool may use, whatever the segment size. */
const SPOOL_BYTES = 1024 * 1024 * 1024;
/** After the requested file is restored, how long prefetches may still hold up the answer. */
const PREFETCH_GRACE_MS = 10_000;

/**
 * Restores `file` to `destination` (from the spool when it is there), and fills the spool
 * with the segments that follow it. The answer is about `file` alone.
 */
export async function restoreWithPrefetch(
  ctx: FetchContext,
  file: WalFileName,
  destination: string,
  identity: ClusterIdentity | undefined,
): Promise<'restored' | 'absent'> {
  const spool = spoolDir(ctx, destination);
  if (!spool || file.kind !== 'segment' || !identity || ctx.prefetch < 1) return restoreIfPresent(ctx, file, destination, identity);
  // While the spool holds the segment, answer at once: no download to wait for. When it runs
  // dry, the segment and the whole window after it are fetched together, in parallel.
  if (await serveSpooled(ctx, file, destination)) return 'restored';

  const window = prefetchWindow(file, identity.segmentSize, ctx.prefetch);
  let spooled: Set<string>;
  try {
    await mkdir(spool, { recursive: true });
    spooled = await tidySpool(spool, window);
    await writeSpoolIdentity(spool, identity);
  } catch (err) {
    // The spool is an optimisation: a full disk or a permission problem there must not stop the restore.
    ctx.log.warn(`prefetch disabled for this call: cannot prepare ${spool}: ${(err as Error).message}`);
    return restoreIfPresent(ctx, file, destination, identity);
  }
  const wanted = window.slice(1).filter((name) => !spooled.has(name));
  const archived = await archivedAmong(ctx, file, wanted);
  const ahead = wanted
    .filter((name) => archived.has(name))
    .map((name) => restoreIfPresent(ctx, parseWalFileName(name)!, path.join(spool, name), identity, 'prefetched').catch(() => 'absent' as const));
  try {
    return await restoreIfPresent(ctx, file, destination, identity);
  } finally {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(ahead), new Promise((resolve) => (timer = setTimeout(resolve, PREFETCH_GRACE_MS)))]);
    clearTimeout(timer);
  }
}

/**
 * Which of `names` (segments after `file`, on its timeline) are archived: one listing instead
 * of a GET per name, which matters once the standby has caught up and most are not there yet.
 */
async function archivedAmong(ctx: FetchContext, file: WalFileName, names: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  if (names.length === 0) return found;
  const wanted = new Set(names);
  const last = names[names.length - 1]!;
  try {
    for await (const object of ctx.store.list(walPrefix(ctx.namespace) + file.name.slice(0, 8), walFileKey(ctx.namespace, file))) {
      const name = object.key.slice(object.key.lastIndexOf('/') + 1);
      if (name > last && !name.startsWith(last)) break;
      if (wanted.has(name)) found.add(name);
    }
  } catch (err) {
    ctx.log.warn(`prefetch skipped: cannot list what follows ${file.name}: ${(err as Error).message}`);
  }
  return found;
}

/** `pg_wal/walbridge/prefetch/<namespace>-<hash of the repository>`, or undefined outside pg_wal. */
function spoolDir(scope: SpoolScope, destination: string): string | undefined {
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
    if (keep.has(entry)) spooled.add(entry);
    else await unlink(path.join(spool, entry)).catch(() => undefined);
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

async function writeSpoolIdentity(spool: string, identity: ClusterIdentity): Promise<void> {
  const temp = path.join(spool, `.${IDENTITY_FILE}.${process.pid}`);
  await writeFile(temp, JSON.stringify(identity));
  await rename(temp, path.join(spool, IDENTITY_FILE));
}

/**
 * Moves `file` from the spool to `destination` if it is there; false otherwise. Makes no
 * request: the file was verified when it arrived, and its header is checked again here.
 */
export async function serveSpooled(scope: SpoolScope, file: WalFileName, destination: string): Promise<boolean> {
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
  scope.log.info(`restored ${file.name} from the prefetch spool`);
  return true;
}
