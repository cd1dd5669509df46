import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Readable } from 'node:stream';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c, crc32cBase64, startGcsServer, type GcsTestServer } from './gcs/server.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('base64');
const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic, non-repeating-ish bytes so misplaced chunks are caught by byte comparison. */
function pattern(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

// biome-ignore lint/suspicious/noExplicitAny: JSON answers of the server under test, looked into freely
type Json = Record<string, any>;
/** fetch's BodyInit wants an ArrayBuffer-backed view (TS 5.9 lib types); Buffers may be pool-backed. */
const copy = (b: Uint8Array) => new Uint8Array(b);

describe('GCS test server: raw JSON API protocol', () => {
  let srv: GcsTestServer;
  let api: string; // with the /storage/v1 prefix
  let up: string;
  beforeAll(async () => {
    srv = await startGcsServer();
    api = `${srv.url}/storage/v1`;
    up = `${srv.url}/upload/storage/v1`;
    srv.createBucket('raw');
  });
  afterAll(() => srv.close());

  const media = (name: string, body: Uint8Array, query = '', headers: Record<string, string> = {}) =>
    fetch(`${up}/b/raw/o?uploadType=media&name=${encodeURIComponent(name)}${query}`, { method: 'POST', body: copy(body), headers });

  const expectGoogleError = async (res: Response, code: number, reason: string) => {
    expect(res.status).toBe(code);
    const body = (await res.json()) as Json;
    expect(body.error.code).toBe(code);
    expect(body.error.errors[0]).toMatchObject({ domain: 'global', reason });
    expect(typeof body.error.message).toBe('string');
    return body.error.message as string;
  };

  it('computes CRC32C (Castagnoli) and reports it as base64 of the big-endian value', async () => {
    const data = Buffer.from('123456789');
    expect(crc32c(data)).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa); // RFC 3720 B.4 test vector
    expect(crc32cBase64(data)).toBe(Buffer.from([0xe3, 0x06, 0x92, 0x83]).toString('base64'));

    const res = await media('vec/123456789', data, '', { 'Content-Type': 'text/plain' });
    expect(res.status).toBe(200);
    const r = (await res.json()) as Json;
    expect(r).toMatchObject({
      kind: 'storage#object',
      name: 'vec/123456789',
      bucket: 'raw',
      size: '9',
      metageneration: '1',
      contentType: 'text/plain',
      crc32c: '4waSgw==',
      md5Hash: md5(data),
    });
    expect(r.generation).toMatch(/^\d+$/);
    expect(r.id).toBe(`raw/vec/123456789/${r.generation}`);
    for (const k of ['timeCreated', 'updated', 'etag']) expect(typeof r[k]).toBe('string');
  });

  it('serves both path forms and tells a missing bucket from a missing object', async () => {
    expect((await fetch(`${api}/b/raw`)).status).toBe(200);
    expect(((await (await fetch(`${srv.url}/b/raw`)).json()) as Json).kind).toBe('storage#bucket');
    for (const base of [api, srv.url]) {
      const m1 = await expectGoogleError(await fetch(`${base}/b/nope`), 404, 'notFound');
      expect(m1).toBe('The specified bucket does not exist.');
      const m2 = await expectGoogleError(await fetch(`${base}/b/nope/o/x`), 404, 'notFound');
      expect(m2).toBe('The specified bucket does not exist.');
      const m3 = await expectGoogleError(await fetch(`${base}/b/raw/o/no%2Fsuch`), 404, 'notFound');
      expect(m3).toBe('No such object: raw/no/such');
    }
    const created = await fetch(`${api}/b?project=test`, { method: 'POST', body: JSON.stringify({ name: 'made' }) });
    expect(created.status).toBe(200);
    await expectGoogleError(await fetch(`${api}/b?project=test`, { method: 'POST', body: '{"name":"made"}' }), 409, 'conflict');
  });

  it('multipart upload parses the boundary and verifies md5Hash/crc32c, storing nothing on mismatch', async () => {
    const data = pattern(5000);
    const multipart = (meta: Json, boundary = 'b0und4ry') => {
      const body = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n${JSON.stringify(meta)}\r\n`),
        Buffer.from(`--${boundary}\r\nContent-Type: application/x-wal\r\n\r\n`),
        data,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      return fetch(`${up}/b/raw/o?uploadType=multipart`, {
        method: 'POST',
        body,
        headers: { 'Content-Type': `multipart/related; boundary="${boundary}"` },
      });
    };
    const bad = await expectGoogleError(await multipart({ name: 'mp/bad', md5Hash: md5(Buffer.from('other')) }), 400, 'invalid');
    expect(bad).toContain("doesn't match calculated MD5 hash");
    await expectGoogleError(await multipart({ name: 'mp/bad', crc32c: 'AAAAAA==' }), 400, 'invalid');
    expect(srv.objects('raw').has('mp/bad')).toBe(false);

    const ok = await multipart({ name: 'mp/good', md5Hash: md5(data), crc32c: crc32cBase64(data), metadata: { k: 'v' } });
    expect(ok.status).toBe(200);
    const r = (await ok.json()) as Json;
    expect(r).toMatchObject({ name: 'mp/good', size: '5000', contentType: 'application/x-wal', metadata: { k: 'v' } });
    expect(srv.objects('raw').get('mp/good')!.data.equals(data)).toBe(true);
  });

  it('verifies X-Goog-Hash on a media upload', async () => {
    const data = Buffer.from('payload');
    const wrong = await media('h/x', data, '', { 'X-Goog-Hash': `crc32c=${crc32cBase64(Buffer.from('x'))}` });
    await expectGoogleError(wrong, 400, 'invalid');
    expect(srv.objects('raw').has('h/x')).toBe(false);
    const right = await media('h/x', data, '', { 'X-Goog-Hash': `crc32c=${crc32cBase64(data)},md5=${md5(data)}` });
    expect(right.status).toBe(200);
  });

  it('enforces generation and metageneration preconditions', async () => {
    const first = (await (await media('p/obj', Buffer.from('v1'), '&ifGenerationMatch=0')).json()) as Json;
    const again = await media('p/obj', Buffer.from('v2'), '&ifGenerationMatch=0');
    const msg = await expectGoogleError(again, 412, 'conditionNotMet');
    expect(msg).toMatch(/pre-conditions/);
    expect(srv.objects('raw').get('p/obj')!.data.toString()).toBe('v1');

    await expectGoogleError(await media('p/obj', Buffer.from('v2'), '&ifGenerationMatch=1'), 412, 'conditionNotMet');
    await expectGoogleError(await media('p/new', Buffer.from('x'), '&ifGenerationMatch=5'), 412, 'conditionNotMet');
    await expectGoogleError(await media('p/obj', Buffer.from('x'), `&ifGenerationNotMatch=${first.generation}`), 412, 'conditionNotMet');
    const second = (await (await media('p/obj', Buffer.from('v2'), `&ifGenerationMatch=${first.generation}`)).json()) as Json;
    expect(BigInt(second.generation)).toBeGreaterThan(BigInt(first.generation));
    expect(second.metageneration).toBe('1');

    // reads: a failed *Match is 412; a failed *NotMatch is 304 Not Modified (per the preconditions doc)
    await expectGoogleError(await fetch(`${api}/b/raw/o/p%2Fobj?ifGenerationMatch=${first.generation}`), 412, 'conditionNotMet');
    expect((await fetch(`${api}/b/raw/o/p%2Fobj?ifGenerationNotMatch=${second.generation}`)).status).toBe(304);
    expect((await fetch(`${api}/b/raw/o/p%2Fobj?ifMetagenerationMatch=1`)).status).toBe(200);

    // patch bumps the metageneration, which then guards a delete
    const patched = await fetch(`${api}/b/raw/o/p%2Fobj?ifMetagenerationMatch=1`, {
      method: 'PATCH',
      body: JSON.stringify({ metadata: { a: '1', b: '2' } }),
      headers: { 'Content-Type': 'application/json' },
    });
    expect(((await patched.json()) as Json).metageneration).toBe('2');
    const unset = await fetch(`${api}/b/raw/o/p%2Fobj`, { method: 'PATCH', body: JSON.stringify({ metadata: { a: null } }) });
    expect(((await unset.json()) as Json).metadata).toEqual({ b: '2' });
    const some = await fetch(`${api}/b/raw/o/p%2Fobj?fields=${encodeURIComponent('name,metadata/b,generation')}`);
    expect(await some.json()).toEqual({ name: 'p/obj', metadata: { b: '2' }, generation: second.generation });
    await expectGoogleError(await fetch(`${api}/b/raw/o/p%2Fobj?ifGenerationMatch=abc`), 400, 'invalid');
    await expectGoogleError(await fetch(`${api}/b/raw/o/p%2Fobj?ifMetagenerationMatch=2`, { method: 'DELETE' }), 412, 'conditionNotMet');
    await expectGoogleError(await fetch(`${api}/b/raw/o/p%2Fobj?ifGenerationMatch=${first.generation}`, { method: 'DELETE' }), 412, 'conditionNotMet');
    const del = await fetch(`${api}/b/raw/o/p%2Fobj?ifGenerationMatch=${second.generation}&ifMetagenerationMatch=3`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect(await del.text()).toBe('');
    const gone = await expectGoogleError(await fetch(`${api}/b/raw/o/p%2Fobj`, { method: 'DELETE' }), 404, 'notFound');
    expect(gone).toBe('No such object: raw/p/obj');
  });

  it('downloads with x-goog-hash, generation headers, ranges and preconditions', async () => {
    const data = pattern(1000, 7);
    const r = (await (await media('d/file', data)).json()) as Json;
    for (const url of [`${api}/b/raw/o/d%2Ffile?alt=media`, `${srv.url}/b/raw/o/d%2Ffile?alt=media`, r.mediaLink as string]) {
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
      expect(res.headers.get('x-goog-hash')).toBe(`crc32c=${crc32cBase64(data)},md5=${md5(data)}`);
      expect(res.headers.get('x-goog-generation')).toBe(r.generation);
      expect(res.headers.get('x-goog-metageneration')).toBe('1');
      expect(res.headers.get('x-goog-stored-content-length')).toBe('1000');
      expect(res.headers.get('x-goog-stored-content-encoding')).toBe('identity');
    }
    const part = await fetch(`${api}/b/raw/o/d%2Ffile?alt=media`, { headers: { Range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe('bytes 10-19/1000');
    expect(Buffer.from(await part.arrayBuffer()).equals(data.subarray(10, 20))).toBe(true);
    const tail = await fetch(`${api}/b/raw/o/d%2Ffile?alt=media`, { headers: { Range: 'bytes=-5' } });
    expect(tail.headers.get('content-range')).toBe('bytes 995-999/1000');
    expect(Buffer.from(await tail.arrayBuffer()).equals(data.subarray(995))).toBe(true);
    const open = await fetch(`${api}/b/raw/o/d%2Ffile?alt=media`, { headers: { Range: 'bytes=990-' } });
    expect((await open.arrayBuffer()).byteLength).toBe(10);
    const beyond = await fetch(`${api}/b/raw/o/d%2Ffile?alt=media`, { headers: { Range: 'bytes=1000-' } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe('bytes */1000');

    expect((await fetch(`${api}/b/raw/o/d%2Ffile?alt=media&ifGenerationMatch=${r.generation}`)).status).toBe(200);
    await expectGoogleError(await fetch(`${api}/b/raw/o/d%2Ffile?alt=media&ifGenerationMatch=1`), 412, 'conditionNotMet');
    await expectGoogleError(await fetch(`${api}/b/raw/o/d%2Ffile?alt=media&generation=1`), 404, 'notFound');
  });

  describe('resumable upload', () => {
    const start = async (name: string, query = '', meta?: Json) => {
      const res = await fetch(`${up}/b/raw/o?uploadType=resumable&name=${encodeURIComponent(name)}${query}`, {
        method: 'POST',
        ...(meta ? { body: JSON.stringify(meta), headers: { 'Content-Type': 'application/json; charset=UTF-8' } } : {}),
      });
      expect(res.status).toBe(200);
      const location = res.headers.get('location')!;
      expect(new URL(location).searchParams.get('upload_id')).toMatch(/^\w+$/);
      return location;
    };
    const put = (session: string, range: string, body?: Uint8Array, headers: Record<string, string> = {}) =>
      fetch(session, { method: 'PUT', body: copy(body ?? new Uint8Array(0)), headers: { 'Content-Range': range, ...headers } });

    it('answers chunks with 308 + Range, persists only whole 256 KiB units, accepts overlapping resends', async () => {
      const data = pattern(900 * KiB, 3);
      const session = await start('r/big', '', { contentType: 'application/x-wal', metadata: { k: 'v' } });

      // Nothing persisted yet: a status query is 308 without a Range header.
      const q0 = await put(session, 'bytes */*');
      expect(q0.status).toBe(308);
      expect(q0.headers.get('range')).toBeNull();

      // A chunk smaller than 256 KiB that isn't final: nothing persisted.
      const small = await put(session, `bytes 0-99/*`, data.subarray(0, 100));
      expect(small.status).toBe(308);
      expect(small.headers.get('range')).toBeNull();

      const c1 = await put(session, `bytes 0-${256 * KiB - 1}/*`, data.subarray(0, 256 * KiB));
      expect(c1.status).toBe(308);
      expect(c1.headers.get('range')).toBe(`bytes=0-${256 * KiB - 1}`);

      // 300 KiB sent, only the whole 256 KiB unit is kept; the client must resume from the Range end.
      const c2 = await put(session, `bytes ${256 * KiB}-${556 * KiB - 1}/*`, data.subarray(256 * KiB, 556 * KiB));
      expect(c2.status).toBe(308);
      expect(c2.headers.get('range')).toBe(`bytes=0-${512 * KiB - 1}`);
      const q1 = await put(session, `bytes */${data.length}`);
      expect(q1.status).toBe(308);
      expect(q1.headers.get('range')).toBe(`bytes=0-${512 * KiB - 1}`);

      // A gap (start beyond what the server has) is an error.
      const gap = await put(session, `bytes ${600 * KiB}-${data.length - 1}/${data.length}`, data.subarray(600 * KiB));
      await expectGoogleError(gap, 400, 'invalid');

      // Resend overlapping bytes (from 256 KiB again) through to the end: overlapping bytes are ignored.
      const fin = await put(session, `bytes ${256 * KiB}-${data.length - 1}/${data.length}`, data.subarray(256 * KiB));
      expect(fin.status).toBe(200);
      const r = (await fin.json()) as Json;
      expect(r).toMatchObject({ name: 'r/big', size: String(data.length), md5Hash: md5(data), crc32c: crc32cBase64(data) });
      expect(r).toMatchObject({ contentType: 'application/x-wal', metadata: { k: 'v' } });
      expect(srv.objects('raw').get('r/big')!.data.equals(data)).toBe(true);

      // Once complete, a status query answers 200 with the resource.
      const done = await put(session, 'bytes */*');
      expect(done.status).toBe(200);
      expect(((await done.json()) as Json).generation).toBe(r.generation);
    });

    it('finalizes with "bytes */total" after all bytes were sent with an unknown total', async () => {
      const data = pattern(256 * KiB, 4);
      const session = await start('r/star');
      expect((await put(session, `bytes 0-${data.length - 1}/*`, data)).status).toBe(308);
      const fin = await put(session, `bytes */${data.length}`);
      expect(fin.status).toBe(200);
      expect(srv.objects('raw').get('r/star')!.data.equals(data)).toBe(true);
    });

    it('can be cancelled with DELETE (499)', async () => {
      const session = await start('r/cancel');
      const del = await fetch(session, { method: 'DELETE' });
      expect(del.status).toBe(499);
      expect((await put(session, 'bytes 0-2/3', Buffer.from('abc'))).status).toBe(410);
      expect(srv.objects('raw').has('r/cancel')).toBe(false);
    });

    it('checks the session-start precondition at finalization', async () => {
      const session = await start('r/race', '&ifGenerationMatch=0');
      expect((await media('r/race', Buffer.from('someone else'))).status).toBe(200);
      await expectGoogleError(await put(session, 'bytes 0-2/3', Buffer.from('abc')), 412, 'conditionNotMet');
      expect(srv.objects('raw').get('r/race')!.data.toString()).toBe('someone else');
    });

    it('rejects a final chunk whose bytes do not match md5Hash or X-Goog-Hash', async () => {
      const data = Buffer.from('resumable payload');
      const s1 = await start('r/md5', '', { md5Hash: md5(Buffer.from('different')) });
      const m1 = await expectGoogleError(await put(s1, `bytes 0-${data.length - 1}/${data.length}`, data), 400, 'invalid');
      expect(m1).toContain('MD5');
      const s2 = await start('r/md5');
      const bad = { 'X-Goog-Hash': `crc32c=${crc32cBase64(Buffer.from('x'))}` };
      await expectGoogleError(await put(s2, `bytes 0-${data.length - 1}/${data.length}`, data, bad), 400, 'invalid');
      expect(srv.objects('raw').has('r/md5')).toBe(false);
    });
  });

  it('lists in byte order with prefix, delimiter, startOffset/endOffset, small pages and fields', async () => {
    srv.createBucket('list');
    const names = ['wal/0001', 'wal/0002', 'wal/0003', 'wal/0004', 'wal/0005', 'wal/sub/a', 'wal/sub/b', 'x/1', 'wal/\uffff', 'wal/\u{10000}'];
    for (const n of names) {
      const res = await fetch(`${up}/b/list/o?uploadType=media&name=${encodeURIComponent(n)}`, { method: 'POST', body: n });
      expect(res.status).toBe(200);
    }
    const page = async (q: string) => (await (await fetch(`${api}/b/list/o?${q}`)).json()) as Json;
    const all = async (q: string) => {
      const seen: string[] = [];
      let token: string | undefined;
      do {
        const p = await page(`${q}${token ? `&pageToken=${encodeURIComponent(token)}` : ''}`);
        expect(p.kind).toBe('storage#objects');
        seen.push(...((p.items ?? []) as Json[]).map((i) => i.name as string), ...((p.prefixes ?? []) as string[]).map((x) => `P:${x}`));
        expect((p.items?.length ?? 0) + (p.prefixes?.length ?? 0)).toBeLessThanOrEqual(2);
        token = p.nextPageToken;
      } while (token);
      return seen;
    };
    // UTF-8 byte order puts U+FFFF (EF BF BF) before U+10000 (F0 90 80 80); UTF-16 order would not.
    const walSorted = ['wal/0001', 'wal/0002', 'wal/0003', 'wal/0004', 'wal/0005', 'wal/sub/a', 'wal/sub/b', 'wal/\uffff', 'wal/\u{10000}'];
    expect(await all('prefix=wal%2F&maxResults=2')).toEqual(walSorted);
    expect(await all(`prefix=wal%2F&maxResults=2&startOffset=${encodeURIComponent('wal/0003')}`)).toEqual(walSorted.slice(2));
    expect(await all(`prefix=wal%2F&maxResults=2&startOffset=wal%2F0002&endOffset=wal%2F0005`)).toEqual(['wal/0002', 'wal/0003', 'wal/0004']);
    // With a delimiter, a prefix counts as one entry and is never repeated across pages.
    expect(await all('prefix=wal%2F&delimiter=%2F&maxResults=2')).toEqual([
      'wal/0001',
      'wal/0002',
      'wal/0003',
      'wal/0004',
      'wal/0005',
      'P:wal/sub/',
      'wal/\uffff',
      'wal/\u{10000}',
    ]);
    const top = await page('delimiter=%2F');
    expect(top.prefixes).toEqual(['wal/', 'x/']);
    expect(top.items).toBeUndefined();

    const partial = await page('prefix=wal%2F000&maxResults=3&fields=nextPageToken,items(name,size)');
    expect(Object.keys(partial).sort()).toEqual(['items', 'nextPageToken']);
    expect(partial.items).toEqual([
      { name: 'wal/0001', size: '8' },
      { name: 'wal/0002', size: '8' },
      { name: 'wal/0003', size: '8' },
    ]);
  });

  it('injects faults for the next n requests with a Google-shaped error', async () => {
    srv.faults.failNext(2, 503);
    await expectGoogleError(await fetch(`${api}/b/raw`), 503, 'backendError');
    await expectGoogleError(await fetch(`${api}/b/raw`), 503, 'backendError');
    expect((await fetch(`${api}/b/raw`)).status).toBe(200);
    srv.faults.failNext(1, 429);
    await expectGoogleError(await media('f/x', Buffer.from('x')), 429, 'rateLimitExceeded');
    expect(srv.objects('raw').has('f/x')).toBe(false);
  });

  it("keeps an idle connection open past Node's default (5 s, closed at 6), as Google does, so a client reusing it is not cut off", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
        const req = http.get(`${api}/b/raw`, { agent }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
        });
        req.on('error', reject);
      });
    try {
      expect(await get()).toEqual({ status: 200, reused: false });
      await new Promise((r) => setTimeout(r, 6_500)); // Node closes at its 5 s timeout plus a 1 s grace
      expect(await get()).toEqual({ status: 200, reused: true });
    } finally {
      agent.destroy();
    }
  }, 15_000);

  it('ignores credentials by default but can require a bearer token', async () => {
    expect((await fetch(`${api}/b/raw`, { headers: { Authorization: 'Bearer anything' } })).status).toBe(200);
    const strict = await startGcsServer({ requireAuthToken: 'sekrit' });
    try {
      strict.createBucket('s');
      await expectGoogleError(await fetch(`${strict.url}/storage/v1/b/s`), 401, 'authError');
      await expectGoogleError(await fetch(`${strict.url}/storage/v1/b/s`, { headers: { Authorization: 'Bearer wrong' } }), 401, 'authError');
      expect((await fetch(`${strict.url}/storage/v1/b/s`, { headers: { Authorization: 'Bearer sekrit' } })).status).toBe(200);
    } finally {
      await strict.close();
    }
  });
});

// The SDK reads STORAGE_EMULATOR_HOST in the Storage constructor; with it, JSON API calls drop the
// /storage/v1 prefix (uploads keep /upload/storage/v1). A custom endpoint makes the SDK send no credentials.
describe.each(['apiEndpoint', 'STORAGE_EMULATOR_HOST'] as const)('@google-cloud/storage 7 via %s', (mode) => {
  let srv: GcsTestServer;
  let storage: Storage;
  const saved = process.env.STORAGE_EMULATOR_HOST;
  beforeAll(async () => {
    srv = await startGcsServer();
    srv.createBucket('wal');
    if (mode === 'apiEndpoint') {
      delete process.env.STORAGE_EMULATOR_HOST;
      storage = new Storage({ apiEndpoint: srv.url, projectId: 'test' });
    } else {
      process.env.STORAGE_EMULATOR_HOST = srv.url;
      storage = new Storage({ projectId: 'test' });
    }
  });
  afterAll(async () => {
    if (saved === undefined) delete process.env.STORAGE_EMULATOR_HOST;
    else process.env.STORAGE_EMULATOR_HOST = saved;
    await srv.close();
  });
  const bucket = () => storage.bucket('wal');
  const apiPrefix = mode === 'apiEndpoint' ? '/storage/v1/b/' : '/b/';

  it('multipart save with ifGenerationMatch 0, md5Hash and custom metadata; a second save fails 412', async () => {
    const data = pattern(64 * KiB, 11);
    const file = bucket().file('seg/000000010000000000000001');
    srv.requests.length = 0;
    await file.save(data, {
      resumable: false,
      preconditionOpts: { ifGenerationMatch: 0 },
      metadata: { md5Hash: md5(data), metadata: { k: 'v' } },
    });
    const upload = srv.requests.find((r) => r.method === 'POST')!;
    expect(upload.url).toMatch(/^\/upload\/storage\/v1\/b\/wal\/o\?.*uploadType=multipart/);
    expect(upload.url).toContain('ifGenerationMatch=0');
    expect(upload.headers.authorization).toBeUndefined();

    const err = await file.save(data, { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } }).catch((e: unknown) => e);
    expect((err as { code?: number }).code).toBe(412);

    const [md] = await file.getMetadata();
    expect(md).toMatchObject({ size: String(data.length), md5Hash: md5(data), crc32c: crc32cBase64(data), metadata: { k: 'v' } });
    expect(srv.requests.at(-1)!.url.startsWith(`${apiPrefix}wal/o/seg%2F000000010000000000000001`)).toBe(true);
  });

  it('rejects a save whose md5Hash does not match (400), storing nothing', async () => {
    const file = bucket().file('seg/badmd5');
    for (const resumable of [false, true]) {
      const err = await file.save(Buffer.from('data'), { resumable, metadata: { md5Hash: md5(Buffer.from('other')) } }).catch((e: unknown) => e);
      expect((err as { code?: number }).code).toBe(400);
      expect(srv.objects('wal').has('seg/badmd5')).toBe(false);
    }
  });

  it('chunked resumable save of 20 MiB in 8 MiB chunks; a second save with ifGenerationMatch 0 fails 412', async () => {
    const data = pattern(20 * MiB, 12);
    const file = bucket().file('seg/big');
    srv.requests.length = 0;
    await file.save(data, {
      resumable: true,
      chunkSize: 8 * MiB,
      preconditionOpts: { ifGenerationMatch: 0 },
      metadata: { md5Hash: md5(data), metadata: { k: 'v' } },
    });
    const puts = srv.requests.filter((r) => r.method === 'PUT').map((r) => r.headers['content-range']);
    expect(puts).toEqual([`bytes 0-${8 * MiB - 1}/*`, `bytes ${8 * MiB}-${16 * MiB - 1}/*`, `bytes ${16 * MiB}-${20 * MiB - 1}/${20 * MiB}`]);
    expect(srv.requests[0]!.url).toMatch(/^\/upload\/storage\/v1\/b\/wal\/o\?.*uploadType=resumable/);
    expect(srv.objects('wal').get('seg/big')!.data.equals(data)).toBe(true);

    const err = await file.save(Buffer.from('x'), { resumable: true, chunkSize: 8 * MiB, preconditionOpts: { ifGenerationMatch: 0 } }).catch((e: unknown) => e);
    expect((err as { code?: number }).code).toBe(412);

    const [md] = await file.getMetadata();
    expect(md).toMatchObject({ size: String(20 * MiB), md5Hash: md5(data), crc32c: crc32cBase64(data), metadata: { k: 'v' } });
  });

  it('single-request resumable save (Content-Range "bytes 0-*/*"), also of an empty object', async () => {
    await bucket().file('seg/rs').save(Buffer.from('small resumable'), { resumable: true });
    expect(srv.objects('wal').get('seg/rs')!.data.toString()).toBe('small resumable');
    await bucket().file('seg/empty').save(Buffer.alloc(0), { resumable: true });
    expect(srv.objects('wal').get('seg/empty')!.data.length).toBe(0);
  });

  it('resumes correctly when the server keeps only part of a chunk (chunkSize not a 256 KiB multiple)', async () => {
    const data = pattern(1_000_000, 13);
    await bucket()
      .file('seg/odd')
      .save(data, { resumable: true, chunkSize: 300 * KiB });
    expect(srv.objects('wal').get('seg/odd')!.data.equals(data)).toBe(true);
  });

  it('createReadStream round trips byte-identical with crc32c and md5 validation, and detects corruption', async () => {
    const data = pattern(3 * MiB + 17, 14);
    const file = bucket().file('seg/rt');
    await file.save(data, { resumable: false });
    for (const validation of ['crc32c', 'md5'] as const) {
      expect((await readAll(file.createReadStream({ validation }))).equals(data)).toBe(true);
    }
    expect((await readAll(file.createReadStream({ start: 5, end: 14 }))).equals(data.subarray(5, 15))).toBe(true);

    const stored = srv.objects('wal').get('seg/rt')!;
    stored.data = Buffer.from(stored.data);
    stored.data[1000]! ^= 0xff; // corrupt the bytes, keep the recorded hashes
    for (const validation of ['crc32c', 'md5'] as const) {
      const err = await readAll(file.createReadStream({ validation })).catch((e: unknown) => e);
      expect((err as { code?: string }).code).toBe('CONTENT_DOWNLOAD_MISMATCH');
    }
  });

  it('getFiles pages with prefix, startOffset and maxResults', async () => {
    for (let i = 1; i <= 7; i++)
      await bucket()
        .file(`list/${String(i).padStart(4, '0')}`)
        .save(`n${i}`, { resumable: false });
    await bucket().file('other/x').save('x', { resumable: false });
    const names: string[] = [];
    let query: Record<string, unknown> | null = { prefix: 'list/', startOffset: 'list/0003', maxResults: 2, autoPaginate: false };
    let pages = 0;
    while (query) {
      const [files, next]: [Array<{ name: string }>, Record<string, unknown> | null] = (await bucket().getFiles(query)) as never;
      names.push(...files.map((f) => f.name));
      query = next;
      pages++;
    }
    expect(names).toEqual(['list/0003', 'list/0004', 'list/0005', 'list/0006', 'list/0007']);
    expect(pages).toBe(3);
  });

  it('deleteFiles and file.delete(); deleting a missing object is 404', async () => {
    await bucket().deleteFiles({ prefix: 'list/' });
    const [left] = await bucket().getFiles({ prefix: 'list/' });
    expect(left).toHaveLength(0);
    await bucket().file('other/x').delete();
    const err = await bucket()
      .file('other/x')
      .delete()
      .catch((e: unknown) => e);
    expect((err as { code?: number }).code).toBe(404);
    expect(srv.objects('wal').has('other/x')).toBe(false);
  });

  it('a missing bucket is a 404 the SDK can detect', async () => {
    const [exists] = await storage.bucket('missing').exists();
    expect(exists).toBe(false);
    const err = await storage
      .bucket('missing')
      .file('a')
      .getMetadata()
      .catch((e: unknown) => e);
    expect((err as { code?: number }).code).toBe(404);
    expect((err as Error).message).toBe('The specified bucket does not exist.');
    const [there] = await bucket().exists();
    expect(there).toBe(true);
  });

  it('retries injected 503s on idempotent calls', async () => {
    await bucket().file('seg/retry').save('r', { resumable: false });
    // retry-request caps each delay at maxRetryDelay (seconds); keep the test fast.
    const options = { projectId: 'test', retryOptions: { maxRetryDelay: 0.05 } };
    const fast = new Storage(mode === 'apiEndpoint' ? { ...options, apiEndpoint: srv.url } : options);
    srv.faults.failNext(2, 503);
    const before = srv.requests.length;
    const [md] = await fast.bucket('wal').file('seg/retry').getMetadata();
    expect(md.size).toBe('1');
    expect(srv.requests.length - before).toBe(3);
  });
});

// CMEK as Google documents it: `kmsKeyName` on objects.insert (query parameter, or in the object resource; the
// parameter wins), the object resource naming the key version that encrypts it, and 403 for a key the bucket's
// service agent cannot use. The SDK part pins what @google-cloud/storage 7 sends for File's `kmsKeyName`.
describe('CMEK (Cloud KMS keys)', () => {
  const KEY = 'projects/p/locations/us/keyRings/r/cryptoKeys/k';
  const UNKNOWN = 'projects/p/locations/us/keyRings/r/cryptoKeys/other';
  const VERSION = `${KEY}/cryptoKeyVersions/1`;
  let srv: GcsTestServer;
  let up: string;
  beforeAll(async () => {
    srv = await startGcsServer({ kmsKeys: [KEY] });
    srv.createBucket('cmek');
    up = `${srv.url}/upload/storage/v1/b/cmek/o`;
  });
  afterAll(() => srv.close());

  const keyParam = (key: string) => `&kmsKeyName=${encodeURIComponent(key)}`;
  const media = (name: string, query: string) => fetch(`${up}?uploadType=media&name=${name}${query}`, { method: 'POST', body: 'plain text' });
  function multipart(name: string, query: string, resource: Json) {
    const boundary = 'cmek-boundary';
    const body = `--${boundary}\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ name, ...resource })}\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\n\r\nbytes\r\n--${boundary}--`;
    return fetch(`${up}?uploadType=multipart${query}`, { method: 'POST', body, headers: { 'Content-Type': `multipart/related; boundary=${boundary}` } });
  }
  const refused = async (res: Response) => {
    expect(res.status).toBe(403);
    const { error } = (await res.json()) as Json;
    expect(error.errors[0]).toMatchObject({ domain: 'global', reason: 'forbidden' });
    expect(error.message).toBe(
      'Permission denied on Cloud KMS key. Please ensure that your Cloud Storage service account has been authorized to use this key.',
    );
  };

  it('encrypts a media or multipart upload with the key named as a parameter or in the resource, and names its version', async () => {
    const viaParam = (await (await media('a', keyParam(KEY))).json()) as Json;
    expect(viaParam.kmsKeyName).toBe(VERSION);
    expect(((await (await multipart('b', '', { kmsKeyName: KEY })).json()) as Json).kmsKeyName).toBe(VERSION);
    // The parameter overrides the resource's value.
    expect(((await (await multipart('c', keyParam(KEY), { kmsKeyName: UNKNOWN })).json()) as Json).kmsKeyName).toBe(VERSION);
    // Metadata and listings say it too; an object written without a key names none.
    expect(((await (await fetch(`${srv.url}/storage/v1/b/cmek/o/a`)).json()) as Json).kmsKeyName).toBe(VERSION);
    expect((await media('plain', '')).status).toBe(200);
    const { items } = (await (await fetch(`${srv.url}/storage/v1/b/cmek/o`)).json()) as Json;
    expect(Object.fromEntries(items.map((i: Json) => [i.name, i.kmsKeyName]))).toEqual({ a: VERSION, b: VERSION, c: VERSION, plain: undefined });
    // Reading needs nothing more: the server decrypts.
    expect(await (await fetch(`${srv.url}/storage/v1/b/cmek/o/a?alt=media`)).text()).toBe('plain text');
  });

  it('refuses a key the service agent cannot use (403 forbidden), storing nothing', async () => {
    await refused(await media('refused-1', keyParam(UNKNOWN)));
    await refused(await multipart('refused-2', '', { kmsKeyName: UNKNOWN }));
    expect(srv.objects('cmek').has('refused-1') || srv.objects('cmek').has('refused-2')).toBe(false);
  });

  it('checks the key when a resumable upload starts, and encrypts what it finalizes', async () => {
    const refusedStart = await fetch(`${up}?uploadType=resumable&name=r-refused${keyParam(UNKNOWN)}`, { method: 'POST' });
    expect(refusedStart.headers.get('location')).toBeNull();
    await refused(refusedStart);

    const start = await fetch(`${up}?uploadType=resumable&name=r-ok${keyParam(KEY)}`, { method: 'POST' });
    const session = start.headers.get('location')!;
    expect(new URL(session).searchParams.has('kmsKeyName')).toBe(false); // the session remembers it
    const done = await fetch(session, { method: 'PUT', body: 'abc', headers: { 'Content-Range': 'bytes 0-2/3' } });
    expect(((await done.json()) as Json).kmsKeyName).toBe(VERSION);
  });

  it("@google-cloud/storage 7 sends File's kmsKeyName as the kmsKeyName parameter of the upload's first request", async () => {
    const storage = new Storage({ apiEndpoint: srv.url, projectId: 'test' });
    for (const resumable of [false, true]) {
      const name = `sdk-${resumable}`;
      srv.requests.length = 0;
      await storage
        .bucket('cmek')
        .file(name, { kmsKeyName: KEY })
        .save(pattern(1000), { resumable, preconditionOpts: { ifGenerationMatch: 0 } });
      const first = new URL(srv.requests[0]!.url, srv.url);
      expect(first.searchParams.get('uploadType')).toBe(resumable ? 'resumable' : 'multipart');
      expect(first.searchParams.get('kmsKeyName')).toBe(KEY);
      expect(srv.objects('cmek').get(name)!.kmsKeyName).toBe(VERSION);
    }
  });

  it('can be told to ignore kmsKeyName, as emulators without CMEK do (for testing clients)', async () => {
    const ignoring = await startGcsServer({ ignoreKmsKeyName: true });
    ignoring.createBucket('cmek');
    const res = await fetch(`${ignoring.url}/upload/storage/v1/b/cmek/o?uploadType=media&name=x${keyParam(UNKNOWN)}`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Json).kmsKeyName).toBeUndefined();
    await ignoring.close();
  });
});
