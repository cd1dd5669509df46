/**
 * Record-based log shipping (`walbridge stream`): beside the primary, ship the flushed bytes of
 * the segment PostgreSQL is writing, so that a smart failover loses at most one polling interval
 * of commits instead of up to archive_timeout.
 *
 * Only bytes below the primary's *flush* position are read (from the segment file in pg_wal):
 * flushed WAL is durable and never rewritten, so every chunk is a true part of the segment the
 * primary will eventually archive whole — even if it crashes, crash recovery keeps what was
 * flushed (a record cut short at the end is skipped by replay, on the standby as on the primary).
 * Chunks of segments that archive-push has since stored whole are removed.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { sealFile } from '../../codec/envelope.js';
import type { CodecName } from '../../codec/codecs.js';
import type { KeyRing } from '../../codec/keys.js';
import { WalbridgeError } from '../../errors.js';
import { formatBytes, type Logger } from '../../log.js';
import { retryTransient, type RetryPolicy } from '../../storage/retry.js';
import type { Store } from '../../storage/store.js';
import { formatLsn, headerMismatch, parseLongPageHeader, LONG_HEADER_SIZE } from '../../wal/header.js';
import { readyWalFiles } from '../../wal/archive-status.js';
import { formatSegmentName, parseWalFileName, segmentNumber } from '../../wal/names.js';
import { streamPrefix, walFileKey } from '../repo/layout.js';
import { chainEnd, chunkKey, chunkName, listChunks, longestPrefixChain } from '../repo/stream-chunks.js';
import { fencedError, findFork, type Fork } from '../repo/timelines.js';

export interface StreamContext {
  readonly store: Store;
  readonly namespace: string;
  readonly walDir: string;
  readonly segmentSize: number;
  readonly codec: CodecName;
  readonly level: number | undefined;
  readonly encryption: KeyRing | undefined;
  readonly retry: RetryPolicy;
  readonly log: Logger;
}

/** The primary's WAL flush position. */
export interface FlushPosition {
  readonly timeline: number;
  readonly lsn: bigint;
}

/** Most bytes in one chunk: a big catch-up (a 1 GiB segment) is shipped in bounded memory. */
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
/** A time between removal sweeps: archived segments' chunks are not urgent. */
const CLEANUP_EVERY_MS = 10_000;
/** How often the streamed timeline's fork is looked up again: a promotion elsewhere fences this server within this. */
const FENCE_CHECK_MS = 5_000;

export class SegmentStreamer {
  /** The segment being shipped, and how far it is in the store. */
  private current: { timeline: number; segno: bigint; name: string; shipped: number } | undefined;
  /** Segments shipped to their end (or left behind), whose chunks go once they are archived. */
  private readonly finished = new Set<string>();
  private cleanedAt = 0;
  /** The fork of the streamed timeline, as last looked up. */
  private fence: { timeline: number; checkedAt: number; fork: Fork | undefined } | undefined;
  /** The last warning given, not repeated every interval. */
  private warned = '';

  constructor(private readonly ctx: StreamContext) {}

  /** Queues every segment with chunks in the store for removal once archived (a restart's leftovers). */
  async discoverLeftovers(): Promise<void> {
    for await (const object of this.ctx.store.list(streamPrefix(this.ctx.namespace))) {
      const segment = object.key.slice(streamPrefix(this.ctx.namespace).length).split('/')[0]!;
      if (parseWalFileName(segment)?.kind === 'segment') this.finished.add(segment);
    }
  }

