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
import { sealFile } from '../codec/envelope.js';
import type { CodecName } from '../codec/codecs.js';
import type { KeyRing } from '../codec/keys.js';
import { WalbridgeError } from '../errors.js';
import { formatBytes, type Logger } from '../log.js';
import { retryTransient, type RetryPolicy } from '../storage/retry.js';
import type { Store } from '../storage/store.js';
import { headerMismatch, parseLongPageHeader, LONG_HEADER_SIZE } from '../wal/header.js';
import { formatSegmentName, parseWalFileName } from '../wal/names.js';
import { streamPrefix, streamSegmentPrefix, walFileKey } from './layout.js';
import { chainEnd, chunkKey, chunkName, listChunks, longestPrefixChain } from './stream-chunks.js';

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

/** A time between removal sweeps: archived segments' chunks are not urgent. */
const CLEANUP_EVERY_MS = 10_000;

export class SegmentStreamer {
  /** The segment being shipped, and how far it is in the store. */
  private current: { timeline: number; segno: bigint; name: string; shipped: number } | undefined;
  /** Segments shipped to their end (or left behind), whose chunks go once they are archived. */
  private readonly finished = new Set<string>();
  private cleanedAt = 0;

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
    const size = BigInt(this.ctx.segmentSize);
    const segno = position.lsn / size;
    const offset = Number(position.lsn % size);
    if (!this.current || this.current.timeline !== position.timeline) {
      if (this.current) this.finished.add(this.current.name);
      this.current = await this.resume(position.timeline, segno);
    }
    let shipped = 0;
    // Segments completed since the last call are shipped to their end: the archiver may lag.
    while (this.current.segno < segno) {
      shipped += await this.ship(this.current.segno, this.current.shipped, this.ctx.segmentSize);
      this.finished.add(this.current.name);
      this.current = await this.resume(position.timeline, this.current.segno + 1n);
    }
    if (offset > this.current.shipped) shipped += await this.ship(segno, this.current.shipped, offset);
    await this.cleanUp(false);
    return shipped;
  }

  private async resume(timeline: number, segno: bigint): Promise<NonNullable<SegmentStreamer['current']>> {
    const name = formatSegmentName(timeline, segno, this.ctx.segmentSize);
    // After a restart, continue where the store's chunks end (flushed bytes never change).
    const shipped = chainEnd(longestPrefixChain(await listChunks(this.ctx.store, this.ctx.namespace, name)));
    if (shipped > 0) this.ctx.log.info(`resuming ${name} at offset ${shipped} (already in the store)`);
    return { timeline, segno, name, shipped };
  }

  /** Stores bytes [start, end) of the segment as one chunk; 0 if its file is gone (archived and recycled). */
  private async ship(segno: bigint, start: number, end: number): Promise<number> {
    const current = this.current!;
    const name = formatSegmentName(current.timeline, segno, this.ctx.segmentSize);
    if (end <= start) return 0;
    const bytes = await this.read(name, start, end);
    if (!bytes) {
      current.shipped = end;
      return 0;
    }
    const range = { start, end };
    const sealed = await sealFile(bytes, {
      codec: this.ctx.codec,
      level: this.ctx.level,
      spoolDir: this.ctx.walDir,
      encryption: this.ctx.encryption && { key: this.ctx.encryption.current, fileName: chunkName(name, range) },
    });
    try {
      await retryTransient(this.ctx.retry, `store ${chunkName(name, range)}`, () => this.ctx.store.putIfAbsent(chunkKey(this.ctx.namespace, name, range), sealed));
    } finally {
      await sealed.dispose();
    }
    current.shipped = end;
    return end - start;
  }

  /** Bytes [start, end) of a segment file, checked to be that segment; undefined if the file is gone. */
  private async read(name: string, start: number, end: number): Promise<Buffer | undefined> {
    let fh;
    try {
      fh = await open(path.join(this.ctx.walDir, name), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.ctx.log.info(`${name} is no longer in pg_wal (archived and recycled): nothing more to stream of it`);
        return undefined;
      }
      throw new WalbridgeError('localIo', `cannot read ${name}: ${(err as Error).message}`);
    }
    try {
      const bytes = Buffer.alloc(end - start);
      const { bytesRead } = await fh.read(bytes, 0, bytes.length, start);
      if (bytesRead !== bytes.length) throw new WalbridgeError('localIo', `${name} ended at ${start + bytesRead} bytes, before the flush position ${end}`);
      // The first page names its segment: a file recycled under another name would not.
      const head = start === 0 ? bytes : await readHead(fh);
      const header = parseLongPageHeader(head.subarray(0, LONG_HEADER_SIZE));
      const problem = typeof header === 'string' ? header : headerMismatch(header, parseWalFileName(name)!);
      if (problem) throw new WalbridgeError('notWal', `refusing to stream ${name}: ${problem}`);
      return bytes;
    } finally {
      await fh.close();
    }
  }

  /** Removes the chunks of finished segments that are archived whole; `now` skips the pacing. */
  async cleanUp(now: boolean): Promise<void> {
    if (!now && Date.now() - this.cleanedAt < CLEANUP_EVERY_MS) return;
    this.cleanedAt = Date.now();
    for (const segment of [...this.finished]) {
      if (segment === this.current?.name) continue;
      if (!(await this.ctx.store.head(walFileKey(this.ctx.namespace, parseWalFileName(segment)!)))) continue;
      const chunks = await listChunks(this.ctx.store, this.ctx.namespace, segment);
      await this.ctx.store.deleteMany(chunks.map((c) => c.key));
      this.finished.delete(segment);
      if (chunks.length > 0) this.ctx.log.info(`${segment} is archived: removed its ${chunks.length} streamed chunk${chunks.length === 1 ? '' : 's'}`);
    }
  }

  describe(): string {
    return this.current ? `${this.current.name} up to ${formatBytes(this.current.shipped)}` : 'nothing yet';
  }
}

async function readHead(fh: Awaited<ReturnType<typeof open>>): Promise<Buffer> {
  const head = Buffer.alloc(LONG_HEADER_SIZE);
  await fh.read(head, 0, LONG_HEADER_SIZE, 0);
  return head;
}
