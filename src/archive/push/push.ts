/**
 * archive_command: store one finished WAL file, and succeed only when the store holds exactly
 * these bytes under its name. PostgreSQL deletes or recycles the file once we exit 0, so a
 * false success loses WAL; a false failure only makes the archiver try again.
 */
import type { Settings } from '../../config/settings.js';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { describeContent, sealFile } from '../../codec/envelope.js';
import type { CodecName } from '../../codec/codecs.js';
import type { KeyRing } from '../../codec/keys.js';
import { codecAvailable } from '../../codec/compression.js';
import { WalbridgeError } from '../../errors.js';
import { formatBytes, type Logger } from '../../log.js';
import { withinTimeout, type RetryPolicy } from '../../storage/retry.js';
import { bodySize, type ObjectInfo, type Store } from '../../storage/store.js';
import { dataDirOfWalPath, readControlSystemIdentifier } from '../../wal/datadir.js';
import { KNOWN_WAL_VERSIONS, LONG_HEADER_SIZE, headerMismatch, parseLongPageHeader, type LongPageHeader } from '../../wal/header.js';
import { parseWalFileName, type WalFileName } from '../../wal/names.js';
import { clusterMismatch, establishIdentity, identityFromHeader, loadIdentity, type ClusterIdentity } from '../repo/identity.js';
import { walFileKey } from '../repo/layout.js';
import { fencedError, findFork, historyName, pastFork } from '../repo/timelines.js';
import { fileIdentity, type FileIdentity } from '../../util/file-identity.js';
import type { TakeTurn } from '../../util/slots.js';

export interface PushContext {
  readonly store: Store;
  readonly namespace: string;
  readonly codec: CodecName;
  readonly level: number | undefined;
  /** Set: objects are encrypted with its current key. */
  readonly encryption: KeyRing | undefined;
  readonly log: Logger;
  /** The store's retries; a push is one operation: --timeout bounds it whole. */
  readonly retry: RetryPolicy;
  /**
   * Set by the background pusher, whose pushes run several at once: a file is read and sealed
   * (hashed, compressed, encrypted) when this lets it, so that few whole segments are in memory
   * however many uploads are under way. Without it (a call pushing by itself), at once.
   */
  readonly sealing?: TakeTurn;
}

export interface PushResult {
  readonly outcome: 'archived' | 'already-archived';
  /** The plain content that is now stored, and the source file it was read from. */
  readonly sha256: string;
  readonly size: number;
  readonly source: FileIdentity;
}

/** A push's context from a command's settings. */
export function pushContext(settings: Settings, store: Store, retry: RetryPolicy, log: Logger): PushContext {
  return { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, encryption: settings.encryption, log, retry };
}

/** Stores one WAL file, within --timeout from the start: every request, retry and wait included. */
export function pushWalFile(ctx: PushContext, sourcePath: string): Promise<PushResult> {
  return withinTimeout(ctx.retry, `push of ${path.basename(sourcePath)}`, () => pushWithin(ctx, sourcePath));
}