  /** Ships what was flushed since the last call; returns the bytes shipped. */
  async advance(position: FlushPosition): Promise<number> {
    await this.checkFence(position);
    const size = BigInt(this.ctx.segmentSize);
    const segno = position.lsn / size;
    const offset = Number(position.lsn % size);
    if (!this.current || this.current.timeline !== position.timeline) {
      if (this.current) this.finished.add(this.current.name);
      this.current = await this.resume(position.timeline, await this.firstToShip(position.timeline, segno));
    }
    if (segno < this.current.segno) {
      // Flushed WAL never moves back: this server lost some (restored from a copy?).
      this.warnOnce(
        `the primary's flush position is in ${formatSegmentName(position.timeline, segno, this.ctx.segmentSize)}, behind ${this.current.name} streamed already: nothing is shipped until it passes that`,
      );
      return 0;
    }
    let shipped = 0;
    // Segments completed since the last call are shipped to their end (the archiver may lag),
    // unless archive-push has stored them already.
    while (this.current.segno < segno) {
      const file = parseWalFileName(this.current.name)!;
      if (!(await this.ctx.store.head(walFileKey(this.ctx.namespace, file)))) {
        shipped += await this.ship(this.current.segno, this.current.shipped, this.ctx.segmentSize, true);
      }
      this.finished.add(this.current.name);
      this.current = await this.resume(position.timeline, this.current.segno + 1n);
    }
    if (offset > this.current.shipped) shipped += await this.ship(segno, this.current.shipped, offset, false);
    await this.cleanUp(false);
    return shipped;
  }

  /**
   * Where a (re)started streamer begins: at the oldest segment of this timeline still waiting for
   * the archiver (its `.ready` file), if that is behind the flush position: what was flushed while
   * no streamer ran and is not archived yet is still worth shipping. (Not pg_stat_archiver: its
   * last file may be a .backup or another timeline's, and crash recovery resets it.)
   */
  private async firstToShip(timeline: number, flushSegno: bigint): Promise<bigint> {
    let first = flushSegno;
    for (const name of await readyWalFiles(this.ctx.walDir)) {
      const file = parseWalFileName(name)!;
      if (file.kind !== 'segment' || file.timeline !== timeline) continue;
      const segno = segmentNumber(file, this.ctx.segmentSize);
      if (segno < first) first = segno;
    }
    return first;
  }

  private async resume(timeline: number, segno: bigint): Promise<NonNullable<SegmentStreamer['current']>> {
    const name = formatSegmentName(timeline, segno, this.ctx.segmentSize);
    // After a restart, continue where the store's chunks end (flushed bytes never change).
    const shipped = chainEnd(longestPrefixChain(await listChunks(this.ctx.store, this.ctx.namespace, name)));
    if (shipped > 0) this.ctx.log.info(`resuming ${name} at offset ${shipped} (already in the store)`);
    return { timeline, segno, name, shipped };
  }

  /**
   * Stores bytes [start, end) of a segment as chunks of at most MAX_CHUNK_BYTES (bounded memory
   * with big segments); stops early if the file is gone (archived and recycled).
   */
  private async ship(segno: bigint, start: number, end: number, completed: boolean): Promise<number> {
    const current = this.current!;
    const name = formatSegmentName(current.timeline, segno, this.ctx.segmentSize);
    let shipped = 0;
    for (let from = start; from < end; ) {
      const to = Math.min(end, from + MAX_CHUNK_BYTES);
      const bytes = await this.read(name, from, to, completed);
      if (!bytes) {
        // A completed segment is done with; the current one is looked at again next interval.
        if (completed) current.shipped = end;
        return shipped;
      }
      const range = { start: from, end: to };
      const sealed = await sealFile(bytes, {
        codec: this.ctx.codec,
        level: this.ctx.level,
        spoolDir: this.ctx.walDir,
        // Bound to its key, namespace included: a chunk has no page header to tell its cluster by.
        encryption: this.ctx.encryption && { key: this.ctx.encryption.current, fileName: chunkKey(this.ctx.namespace, name, range) },
      });
      try {
        await retryTransient(this.ctx.retry, `store ${chunkName(name, range)}`, () =>
          this.ctx.store.putIfAbsent(chunkKey(this.ctx.namespace, name, range), sealed),
        );
      } finally {
        await sealed.dispose();
      }
      current.shipped = to;
      shipped += to - from;
      from = to;
    }
    return shipped;
  }

