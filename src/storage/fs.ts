/**
 * A repository in a local directory (`file:///abs/dir`): the embedded default.
 *
 * Each object is one file: a single JSON line with its size, MD5 and metadata, then the bytes.
 * Keeping the metadata inside the file keeps publication a single atomic step: the file is
 * written to a temp file, fsynced, hard-linked to its final name (link fails if the name
 * exists, which is create-if-absent without a race), and the directory is fsynced.
 *
 * Temp files live in one hidden directory per top-level directory of the repository (per
 * namespace), `<root>/<namespace>/.walbridge-tmp/`, not beside the objects: a hard link needs
 * the same filesystem, a namespace is one directory tree, and so finding what a killed writer
 * left costs a readdir of a directory that holds only writes in progress, never of a `wal/`
 * of thousands of segments. A temp file's name says whose it is (host, pid namespace, pid), so
 * a writer removes the dead ones of its own host and never another host's: on a repository
 * shared over NFS, a pid means nothing elsewhere. `walbridge verify` reports what is left.
 *
 * Every error is a StoreError: a raw errno would end the command as an internal error.
 */
import { constants, readlinkSync } from 'node:fs';
import { access, link, mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fsyncDir } from '../util/durable.js';
import { processAlive, trackTempFile, untrackTempFile } from '../util/temp-files.js';
import { bodyParts } from './body.js';
import { StoreError, bodySize, type Leftover, type ListedObject, type ObjectInfo, type PutRequest, type Store } from './store.js';

const HEADER_LIMIT = 64 * 1024;
/** As cp does: the umask decides (PostgreSQL's is 077, or 027 with group access). */
const FILE_MODE = 0o666;
const DIR_MODE = 0o777;
const FORMAT = 1;
const COPY_PART_BYTES = 4 * 1024 * 1024;
const READ_BYTES = 256 * 1024;
/** Hidden (list skips dot names), and named so nobody takes it for a namespace's data. */
const TEMP_DIR = '.walbridge-tmp';

interface FileHeader {
  walbridge: number;
  size: number;
  md5: string;
  metadata: Record<string, string>;
}

