/**
 * The driver contract: every driver behaves the same to the commands. Runs against the local
 * directory, Ceph radosgw, the GCS test server and the in-memory driver the unit tests use.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { md5 } from '../../src/codec/hash.js';
import { FsStore } from '../../src/storage/fs.js';
import type { Store } from '../../src/storage/store.js';
import { canMount, failingDisk, fullDisk } from '../support/failing-disk.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { readObject, storeError } from '../support/store-calls.js';

function put(store: Store, key: string, data: Buffer, metadata: Record<string, string> = {}) {
  return store.putIfAbsent(key, { body: data, md5: md5(data), metadata });
}

async function keys(store: Store, prefix: string, after?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of store.list(prefix, after)) out.push(entry.key);
  return out;
}

describe.each([...BACKENDS, 'memory' as const])('store contract: %s', (backend) => {
  let repo: TestRepo;
  let store: Store;
  beforeAll(async () => {
    repo = await createRepo(backend);
    store = repo.store();
  });

  it('creates an object once and never overwrites it', async () => {
    const first = Buffer.from('first version');
    expect(await put(store, 'ns/wal/a', first, { 'walbridge-sha256': 'x'.repeat(64) })).toBe('created');
    expect(await put(store, 'ns/wal/a', Buffer.from('second version'))).toBe('exists');
    const back = await readObject(store, 'ns/wal/a');
    expect(back.data.equals(first)).toBe(true);
    expect(back.metadata['walbridge-sha256']).toBe('x'.repeat(64));
  });

  it('lists each object with its stored size and when it was written', async () => {
    const before = Date.now();
    expect(await put(store, 'ns-time/wal/t1', Buffer.from('abc'))).toBe('created');
    const listed = [];
    for await (const entry of store.list('ns-time/')) listed.push(entry);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ key: 'ns-time/wal/t1', size: expect.any(Number) });
    // Within a minute of now (server clocks and second-granular times allowed for).
    expect(Math.abs(listed[0]!.lastModified!.getTime() - before)).toBeLessThan(60_000);
  });

  it('round-trips 16 MiB of random bytes exactly, with size and metadata on head', async () => {
    const data = randomBytes(16 * 1024 * 1024);
    expect(await put(store, 'ns/wal/big', data, { 'walbridge-size': String(data.length) })).toBe('created');
    const info = await store.head('ns/wal/big');
    expect(info).toMatchObject({ key: 'ns/wal/big', size: data.length, metadata: { 'walbridge-size': String(data.length) } });
    expect((await readObject(store, 'ns/wal/big')).data.equals(data)).toBe(true);
  });

  it('reports absent objects as absent', async () => {
    expect(await store.head('ns/wal/none')).toBeUndefined();
    expect((await storeError(store.get('ns/wal/none'))).kind).toBe('not-found');
  });

  it('lists by prefix in key order, after a key, across pages', async () => {
    const names = ['0003', '0001', '0002', '0010', '0004'];
    for (const n of names) await put(store, `list/wal/${n}`, Buffer.from(n));
    await put(store, 'list/history/0001', Buffer.from('h'));
    await put(store, 'listing-is-not-a-prefix-match/0001', Buffer.from('x'));
    const paged = repo.store({ pageSize: 2 });
    expect(await keys(paged, 'list/wal/')).toEqual(['list/wal/0001', 'list/wal/0002', 'list/wal/0003', 'list/wal/0004', 'list/wal/0010']);
    expect(await keys(paged, 'list/wal/', 'list/wal/0002')).toEqual(['list/wal/0003', 'list/wal/0004', 'list/wal/0010']);
    expect(await keys(paged, 'list/wal/000')).toEqual(['list/wal/0001', 'list/wal/0002', 'list/wal/0003', 'list/wal/0004']);
    expect(await keys(store, 'list/')).toEqual(['list/history/0001', 'list/wal/0001', 'list/wal/0002', 'list/wal/0003', 'list/wal/0004', 'list/wal/0010']);
    expect(await keys(store, 'nothing-here/')).toEqual([]);
  });

  it('lists the prefixes right under a prefix, in key order, across pages, under its own prefix', async () => {
    const own = await createRepo(backend, { prefix: 'prefixes' });
    for (const key of ['b/wal/1', 'a/identity.json', 'a/wal/2', 'a/history/3', 'a-b/x', 'top-level-object']) await put(own.store(), key, Buffer.from(key));
    const paged = own.store({ pageSize: 1 });
    expect(await paged.listPrefixes('')).toEqual(['a-b/', 'a/', 'b/']);
    expect(await paged.listPrefixes('a/')).toEqual(['a/history/', 'a/wal/']);
    expect(await own.store().listPrefixes('nothing-here/')).toEqual([]);
    await own.cleanup();
  });

  it('deletes many, ignoring keys that are already gone', async () => {
    for (const n of ['1', '2', '3']) await put(store, `del/${n}`, Buffer.from(n));
    await store.deleteMany(['del/1', 'del/3', 'del/never-existed']);
    expect(await keys(store, 'del/')).toEqual(['del/2']);
  });

  it('keeps objects under its own prefix', async () => {
    const other = await createRepo(backend, { prefix: 'another-prefix' });
    await put(other.store(), 'ns/wal/a', Buffer.from('elsewhere'));
    expect(await keys(other.store(), 'ns/')).toEqual(['ns/wal/a']);
    await other.cleanup();
  });

  it('confirms an existing bucket', async () => {
    await expect(store.checkBucket()).resolves.toBeUndefined();
  });

  it('says a bucket is missing, also when the body goes in parts (S3 multipart, GCS resumable)', async () => {
    const missing = repo.store({ bucket: 'wb-no-such-bucket' });
    for (const data of [Buffer.from('small'), randomBytes(17 * 1024 * 1024)]) {
      const err = await storeError(put(missing, 'ns/wal/x', data));
      expect(err.kind, err.message).toBe('no-bucket');
    }
  });

  it('lists an object another tool stored, with its size, and reads it whole, without metadata', async () => {
    const data = Buffer.from('# notes someone copied into the namespace\n');
    await repo.putForeign('foreign/README', data);
    const gz = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02]);
    await repo.putForeign('foreign/wal/000000010000000000000001.gz', gz);
    await put(store, 'foreign/wal/000000010000000000000002', Buffer.from('ours'), { 'walbridge-size': '4' });
    const listed = [];
    for await (const entry of store.list('foreign/')) listed.push({ key: entry.key, size: entry.size });
    expect(listed).toEqual([
      { key: 'foreign/README', size: data.length },
      { key: 'foreign/wal/000000010000000000000001.gz', size: gz.length },
      { key: 'foreign/wal/000000010000000000000002', size: 4 },
    ]);
    expect(await store.head('foreign/README')).toMatchObject({ key: 'foreign/README', size: data.length, metadata: {} });
    const back = await readObject(store, 'foreign/README');
    expect(back.data.equals(data)).toBe(true);
    expect(back.metadata).toEqual({});
  });

  if (backend === 'file') {
    it('answers a read error of a file (a directory where an object should be) with a StoreError', async () => {
      await mkdir(path.join(repo.url.slice('file://'.length), 'odd/wal/000000010000000000000001'), { recursive: true });
      expect((await storeError(store.head('odd/wal/000000010000000000000001'))).kind).toBe('permanent');
      expect((await storeError(store.get('odd/wal/000000010000000000000001'))).message).toMatch(/EISDIR/);
    });

    it.skipIf(!canMount)('answers a disk read error midway through a body with a transient StoreError on the stream', async () => {
      const disk = await failingDisk();
      try {
        const onDisk = new FsStore(disk.dir);
        const data = randomBytes(2 * 1024 * 1024);
        expect(await put(onDisk, 'ns/wal/x', data)).toBe('created');
        await disk.breakInside(path.join(disk.dir, 'ns/wal/x'));
        const { info, body } = await onDisk.get('ns/wal/x'); // the header still reads
        expect(info.size).toBe(data.length);
        const err = await storeError(
          (async () => {
            for await (const chunk of body) void chunk;
          })(),
        );
        expect(err.kind, err.message).toBe('transient');
        expect(err.message).toMatch(/EIO/);
      } finally {
        await disk.cleanup();
      }
    });

    it.skipIf(!canMount)('answers a full repository filesystem with a permanent StoreError that says so, and leaves no temp file', async () => {
      const disk = await fullDisk(1024 * 1024);
      try {
        const full = new FsStore(disk.dir);
        const err = await storeError(put(full, 'ns/wal/big', randomBytes(2 * 1024 * 1024)));
        expect(err.kind).toBe('permanent');
        expect(err.message).toMatch(/ENOSPC.*the repository's filesystem is full: free space there/);
        expect(await readdir(path.join(disk.dir, 'ns/.walbridge-tmp'))).toEqual([]);
        expect(await full.head('ns/wal/big')).toBeUndefined();
      } finally {
        await disk.cleanup();
      }
    });
  }

  if (backend !== 'file') {
    it('refuses a body that does not match its MD5, storing nothing', async () => {
      const data = Buffer.from('what was sent');
      const err = await storeError(store.putIfAbsent('ns/wal/damaged', { body: data, md5: md5(Buffer.from('what was meant')), metadata: {} }));
      expect(err.kind).toBe('permanent');
      expect(await store.head('ns/wal/damaged')).toBeUndefined();
    });
  }
});
