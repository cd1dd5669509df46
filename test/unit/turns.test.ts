/**
 * The background processes' turns (issue 17: each background process <= 120 MB peak RSS): the
 * fetcher downloads several segments at once but decodes and writes them one at a time, each
 * body read whole before its turn; the pusher uploads several at once but reads and seals them
 * one at a time. Over the in-memory driver, with segments pushed by the real push.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pushContext, pushWalFile, type PushContext } from '../../src/archive/push/push.js';
import { heldThenRest, readUpTo, restoreIfPresent, type FetchContext } from '../../src/archive/restore/download.js';
import type { Settings } from '../../src/config/settings.js';
import { retryPolicy } from '../../src/storage/retry.js';
import { createMemoryBucket, MemoryStore, removeMemoryBucket } from '../../src/storage/memory.js';
import type { Store } from '../../src/storage/store.js';
import { Slots, type TakeTurn } from '../../src/util/slots.js';
import { parseWalFileName } from '../../src/wal/names.js';
import { keptLines, segmentBytes } from '../support/synthetic-wal.js';
import { scratchDir } from '../support/scratch.js';

const SYSTEM_ID = 7_300_000_000_000_000_017n;
const NS = 'turns';
const NAMES = ['000000010000000000000011', '000000010000000000000012', '000000010000000000000013'];

let dir: string;
let bucket: string;
let store: MemoryStore;

beforeEach(async () => {
  dir = await scratchDir('wb-turns-');
  bucket = `turns-${Math.random().toString(36).slice(2)}`;
  createMemoryBucket(bucket);
  store = new MemoryStore({ bucket, prefix: 'repo' });
});

afterEach(async () => {
  removeMemoryBucket(bucket);
  await rm(dir, { recursive: true, force: true });
});

function pushCtx(compress = 'zstd'): PushContext {
  const settings = { namespace: NS, compress, compressLevel: undefined, encryption: undefined } as unknown as Settings;
  return pushContext(settings, store, retryPolicy(5), keptLines());
}

/** A fetch context over this test's bucket, as the background fetcher's with `extra`. */
function fetchCtx(extra: Partial<FetchContext>): FetchContext {
  return { store, repository: `memory://${bucket}/repo`, namespace: NS, log: keptLines(), retry: retryPolicy(5), prefetch: 0, keys: undefined, ...extra };
}

async function source(name: string): Promise<string> {
  const file = path.join(dir, 'source', name);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, segmentBytes(name, SYSTEM_ID));
  return file;
}

/** Turns on a Slots of one, noting the most that ever ran at once and what each turn saw when it began. */
function watchedTurns(atStart: (name: string) => Promise<void> | void = () => undefined) {
  const slots = new Slots(1);
  const seen = { most: 0, running: 0, turns: [] as string[] };
  const take: TakeTurn = (name, task) =>
    slots.run(
      name,
      async () => {
        seen.turns.push(name);
        await atStart(name);
        seen.most = Math.max(seen.most, ++seen.running);
        try {
          return await task();
        } finally {
          seen.running--;
        }
      },
      false,
    );
  return { take, seen };
}

async function until(condition: () => boolean, ms = 3_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!condition() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return condition();
}

