/**
 * A repository in a local directory (`file:///abs/dir`): the embedded default.
 *
 * Each object is one file: a single JSON line with its size, MD5 and metadata, then the bytes.
 * Keeping the metadata inside the file keeps publication a single atomic step: the file is
 * written to a hidden temp name, fsynced, hard-linked to its final name (link fails if the name
 * exists, which is create-if-absent without a race), and the directory is fsynced.
 */
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncDir } from '../util/durable.js';
import { bodyParts } from './body.js';
import { StoreError, bodySize, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';

const HEADER_LIMIT = 64 * 1024;
/** As cp does: the umask decides (PostgreSQL's is 077, or 027 with group access). */
const FILE_MODE = 0o666;
const DIR_MODE = 0o777;
const FORMAT = 1;
const COPY_PART_BYTES = 4 * 1024 * 1024;

interface FileHeader {
  walbridge: number;
  size: number;
  md5: string;
  metadata: Record<string, string>;
}

export class FsStore implements Store {
  readonly location: string;

  constructor(private readonly root: string) {
    this.location = `file://${root}`;
  }

  async checkBucket(): Promise<void> {
    let info;
    try {
      info = await stat(this.root);
    } catch (err) {
      const mapped = mapFsError(err, this.root);
      throw mapped.kind === 'not-found' ? new StoreError('no-bucket', `repository directory ${this.root} does not exist`) : mapped;
    }
    if (!info.isDirectory()) throw new StoreError('no-bucket', `repository directory ${this.root} does not exist (it is not a directory)`);
  }

  async putIfAbsent(key: string, request: PutRequest): Promise<'created' | 'exists'> {
    const target = this.pathOf(key);
    const dir = path.dirname(target);
    const temp = path.join(dir, `.tmp.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}`);
    const header: FileHeader = {
      walbridge: FORMAT,
      size: bodySize(request.body),
      md5: request.md5.toString('base64'),
      metadata: { ...request.metadata },
    };
    try {
      const fh = await this.createTemp(temp, dir);
      try {
        await fh.write(Buffer.from(JSON.stringify(header) + '\n'));
        // Like a server checking Content-MD5: what we store must be what the caller hashed.
        const hash = createHash('md5');
        for await (const part of bodyParts(request.body, COPY_PART_BYTES)) {
          hash.update(part);
          await fh.write(part);
        }
        if (!hash.digest().equals(request.md5)) throw new StoreError('permanent', `${key}: the body changed while it was being stored (MD5 mismatch)`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(temp, target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
        throw err;
      }
      await fsyncDir(dir);
      return 'created';
    } catch (err) {
      throw mapFsError(err, target);
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  async get(key: string): Promise<{ info: ObjectInfo; body: Readable }> {
    const file = this.pathOf(key);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      throw mapFsError(err, file);
    }
    try {
      const { header, bodyOffset } = await readHeader(fh, file);
      const body = createReadStream('', { fd: fh, start: bodyOffset, autoClose: true });
      return { info: { key, size: header.size, metadata: header.metadata }, body };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.pathOf(key);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      const mapped = mapFsError(err, file);
      if (mapped.kind === 'not-found') return undefined;
      throw mapped;
    }
    try {
      const { header } = await readHeader(fh, file);
      return { key, size: header.size, metadata: header.metadata };
    } finally {
      await fh.close();
    }
  }

  async *list(prefix: string, startAfter?: string): AsyncIterable<ListedObject> {
    // A prefix is a directory plus the start of a name within it ("ns/wal/0000000100").
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash < 0 ? '' : prefix.slice(0, slash + 1);
    const keys: ListedObject[] = [];
    await this.walk(dirKey, prefix, keys);
    keys.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const entry of keys) {
      if (startAfter === undefined || entry.key > startAfter) yield entry;
    }
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      const file = this.pathOf(key);
      try {
        await unlink(file);
        dirs.add(path.dirname(file));
      } catch (err) {
        const mapped = mapFsError(err, file);
        if (mapped.kind !== 'not-found') throw mapped;
      }
    }
    for (const dir of dirs) await fsyncDir(dir);
  }

  private async walk(dirKey: string, prefix: string, out: ListedObject[]): Promise<void> {
    const dir = this.pathOf(dirKey);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const mapped = mapFsError(err, dir);
      if (mapped.kind === 'not-found') return;
      throw mapped;
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue; // temp files of writers in progress
      const key = dirKey + entry.name;
      if (entry.isDirectory()) {
        const sub = key + '/';
        if (sub.startsWith(prefix) || prefix.startsWith(sub)) await this.walk(sub, prefix, out);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const [info, stats] = await Promise.all([this.head(key), stat(this.pathOf(key)).catch(() => undefined)]);
        if (info) out.push({ key, size: info.size, lastModified: stats?.mtime });
      }
    }
  }

  private pathOf(key: string): string {
    // Keys come from archive/layout.ts only; this guard keeps a bug from escaping the root.
    if (key.split('/').some((part) => part === '..' || part === '.') || key.startsWith('/')) {
      throw new StoreError('permanent', `refusing key outside the repository: ${JSON.stringify(key)}`);
    }
    return path.join(this.root, key);
  }

  /** Opens the temp file, creating the key's directories on first use (but never the root). */
  private async createTemp(temp: string, dir: string): Promise<FileHandle> {
    try {
      return await open(temp, 'wx', FILE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await this.checkBucket();
    await this.ensureDir(dir);
    return open(temp, 'wx', FILE_MODE);
  }

  private async ensureDir(dir: string): Promise<void> {
    try {
      const first = await mkdir(dir, { recursive: true, mode: DIR_MODE });
      if (first === undefined) return;
      // New directories must survive a crash too: fsync each new one's parent.
      for (let d = dir; d.length >= first.length; d = path.dirname(d)) await fsyncDir(path.dirname(d));
    } catch (err) {
      throw mapFsError(err, dir);
    }
  }
}

async function readHeader(fh: FileHandle, file: string): Promise<{ header: FileHeader; bodyOffset: number }> {
  // Headers are a few hundred bytes; read a little first, and more only if needed.
  let buf = Buffer.alloc(1024);
  let { bytesRead } = await fh.read(buf, 0, buf.length, 0);
  let end = buf.subarray(0, bytesRead).indexOf(0x0a);
  if (end < 0 && bytesRead === buf.length) {
    buf = Buffer.alloc(HEADER_LIMIT);
    ({ bytesRead } = await fh.read(buf, 0, buf.length, 0));
    end = buf.subarray(0, bytesRead).indexOf(0x0a);
  }
  let header: FileHeader | undefined;
  if (end > 0) {
    try {
      header = JSON.parse(buf.subarray(0, end).toString('utf8')) as FileHeader;
    } catch {
      header = undefined;
    }
  }
  if (!header || header.walbridge !== FORMAT || typeof header.metadata !== 'object' || header.metadata === null) {
    throw new StoreError('permanent', `${file} is not a walbridge object file (no valid header line)`);
  }
  return { header, bodyOffset: end + 1 };
}

function mapFsError(err: unknown, file: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const message = `${file}: ${(err as Error).message}`;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new StoreError('not-found', message, { cause: err });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new StoreError('denied', message, { cause: err });
    case 'EIO':
    case 'EAGAIN':
    case 'EBUSY':
    case 'EMFILE':
    case 'ENFILE':
      return new StoreError('transient', message, { cause: err });
    default:
      return new StoreError('permanent', message, { cause: err });
  }
}