async function pushWithin(ctx: PushContext, sourcePath: string): Promise<PushResult> {
  const started = Date.now();
  const name = path.basename(sourcePath);
  const file = parseWalFileName(name);
  if (!file) {
    throw new WalbridgeError('badName', `refusing ${JSON.stringify(name)}: not a WAL file name (a segment, .partial, .history or .backup file)`);
  }
  const source = await inspectSource(sourcePath);
  const header = file.kind === 'segment' || file.kind === 'partial' ? checkSegment(source, file) : undefined;
  if (header && header.pgVersion === undefined) {
    // A newer PostgreSQL than this build: every other check still applies, so it is archived.
    ctx.log.warn(
      `${name}: WAL page magic 0x${header.magic.toString(16).toUpperCase()} is not one this walbridge knows (PostgreSQL ${KNOWN_WAL_VERSIONS}); archiving it all the same: update walbridge`,
    );
  }

  const objectKey = walFileKey(ctx.namespace, file);
  // Compressing and hashing (CPU, local disk) overlaps the two lookups (network).
  const codec = usableCodec(ctx);
  const key = ctx.encryption?.current;
  const seal = () => sealFile(sourcePath, { codec, level: ctx.level, spoolDir: path.dirname(sourcePath), encryption: key && { key, fileName: name } });
  const sealing = readSource(sourcePath, () => (ctx.sealing ? ctx.sealing(name, seal) : seal()));
  sealing.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
  // A newer timeline's fork fences this one's later WAL (repo/timelines.ts); looked up alongside.
  const fencing =
    file.kind === 'segment' || file.kind === 'backup' ? findFork(ctx.store, ctx.namespace, file.timeline, ctx.encryption) : Promise.resolve(undefined);
  fencing.catch(() => undefined);
  let identity: ClusterIdentity | undefined;
  let existing: ObjectInfo | undefined;
  try {
    [identity, existing] = await Promise.all([loadIdentity(ctx.store, ctx.namespace), ctx.store.head(objectKey)]);
    await checkCluster(ctx, identity, header, file, sourcePath);
  } catch (err) {
    await sealing.then(
      (s) => s.dispose(),
      () => undefined,
    );
    throw err;
  }
  const sealed = await sealing;
  try {
    if (sealed.size !== source.size) {
      throw new WalbridgeError('localIo', `${sourcePath} changed size while being read (${source.size} → ${sealed.size} bytes)`);
    }
    const result = (outcome: PushResult['outcome']): PushResult => ({ outcome, sha256: sealed.sha256, size: sealed.size, source: source.identity });
    // Stored already: a repeated call, even past a fork, is told the truth.
    if (existing) return result(confirmDuplicate(ctx, existing, sealed.sha256, sealed.size, file));
    const fork = await fencing;
    const segmentSize = header?.segmentSize ?? identity?.segmentSize;
    if (fork && segmentSize && pastFork(file, segmentSize, fork)) {
      // A server that holds the newer timeline's history in its own pg_wal is on that timeline's
      // side (the promoted server archiving the old timeline's last segment, a standby that
      // followed it with archive_mode = always); an old primary never has it.
      if (!existsSync(path.join(path.dirname(sourcePath), historyName(fork.newer)))) throw fencedError(ctx.namespace, name, fork);
      ctx.log.info(`${name} reaches past where timeline ${fork.newer} branched off, and this server has ${historyName(fork.newer)}: archiving it`);
    }
    if (!identity && header) {
      // First segment of this namespace: record whose it is (or learn another writer beat us to it).
      const recorded = await establishIdentity(ctx.store, ctx.namespace, identityFromHeader(header, name));
      await checkCluster(ctx, recorded, header, file, sourcePath);
    }
    const outcome = await ctx.store.putIfAbsent(objectKey, sealed);
    // Do not trust the precondition alone: read back what the store now holds under the name.
    const stored = await ctx.store.head(objectKey);
    const promised = stored ? describeContent(stored.metadata) : 'it is absent';
    const storedSizeWrong = stored !== undefined && outcome === 'created' && stored.size !== bodySize(sealed.body);
    if (typeof promised === 'string' || promised.sha256 !== sealed.sha256 || promised.size !== sealed.size || storedSizeWrong) {
      if (outcome === 'exists' && stored) return result(confirmDuplicate(ctx, stored, sealed.sha256, sealed.size, file));
      throw new WalbridgeError(
        'storeError',
        `${name}: after storing, ${ctx.store.location} does not hold the object we wrote (${typeof promised === 'string' ? promised : storedSizeWrong ? `${stored!.size} bytes stored, ${bodySize(sealed.body)} sent` : 'different content hash'})`,
      );
    }
    if (outcome === 'exists') return result(confirmDuplicate(ctx, stored!, sealed.sha256, sealed.size, file));
    ctx.log.info(
      `archived ${name} (${formatBytes(sealed.size)}, stored ${formatBytes(bodySize(sealed.body))} ${codec}${key ? `, encrypted with key ${key.id}` : ''}) in ${Date.now() - started} ms`,
    );
    return result('archived');
  } finally {
    await sealed.dispose();
  }
}

/** The configured codec, or gzip (Node's own zlib) when its native package cannot load here. */
function usableCodec(ctx: PushContext): CodecName {
  if (codecAvailable(ctx.codec)) return ctx.codec;
  ctx.log.warn(`codec ${ctx.codec} cannot be loaded on this machine; storing with gzip instead (set compress = gzip to silence this)`);
  return 'gzip';
}