describe('the fetcher: downloads at once, one decode at a time', () => {
  it('reads every body while the first one decodes, then decodes each in its turn, byte for byte', async () => {
    for (const name of NAMES) await pushWalFile(pushCtx(), await source(name));
    // Which bodies the store has handed over completely.
    const arrived = new Set<string>();
    const watched: Store = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop !== 'get') return Reflect.get(target, prop, receiver);
        return async (key: string) => {
          const opened = await target.get(key);
          opened.body.once('end', () => arrived.add(path.basename(key)));
          return opened;
        };
      },
    });
    const arrivedAtTurn = new Map<string, number>();
    const { take, seen } = watchedTurns(async (name) => {
      // The first turn holds until the other downloads are done: they must not need a turn to download.
      if (seen.turns.length === 1) await until(() => arrived.size >= NAMES.length);
      arrivedAtTurn.set(name, arrived.size);
    });
    const ctx = fetchCtx({ store: watched, unpacking: take });
    const spool = path.join(dir, 'spool');
    await mkdir(spool);
    const outcomes = await Promise.all(NAMES.map((name) => restoreIfPresent(ctx, parseWalFileName(name)!, path.join(spool, name), undefined)));
    expect(outcomes).toEqual(['restored', 'restored', 'restored']);
    expect(seen.turns.sort()).toEqual(NAMES);
    expect(seen.most).toBe(1);
    // Every body had arrived before any decode began (bodies, ~16 KiB each here, wait compressed).
    expect([...arrivedAtTurn.values()]).toEqual([3, 3, 3]);
    for (const name of NAMES) expect((await readFile(path.join(spool, name))).equals(segmentBytes(name, SYSTEM_ID))).toBe(true);
  });
});

describe('a body too big to be held for a turn', () => {
  it('streams without one, and what ends a turn (the collection) ends it too, byte for byte', async () => {
    const name = NAMES[0]!;
    // A segment of 8 MiB (wal_segment_size), stored as it is: over the 4 MiB held for a turn.
    const BIG = 8 * 1024 * 1024;
    const content = Buffer.alloc(BIG, 7);
    segmentBytes(name, SYSTEM_ID).copy(content, 0, 0, 40);
    content.writeBigUInt64LE(BigInt(parseInt(name.slice(16), 16) * BIG), 8); // page address
    content.writeUInt32LE(BIG, 32); // segment size
    const file = path.join(dir, 'source', name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
    await pushWalFile(pushCtx('none'), file);
    const { take, seen } = watchedTurns();
    let after = 0;
    const ctx = fetchCtx({ unpacking: take, afterStreamed: () => after++ });
    const destination = path.join(dir, name);
    expect(await restoreIfPresent(ctx, parseWalFileName(name)!, destination, undefined)).toBe('restored');
    expect(seen.turns).toEqual([]);
    expect(after).toBe(1);
    expect((await readFile(destination)).equals(content)).toBe(true);
  });
});

describe('the pusher: uploads at once, one seal at a time', () => {
  it('seals each file in its turn, never two at once, and stores them all', async () => {
    const { take, seen } = watchedTurns(() => new Promise((r) => setTimeout(r, 20)));
    const ctx: PushContext = { ...pushCtx(), sealing: take };
    await pushWalFile(pushCtx(), await source(NAMES[0]!)); // the namespace's identity first
    const results = await Promise.all(NAMES.slice(1).map(async (name) => pushWalFile(ctx, await source(name))));
    expect(results.map((r) => r.outcome)).toEqual(['archived', 'archived']);
    expect(seen.turns.sort()).toEqual(NAMES.slice(1));
    expect(seen.most).toBe(1);
  });
});

describe('a body is held whole for its turn only up to a bound', () => {
  const pieces = (n: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(1024 * 1024, i));

  it('a short body is read whole', async () => {
    const held = await readUpTo(Readable.from(pieces(3)), 4 * 1024 * 1024);
    expect(held.rest).toBeUndefined();
    expect(Buffer.concat(held.chunks).equals(Buffer.concat(pieces(3)))).toBe(true);
  });

  it('a longer one (a misreported size) stops at the bound, and the rest still follows, byte for byte', async () => {
    const held = await readUpTo(Readable.from(pieces(10)), 4 * 1024 * 1024);
    expect(held.rest).toBeDefined();
    expect(held.chunks.length).toBe(5);
    const all: Buffer[] = [];
    for await (const chunk of Readable.from(heldThenRest(held.chunks, held.rest!))) all.push(chunk as Buffer);
    expect(Buffer.concat(all).equals(Buffer.concat(pieces(10)))).toBe(true);
  });
});