/** Who writes: a pid is only meaningful on its host and in its pid namespace (containers). */
const WRITER = { host: (hostname() || 'unknown-host').replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 64), pidNamespace: pidNamespace(), pid: process.pid };

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
    const tempDir = this.tempDirOf(key);
    await sweepDeadTemps(tempDir);
    const temp = path.join(tempDir, tempName(key.slice(key.indexOf('/') + 1)));
    const header: FileHeader = {
      walbridge: FORMAT,
      size: bodySize(request.body),
      md5: request.md5.toString('base64'),
      metadata: { ...request.metadata },
    };
    trackTempFile(temp); // a SIGTERM or SIGINT removes it (cli/signals.ts)
    try {
      const fh = await this.createTemp(temp, tempDir);
      try {
        await writeAll(fh, Buffer.from(`${JSON.stringify(header)}\n`));
        // Like a server checking Content-MD5: what we store must be what the caller hashed.
        const hash = createHash('md5');
        for await (const part of bodyParts(request.body, COPY_PART_BYTES)) {
          hash.update(part);
          await writeAll(fh, part);
        }
        if (!hash.digest().equals(request.md5)) throw new StoreError('permanent', `${key}: the body changed while it was being stored (MD5 mismatch)`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if ((await this.publish(temp, target, dir)) === 'exists') return 'exists';
      await fsyncDir(dir);
      return 'created';
    } catch (err) {
      throw mapFsError(err, target);
    } finally {
      await unlink(temp).catch(() => undefined);
      untrackTempFile(temp);
    }
  }

  async get(key: string): Promise<{ info: ObjectInfo; body: Readable }> {
    const file = this.pathOf(key);
    const fh = await openForReading(file);
    try {
      const { info, bodyOffset } = await readObjectHeader(fh, key);
      return { info, body: bodyStream(fh, bodyOffset, file) };
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw mapFsError(err, file);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.pathOf(key);
    let fh: FileHandle;
    try {
      fh = await openForReading(file);
    } catch (err) {
      if (err instanceof StoreError && err.kind === 'not-found') return undefined;
      throw err;
    }
    try {
      return (await readObjectHeader(fh, key)).info;
    } catch (err) {
      throw mapFsError(err, file);
    } finally {
      await fh.close().catch(() => undefined); // read-only: nothing to lose on close
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

  async listPrefixes(prefix: string): Promise<readonly string[]> {
    const dir = this.pathOf(prefix);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const mapped = mapFsError(err, dir);
      if (mapped.kind === 'not-found') return [];
      throw mapped;
    }
    // As walk(): walbridge's temp directory and hidden entries are no part of the repository.
    return entries
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => `${prefix}${e.name}/`)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
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
        await this.mayDeleteIn(path.dirname(file));
      }
    }
    for (const dir of dirs) {
      try {
        await fsyncDir(dir);
      } catch (err) {
        throw mapFsError(err, dir);
      }
    }
  }

  /**
   * A key that is not there is deleted only where one that is could be, as S3 and GCS answer by
   * permission first: a delete refused for the directory this user may not write to says so (the
   * nearest one that exists, up to the repository's root, when the key's own does not).
   */
  private async mayDeleteIn(dir: string): Promise<void> {
    for (let d = dir; ; d = path.dirname(d)) {
      try {
        await access(d, constants.W_OK | constants.X_OK);
        return;
      } catch (err) {
        const mapped = mapFsError(err, d);
        if (mapped.kind !== 'not-found') throw mapped;
        if (path.resolve(d) === path.resolve(this.root) || path.dirname(d) === d) return;
      }
    }
  }

  /** The temp files of unfinished writes under `prefix` (a top-level directory, `ns/`), oldest first. */
  async leftovers(prefix: string): Promise<readonly Leftover[]> {
    const top = prefix.slice(0, prefix.indexOf('/') + 1);
    const dir = this.tempDirOf(`${top}x`);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      const mapped = mapFsError(err, dir);
      if (mapped.kind === 'not-found') return [];
      throw mapped;
    }
    const found: Leftover[] = [];
    for (const name of names) {
      const writer = parseTempName(name);
      const file = path.join(dir, name);
      const info = await stat(file).catch(() => undefined);
      if (!info?.isFile()) continue; // finished meanwhile
      if (!writer) {
        found.push({ path: file, key: undefined, host: undefined, pid: undefined, modified: info.mtime, size: info.size, writerAlive: undefined });
        continue;
      }
      found.push({
        path: file,
        key: top + writer.key,
        host: writer.host,
        pid: writer.pid,
        modified: info.mtime,
        size: info.size,
        writerAlive: writerAlive(writer),
      });
    }
    return found.sort((a, b) => a.modified.getTime() - b.modified.getTime());
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
      if (entry.name.startsWith('.')) continue; // walbridge's temp directory, older versions' temp files, hidden files
      const key = dirKey + entry.name;
      if (entry.isDirectory()) {
        const sub = `${key}/`;
        if (sub.startsWith(prefix) || prefix.startsWith(sub)) await this.walk(sub, prefix, out);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const [info, stats] = await Promise.all([this.head(key), stat(this.pathOf(key)).catch(() => undefined)]);
        if (info) out.push({ key, size: info.size, lastModified: stats?.mtime });
      }
    }
  }

  private pathOf(key: string): string {
    // Keys come from archive/repo/layout.ts only; this guard keeps a bug from escaping the root.
    if (key.split('/').some((part) => part === '..' || part === '.') || key.startsWith('/')) {
      throw new StoreError('permanent', `refusing key outside the repository: ${JSON.stringify(key)}`);
    }
    return path.join(this.root, key);
  }

  /** The temp directory for a key: in its top-level directory (its namespace), else in the root. */
  private tempDirOf(key: string): string {
    const slash = key.indexOf('/');
    return slash < 0 ? path.join(this.root, TEMP_DIR) : path.join(this.pathOf(key.slice(0, slash)), TEMP_DIR);
  }

  /** Opens the temp file, creating the temp directory (and the namespace's) on first use, but never the root. */
  private async createTemp(temp: string, tempDir: string): Promise<FileHandle> {
    try {
      return await open(temp, 'wx', FILE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await this.checkBucket();
    await this.ensureDir(tempDir);
    return open(temp, 'wx', FILE_MODE);
  }

  /** Links the finished temp file to its name, creating the key's directories on first use. */
  private async publish(temp: string, target: string, dir: string): Promise<'created' | 'exists'> {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(temp, target);
        return 'created';
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') return 'exists';
        if (code === 'EXDEV') {
          throw new StoreError(
            'permanent',
            `${target}: cannot link it from ${temp}: the repository directory must be one filesystem (is ${path.relative(this.root, dir)} another mount?)`,
          );
        }
        if (code !== 'ENOENT' || attempt > 0) throw err;
      }
      await this.ensureDir(dir);
    }
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

/**
 * FileHandle.write may write less than asked without an error (a filesystem filling up writes
 * what fits): a short write taken for a whole one would publish a truncated object.
 */
async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  for (let at = 0; at < data.length; ) {
    const { bytesWritten } = await fh.write(data, at, data.length - at);
    at += bytesWritten;
  }
}