  /**
   * Bytes [start, end) of a segment file, checked to be that segment (its first page, read after
   * the bytes: a file recycled meanwhile names another segment); undefined if the file is gone or
   * was recycled, which happens only once the segment is archived (a long catch-up can meet that
   * even for the segment the flush position was in).
   */
  private async read(name: string, start: number, end: number, completed: boolean): Promise<Buffer | undefined> {
    const gone = (why: string) => {
      if (completed) this.ctx.log.info(`${name} ${why} (archived and recycled): nothing more to stream of it`);
      else this.warnOnce(`${name} ${why}, though the flush position was in it: looking again at the next interval`);
      return undefined;
    };
    let fh;
    try {
      fh = await open(path.join(this.ctx.walDir, name), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return gone('is no longer in pg_wal');
      throw new WalbridgeError('localIo', `cannot read ${name}: ${(err as Error).message}`);
    }
    try {
      const bytes = Buffer.alloc(end - start);
      const { bytesRead } = await fh.read(bytes, 0, bytes.length, start);
      if (bytesRead !== bytes.length) throw new WalbridgeError('localIo', `${name} ended at ${start + bytesRead} bytes, before the flush position ${end}`);
      const head = Buffer.alloc(LONG_HEADER_SIZE);
      await fh.read(head, 0, LONG_HEADER_SIZE, 0);
      const header = parseLongPageHeader(head);
      const problem = typeof header === 'string' ? header : headerMismatch(header, parseWalFileName(name)!);
      return problem ? gone(`now holds another segment or no WAL (${problem})`) : bytes;
    } finally {
      await fh.close();
    }
  }

  /**
   * Refuses (exit 16) to ship WAL past the point where a newer timeline branched off this one:
   * this server is an old primary after a failover. Looked up at the start, on a new timeline,
   * and every FENCE_CHECK_MS.
   */
  private async checkFence(position: FlushPosition): Promise<void> {
    if (this.fence?.timeline !== position.timeline || Date.now() - this.fence.checkedAt >= FENCE_CHECK_MS) {
      const fork = await findFork(this.ctx.store, this.ctx.namespace, position.timeline, this.ctx.encryption);
      this.fence = { timeline: position.timeline, checkedAt: Date.now(), fork };
    }
    const fork = this.fence.fork;
    if (fork && position.lsn > fork.switchpoint) {
      const segment = formatSegmentName(position.timeline, position.lsn / BigInt(this.ctx.segmentSize), this.ctx.segmentSize);
      throw fencedError(this.ctx.namespace, `to stream ${segment} up to ${formatLsn(position.lsn)}`, fork);
    }
  }

  private warnOnce(message: string): void {
    if (message === this.warned) return;
    this.warned = message;
    this.ctx.log.warn(message);
  }

  /** Removes the chunks of finished segments that are archived whole; `now` skips the pacing. */
  async cleanUp(now: boolean): Promise<void> {
    if (!now && Date.now() - this.cleanedAt < CLEANUP_EVERY_MS) return;
    this.cleanedAt = Date.now();
    for (const segment of [...this.finished]) {
      if (segment === this.current?.name) continue;
      // Archived whole, or as a .partial (the primary was promoted, or this timeline ended).
      const archived = await Promise.all([segment, `${segment}.partial`].map((n) => this.ctx.store.head(walFileKey(this.ctx.namespace, parseWalFileName(n)!))));
      if (!archived.some((info) => info !== undefined)) continue;
      const chunks = await listChunks(this.ctx.store, this.ctx.namespace, segment);
      // Last chunk first, so a failover listing meanwhile mostly sees a shorter prefix; one that
      // meets a vanished chunk finds the segment archived (restoreStreamed checks).
      await this.ctx.store.deleteMany(chunks.map((c) => c.key).reverse());
      this.finished.delete(segment);
      if (chunks.length > 0) this.ctx.log.info(`${segment} is archived: removed its ${chunks.length} streamed chunk${chunks.length === 1 ? '' : 's'}`);
    }
  }

  /** The LSN up to which the segment being shipped is in the store (undefined before the first pass). */
  shippedPosition(): bigint | undefined {
    return this.current && this.current.segno * BigInt(this.ctx.segmentSize) + BigInt(this.current.shipped);
  }

  describe(): string {
    return this.current ? `${this.current.name} up to ${formatBytes(this.current.shipped)}` : 'nothing yet';
  }
}