interface SourceFile {
  readonly size: number;
  readonly identity: FileIdentity;
  /** The first bytes, enough for a segment's long page header. */
  readonly head: Buffer;
}

async function inspectSource(sourcePath: string): Promise<SourceFile> {
  return readSource(sourcePath, async () => {
    const fh = await open(sourcePath, 'r');
    try {
      const stat = await fh.stat({ bigint: true });
      const head = Buffer.alloc(LONG_HEADER_SIZE);
      const { bytesRead } = await fh.read(head, 0, LONG_HEADER_SIZE, 0);
      return { size: Number(stat.size), identity: fileIdentity(stat), head: head.subarray(0, bytesRead) };
    } finally {
      await fh.close();
    }
  });
}

async function readSource<T>(sourcePath: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof WalbridgeError || !(err as NodeJS.ErrnoException).syscall) throw err;
    throw new WalbridgeError('localIo', `cannot read ${sourcePath}: ${(err as Error).message}`);
  }
}

/** A segment must carry a long page header that matches its name, and be exactly one segment long. */
function checkSegment(source: SourceFile, file: WalFileName): LongPageHeader {
  const header = parseLongPageHeader(source.head);
  if (typeof header === 'string') throw new WalbridgeError('notWal', `refusing ${file.name}: not a WAL segment (${header})`);
  if (source.size !== header.segmentSize) {
    throw new WalbridgeError(
      'notWal',
      `refusing ${file.name}: it is ${source.size} bytes, but its cluster's segments are ${header.segmentSize} bytes (a truncated or padded copy?)`,
    );
  }
  const mismatch = headerMismatch(header, file);
  if (mismatch) throw new WalbridgeError('notWal', `refusing ${file.name}: ${mismatch} (a renamed file?)`);
  return header;
}

async function checkCluster(
  ctx: PushContext,
  identity: ClusterIdentity | undefined,
  header: LongPageHeader | undefined,
  file: WalFileName,
  sourcePath: string,
): Promise<void> {
  if (!identity) return;
  if (header) {
    const mismatch = clusterMismatch(identity, header, ctx.namespace);
    if (mismatch) throw new WalbridgeError('foreignCluster', `refusing ${file.name}: ${mismatch}`);
    return;
  }
  // .history and .backup files carry no header; pg_control next to pg_wal says whose they are.
  const dataDir = dataDirOfWalPath(sourcePath);
  const systemIdentifier = dataDir && (await readControlSystemIdentifier(dataDir));
  if (systemIdentifier && systemIdentifier !== identity.systemIdentifier) {
    throw new WalbridgeError(
      'foreignCluster',
      `refusing ${file.name}: it comes from the cluster with system identifier ${systemIdentifier} (${dataDir}), but namespace "${ctx.namespace}" belongs to system identifier ${identity.systemIdentifier}`,
    );
  }
}

/** PostgreSQL may push a file again after a crash: identical content is success, anything else is not. */
function confirmDuplicate(ctx: PushContext, existing: ObjectInfo, sha256: string, size: number, file: WalFileName): PushResult['outcome'] {
  const promised = describeContent(existing.metadata);
  if (typeof promised === 'string') {
    throw new WalbridgeError(
      'conflict',
      `refusing ${file.name}: ${ctx.store.location} already holds an object under this name and ${promised}; it was left untouched`,
    );
  }
  if (promised.size !== size || promised.sha256 !== sha256) {
    throw new WalbridgeError(
      'conflict',
      `refusing ${file.name}: different content is already archived under this name (stored ${promised.size} bytes sha256 ${promised.sha256.slice(0, 12)}…); the stored object was left untouched. Two primaries writing to namespace "${ctx.namespace}"?`,
    );
  }
  if (existing.notEncryptedAsAsked) {
    // Stored before encryption was asked for, or by a server that ignores it: not archived as configured.
    throw new WalbridgeError(
      'storeError',
      `refusing to count ${file.name} as archived: ${ctx.store.location} holds identical content under its name, but ${existing.notEncryptedAsAsked}; re-encrypt or delete that object, or change the encryption settings`,
    );
  }
  ctx.log.info(`${file.name} is already archived with identical content; nothing to do`);
  return 'already-archived';
}