async function openForReading(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'r');
  } catch (err) {
    throw mapFsError(err, file);
  }
}

/**
 * The object's size and metadata from its header line. A file without one was put there by
 * someone else (a README, a `.gz`): like an object another tool wrote into a bucket, it is an
 * object without metadata, all of it body, so listing goes on and verify and fetch refuse it.
 */
async function readObjectHeader(fh: FileHandle, key: string): Promise<{ info: ObjectInfo; bodyOffset: number }> {
  const found = await readHeader(fh);
  if (found) return { info: { key, size: found.header.size, metadata: found.header.metadata }, bodyOffset: found.bodyOffset };
  const { size } = await fh.stat();
  return { info: { key, size, metadata: {} }, bodyOffset: 0 };
}

async function readHeader(fh: FileHandle): Promise<{ header: FileHeader; bodyOffset: number } | undefined> {
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
  if (!header || header.walbridge !== FORMAT || typeof header.size !== 'number' || typeof header.metadata !== 'object' || header.metadata === null)
    return undefined;
  return { header, bodyOffset: end + 1 };
}

/**
 * The object's bytes from `start`. Read errors come out as StoreErrors, so whoever reads the body
 * (fetch writing %p) can tell the repository's disk failing from its own destination failing.
 */
function bodyStream(fh: FileHandle, start: number, file: string): Readable {
  let position = start;
  return new Readable({
    highWaterMark: READ_BYTES,
    read() {
      const buf = Buffer.allocUnsafe(READ_BYTES);
      fh.read(buf, 0, buf.length, position).then(
        ({ bytesRead }) => {
          position += bytesRead;
          this.push(bytesRead === 0 ? null : buf.subarray(0, bytesRead));
        },
        (err: unknown) => this.destroy(mapFsError(err, file)),
      );
    },
    destroy(err, callback) {
      // close() waits for a read in flight; its own error matters only if nothing failed before.
      fh.close().then(
        () => callback(err),
        (closeErr: unknown) => callback(err ?? mapFsError(closeErr, file)),
      );
    },
  });
}

/** `<key within the namespace, %-encoded>+<host>+<pid namespace>+<pid>+<random>` ('+' occurs in no part). */
function tempName(relativeKey: string): string {
  // NAME_MAX is 255 bytes: a long key is cut (it only informs verify's message).
  return [encodeURIComponent(relativeKey).slice(0, 120), WRITER.host, WRITER.pidNamespace, WRITER.pid, randomBytes(4).toString('hex')].join('+');
}

function parseTempName(name: string): { key: string; host: string; pidNamespace: string; pid: number } | undefined {
  const parts = name.split('+');
  if (parts.length !== 5 || !/^\d+$/.test(parts[3]!)) return undefined;
  let key = parts[0]!;
  try {
    key = decodeURIComponent(key);
  } catch {
    // cut inside an escape: shown as it is
  }
  return { key, host: parts[1]!, pidNamespace: parts[2]!, pid: Number(parts[3]) };
}

/** Whether the writer runs: known only for writers of this host and pid namespace (undefined elsewhere). */
function writerAlive(writer: { host: string; pidNamespace: string; pid: number }): boolean | undefined {
  if (writer.host !== WRITER.host || writer.pidNamespace !== WRITER.pidNamespace) return undefined;
  return processAlive(writer.pid);
}

/** Removes the temp files of this host's dead writers (`kill -9`, a crash); best effort. */
async function sweepDeadTemps(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const writer = parseTempName(name);
    if (writer && writerAlive(writer) === false) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}

function pidNamespace(): string {
  try {
    return /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '0';
  } catch {
    return '0';
  }
}

/**
 * errno → StoreError kind. A full repository filesystem (ENOSPC, EDQUOT) is permanent: freeing
 * space takes an operator, not the seconds a retry waits, and PostgreSQL calls archive_command
 * again anyway. EIO is transient: a flaky disk or an NFS server may answer the next read.
 */
function mapFsError(err: unknown, file: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const reason = (err as Error).message ?? String(err);
  const message = `${file}: ${reason}`;
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
    case 'EINTR':
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOMEM':
    case 'ESTALE':
    case 'ETIMEDOUT':
      return new StoreError('transient', message, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new StoreError('permanent', `${message} (the repository's filesystem is full: free space there)`, { cause: err });
    default:
      return new StoreError('permanent', message, { cause: err });
  }
}
