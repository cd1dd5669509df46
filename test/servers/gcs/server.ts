/**
 * In-process test server for the subset of the Google Cloud Storage JSON API that walbridge uses, written
 * from Google's JSON API reference (objects insert/get/list/patch/delete, buckets get/insert), "Perform
 * resumable uploads", "Request preconditions", "Hashes and ETags" and "Use customer-managed encryption
 * keys". See README.md for scope, limits and sources.
 * Test equipment: it checks no credentials unless `requireAuthToken` is given.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StoredObject {
  name: string;
  /** Tests may replace this to simulate corruption: the recorded hashes below are left as they were. */
  data: Buffer;
  contentType: string;
  metadata: Record<string, string>;
  generation: number;
  metageneration: number;
  md5Hash: string; // base64 of the MD5 digest
  crc32c: string; // base64 of the big-endian CRC32C
  timeCreated: string;
  updated: string;
  /** The Cloud KMS key version that encrypts it (CMEK): projects/…/cryptoKeys/K/cryptoKeyVersions/1. */
  kmsKeyName?: string;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

export interface GcsTestServer {
  url: string; // e.g. http://127.0.0.1:PORT
  port: number;
  close(): Promise<void>;
  /** The next `count` requests (any kind) are answered `status` with a Google-shaped error; nothing is done. */
  faults: { failNext(count: number, status: 500 | 503 | 429): void };
  createBucket(name: string): void;
  /** The live object map of a bucket, for assertions and for corrupting data in tests. */
  objects(bucket: string): Map<string, StoredObject>;
  /** Every request received, in order, for protocol assertions. */
  requests: RecordedRequest[];
}

export interface GcsServerOptions {
  port?: number; // 0 (ephemeral) by default
  host?: '127.0.0.1';
  /** If set, a request whose Authorization is not `Bearer <token>` is answered 401. */
  requireAuthToken?: string;
  /**
   * Cloud KMS keys (projects/P/locations/L/keyRings/R/cryptoKeys/K) that exist and that the bucket's service agent
   * may use; an upload naming any other key is refused. None by default.
   */
  kmsKeys?: readonly string[];
  /** Accept kmsKeyName and store the object without it, as emulators without CMEK do: for testing clients' checks. */
  ignoreKmsKeyName?: boolean;
  /** Accept the request preconditions (ifGenerationMatch=0 included) and ignore them, as some emulators do: for testing clients' checks. */
  ignorePreconditions?: boolean;
  /** Store a body whose given MD5 / CRC32C does not match it (with its real hashes), as a store that does not check uploads: for testing clients' checks. */
  ignoreHashes?: boolean;
}

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
const CRC32C_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c >>> 0;
});

export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** GCS reports CRC32C as base64 of the big-endian 4 bytes. */
export function crc32cBase64(data: Uint8Array): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc32c(data));
  return b.toString('base64');
}

const md5Base64 = (data: Uint8Array) => createHash('md5').update(data).digest('base64');

/** Answered as {"error":{"code","message","errors":[{"domain":"global","reason","message"}]}}. */
class GcsError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}
const FAULTS: Record<number, [reason: string, message: string]> = {
  429: ['rateLimitExceeded', 'The rate of change requests to the object is too high.'],
  500: ['backendError', 'Internal error encountered.'],
  503: ['backendError', 'Service Unavailable'],
};
const badRequest = (message: string, reason = 'invalid') => new GcsError(400, message, reason);
// What Google answers when the service agent cannot use the key (or it does not exist: KMS does not tell them apart).
const kmsKeyRefused = () =>
  new GcsError(
    403,
    'Permission denied on Cloud KMS key. Please ensure that your Cloud Storage service account has been authorized to use this key.',
    'forbidden',
  );
const notAllowed = () => new GcsError(405, 'Method Not Allowed', 'methodNotAllowed');

// A non-final resumable chunk is persisted only in whole 256 KiB units (the documented chunk granularity);
// the docs tell clients not to assume every byte sent was kept, and the 308 Range says where to resume.
const UPLOAD_UNIT = 256 * 1024;

interface Bucket {
  name: string;
  timeCreated: string;
  objects: Map<string, StoredObject>;
}
/** What an upload brings besides its bytes: resource JSON, media type, query (preconditions), X-Goog-Hash. */
interface Write {
  meta: Record<string, unknown>;
  contentType: string | undefined;
  query: URLSearchParams;
  hashHeader: string | undefined;
}
interface Session {
  bucket: string;
  name: string;
  write: Write; // from the initiating POST: its preconditions are checked at finalization
  declaredLength: number | undefined; // X-Upload-Content-Length
  chunks: Buffer[];
  persisted: number;
  state: 'active' | 'done' | 'cancelled';
  result?: StoredObject;
}
type Send = (status: number, json?: unknown, headers?: Record<string, string>) => void;

export async function startGcsServer(opts: GcsServerOptions = {}): Promise<GcsTestServer> {
  const buckets = new Map<string, Bucket>();
  const sessions = new Map<string, Session>();
  const requests: RecordedRequest[] = [];
  let fault = { count: 0, status: 503 };
  let lastGeneration = 0;

  // Generations look like GCS's (microseconds since the epoch) and strictly increase.
  const nextGeneration = () => (lastGeneration = Math.max(lastGeneration + 1, Date.now() * 1000));

  const createBucket = (name: string) => {
    if (!buckets.has(name)) buckets.set(name, { name, timeCreated: new Date().toISOString(), objects: new Map() });
  };
  const bucketOf = (name: string) => {
    const b = buckets.get(name);
    if (!b) throw new GcsError(404, 'The specified bucket does not exist.', 'notFound');
    return b;
  };
  /** The live object; a `generation=` other than the live one is not found (no versioning here). */
  const getObject = (bucket: string, name: string, q: URLSearchParams) => {
    const obj = bucketOf(bucket).objects.get(name);
    if (!obj || (q.has('generation') && q.get('generation') !== String(obj.generation))) {
      throw new GcsError(404, `No such object: ${bucket}/${name}`, 'notFound');
    }
    return obj;
  };

  /**
   * Generation 0 stands for "no live object", so ifGenerationMatch=0 means "must not exist". A failed
   * *NotMatch on a read is 304 Not Modified, as the preconditions doc states; every other failure is 412.
   */
  function checkPreconditions(q: URLSearchParams, obj: StoredObject | undefined, read: boolean) {
    if (opts.ignorePreconditions) return;
    const fail = (what: string, notMatch = false) => {
      if (notMatch && read && obj) throw new GcsError(304, 'Not Modified', 'notModified');
      throw new GcsError(412, `At least one of the pre-conditions you specified did not hold. (${what})`, 'conditionNotMet');
    };
    const num = (k: string) => {
      const v = q.get(k);
      if (v !== null && !/^\d+$/.test(v)) throw badRequest(`Invalid value for ${k}: ${v}`);
      return v === null ? undefined : Number(v);
    };
    const [gm, gnm] = [num('ifGenerationMatch'), num('ifGenerationNotMatch')];
    const [mm, mnm] = [num('ifMetagenerationMatch'), num('ifMetagenerationNotMatch')];
    const gen = obj?.generation ?? 0;
    if (gm !== undefined && gm !== gen) fail('ifGenerationMatch');
    if (gnm !== undefined && (!obj || gnm === gen)) fail('ifGenerationNotMatch', true);
    if (mm !== undefined && (!obj || mm !== obj.metageneration)) fail('ifMetagenerationMatch');
    if (mnm !== undefined && (!obj || mnm === obj.metageneration)) fail('ifMetagenerationNotMatch', true);
  }

  /**
   * The key version an upload is encrypted with: the kmsKeyName query parameter, which overrides the resource's
   * kmsKeyName (Objects: insert). Every known key has one version, its primary, 1.
   */
  function encryptionKey(w: Pick<Write, 'meta' | 'query'>): string | undefined {
    const asked = w.query.get('kmsKeyName') ?? (typeof w.meta.kmsKeyName === 'string' ? w.meta.kmsKeyName : undefined);
    if (asked === undefined || opts.ignoreKmsKeyName) return undefined;
    if (!(opts.kmsKeys ?? []).includes(asked)) throw kmsKeyRefused();
    return `${asked}/cryptoKeyVersions/1`;
  }

  /** The single place objects are written: client hashes are verified first, so bad data is never stored. */
  function commit(bucket: string, name: string, data: Buffer, w: Write): StoredObject {
    const { meta, contentType, query, hashHeader } = w;
    const b = bucketOf(bucket);
    if (!name) throw badRequest('Required', 'required');
    const md5 = md5Base64(data);
    const crc = crc32cBase64(data);
    const sent = parseHashHeader(hashHeader);
    const checks = [
      ['MD5 hash', md5, [meta.md5Hash, sent.md5]],
      ['CRC32C', crc, [meta.crc32c, sent.crc32c]],
    ] as const;
    for (const [label, actual, provided] of opts.ignoreHashes ? [] : checks) {
      for (const want of provided) {
        if (want === undefined || want === actual) continue;
        throw badRequest(`Provided ${label} "${String(want)}" doesn't match calculated ${label} "${actual}".`);
      }
    }
    const kmsKeyName = encryptionKey(w);
    checkPreconditions(query, b.objects.get(name), false);
    const now = new Date().toISOString();
    const obj: StoredObject = {
      name,
      data,
      contentType: contentType || 'application/octet-stream',
      metadata: mergeMetadata({}, meta.metadata),
      generation: nextGeneration(),
      metageneration: 1,
      md5Hash: md5,
      crc32c: crc,
      timeCreated: now,
      updated: now,
      ...(kmsKeyName ? { kmsKeyName } : {}),
    };
    b.objects.set(name, obj);
    return obj;
  }

  /** The object resource; generation, metageneration and size are strings, as in the JSON API. */
  function resource(bucket: string, o: StoredObject, base: string): Record<string, unknown> {
    const path = `b/${encodeURIComponent(bucket)}/o/${encodeURIComponent(o.name)}`;
    return {
      kind: 'storage#object',
      id: `${bucket}/${o.name}/${o.generation}`,
      selfLink: `${base}/storage/v1/${path}`,
      mediaLink: `${base}/download/storage/v1/${path}?generation=${o.generation}&alt=media`,
      name: o.name,
      bucket,
      generation: String(o.generation),
      metageneration: String(o.metageneration),
      contentType: o.contentType,
      storageClass: 'STANDARD',
      size: String(o.data.length),
      md5Hash: o.md5Hash,
      crc32c: o.crc32c,
      etag: createHash('md5').update(`${o.generation}/${o.metageneration}`).digest('base64').slice(0, 16),
      timeCreated: o.timeCreated,
      updated: o.updated,
      timeStorageClassUpdated: o.timeCreated,
      ...(o.kmsKeyName ? { kmsKeyName: o.kmsKeyName } : {}),
      ...(Object.keys(o.metadata).length ? { metadata: { ...o.metadata } } : {}),
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Drain the body first, so that an early error answer never breaks the client's send.
    const body = Buffer.concat((await req.toArray()) as Buffer[]);
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const q = url.searchParams;
    const method = req.method ?? 'GET';
    const base = `http://${req.headers.host ?? `127.0.0.1:${port}`}`;
    const send: Send = (status, json, headers = {}) => {
      if (json !== undefined && status < 300 && q.has('fields')) json = pickFields(json, q.get('fields')!);
      const payload = json === undefined ? '' : JSON.stringify(json);
      const type = json === undefined ? {} : { 'Content-Type': 'application/json; charset=UTF-8' };
      res.writeHead(status, { ...headers, ...type, 'Content-Length': String(Buffer.byteLength(payload)) });
      res.end(payload);
    };

    try {
      if (fault.count > 0) {
        fault.count--;
        const [reason, message] = FAULTS[fault.status]!;
        throw new GcsError(fault.status, message, reason);
      }
      if (opts.requireAuthToken !== undefined && req.headers.authorization !== `Bearer ${opts.requireAuthToken}`) {
        const challenge = { 'WWW-Authenticate': 'Bearer realm="https://accounts.google.com/"' };
        throw new GcsError(401, 'Invalid Credentials', 'authError', challenge);
      }

      // With apiEndpoint the SDK sends /storage/v1/b/...; with STORAGE_EMULATOR_HOST it drops that prefix
      // (/b/...). Uploads always go to /upload/storage/v1/b/...; mediaLink points at /download/storage/v1/b/...
      const raw = url.pathname;
      const prefix = /^\/(upload|download)(\/storage\/v1)?(?=\/b(\/|$))/.exec(raw) ?? /^(\/storage\/v1)?(?=\/b(\/|$))/.exec(raw);
      const m = prefix && /^\/b(?:\/([^/]+)(\/o(?:\/(.+))?)?)?\/?$/.exec(raw.slice(prefix[0].length));
      if (!prefix || !m) throw new GcsError(404, 'Not Found', 'notFound');
      const area = prefix[1] === 'upload' || prefix[1] === 'download' ? prefix[1] : 'api';
      const bucket = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
      const object = m[3] === undefined ? undefined : decodeURIComponent(m[3]); // encoded; may contain '/'

      if (bucket === undefined) {
        // POST /b?project=: create a bucket
        if (area !== 'api' || method !== 'POST') throw notAllowed();
        const name = String(parseJson(body).name ?? '');
        if (!name) throw badRequest('Required', 'required');
        if (buckets.has(name)) {
          throw new GcsError(409, 'Your previous request to create the named bucket succeeded and you already own it.', 'conflict');
        }
        createBucket(name);
        return send(200, bucketResource(bucketOf(name)));
      }
      if (m[2] === undefined) {
        // GET /b/{bucket}: lets clients detect a missing bucket
        if (area !== 'api' || method !== 'GET') throw notAllowed();
        return send(200, bucketResource(bucketOf(bucket)));
      }

      if (area === 'upload' && object === undefined) {
        if (q.has('upload_id')) return handleSession(req, res, q.get('upload_id')!, body, base, send);
        if (method !== 'POST') throw notAllowed();
        const type = q.get('uploadType');
        const hashHeader = header(req, 'x-goog-hash');
        if (type === 'media') {
          const contentType = header(req, 'content-type');
          const obj = commit(bucket, q.get('name') ?? '', body, { meta: {}, contentType, query: q, hashHeader });
          return send(200, resource(bucket, obj, base));
        }
        if (type === 'multipart') {
          // multipart/related: the JSON resource, then the media
          const [metaPart, mediaPart, extra] = parseMultipart(body, header(req, 'content-type'));
          if (!metaPart || !mediaPart || extra) throw badRequest('A multipart upload has exactly two parts: metadata and media.');
          const meta = parseJson(metaPart.body);
          const contentType = (meta.contentType as string | undefined) ?? mediaPart.headers['content-type'];
          const name = q.get('name') ?? String(meta.name ?? '');
          const obj = commit(bucket, name, mediaPart.body, { meta, contentType, query: q, hashHeader });
          return send(200, resource(bucket, obj, base));
        }
        if (type === 'resumable') {
          bucketOf(bucket);
          const meta = body.length > 0 ? parseJson(body) : {};
          const name = q.get('name') ?? String(meta.name ?? '');
          if (!name) throw badRequest('Required', 'required');
          const id = randomUUID().replace(/-/g, '');
          const declared = header(req, 'x-upload-content-length');
          const contentType = (meta.contentType as string | undefined) ?? header(req, 'x-upload-content-type');
          encryptionKey({ meta, query: q }); // a key the service agent cannot use is refused before any data is sent
          sessions.set(id, {
            bucket,
            name,
            write: { meta, contentType, query: new URLSearchParams(q), hashHeader: undefined },
            declaredLength: declared === undefined ? undefined : Number(declared),
            chunks: [],
            persisted: 0,
            state: 'active',
          });
          const session = new URLSearchParams({ uploadType: 'resumable', name, upload_id: id });
          const location = `${base}${prefix[0]}/b/${encodeURIComponent(bucket)}/o?${session}`;
          return send(200, undefined, { Location: location, 'X-GUploader-UploadID': id });
        }
        throw badRequest(`Invalid upload type: ${type ?? '(none)'}`);
      }

      if (object === undefined) {
        if (area !== 'api' || method !== 'GET') throw notAllowed();
        return send(200, list(bucketOf(bucket), q, base));
      }
      if (area === 'upload') throw notAllowed();
      if (method === 'GET') {
        const obj = getObject(bucket, object, q);
        checkPreconditions(q, obj, true);
        if (area === 'download' || q.get('alt') === 'media') return sendMedia(req, res, obj);
        return send(200, resource(bucket, obj, base));
      }
      if (area === 'download') throw notAllowed();
      if (method === 'PATCH') {
        // Updates custom metadata (null removes a key, a null map clears it) and contentType; bumps metageneration.
        const obj = getObject(bucket, object, q);
        checkPreconditions(q, obj, false);
        const patch = parseJson(body);
        if ('metadata' in patch) obj.metadata = patch.metadata === null ? {} : mergeMetadata(obj.metadata, patch.metadata);
        if (typeof patch.contentType === 'string') obj.contentType = patch.contentType;
        obj.metageneration++;
        obj.updated = new Date().toISOString();
        return send(200, resource(bucket, obj, base));
      }
      if (method === 'DELETE') {
        checkPreconditions(q, getObject(bucket, object, q), false);
        bucketOf(bucket).objects.delete(object);
        return send(204);
      }
      throw notAllowed();
    } catch (err) {
      if (!(err instanceof GcsError)) throw err;
      if (err.status === 304) return send(304, undefined, err.headers);
      const { status, message, reason } = err;
      send(status, { error: { code: status, message, errors: [{ domain: 'global', reason, message }] } }, err.headers);
    }
  }

  /** A PUT (or POST) to the session URI uploads a chunk or asks for status; DELETE cancels (499, as documented). */
  function handleSession(req: IncomingMessage, res: ServerResponse, id: string, body: Buffer, base: string, send: Send): void {
    const s = sessions.get(id);
    if (!s) throw new GcsError(404, 'No such upload session.', 'notFound');
    if (s.state === 'cancelled') throw new GcsError(410, 'The upload session was cancelled.', 'gone');
    const ids = { 'X-GUploader-UploadID': id };
    if (req.method === 'DELETE') {
      Object.assign(s, { state: 'cancelled', chunks: [] });
      res.writeHead(499, { ...ids, 'Content-Length': '0' });
      return void res.end();
    }
    if (req.method !== 'PUT' && req.method !== 'POST') throw notAllowed();
    if (s.state === 'done') return send(200, resource(s.bucket, s.result!, base), ids);
    // 308 "Resume Incomplete"; Range (inclusive) only once some bytes are persisted.
    const incomplete = () => send(308, undefined, s.persisted > 0 ? { ...ids, Range: `bytes=0-${s.persisted - 1}` } : ids);

    // Content-Range: "bytes a-b/total|*" (a chunk), "bytes */total|*" (status query, or finalize if all bytes
    // are in), and "bytes a-*/total|*", which the Node SDK sends for one streamed request whose end ends the
    // object. None at all means the whole object in this request; "bytes 0--1/0" is an empty final chunk.
    const cr = header(req, 'content-range') ?? (body.length ? `bytes 0-${body.length - 1}/${body.length}` : 'bytes */0');
    const r = /^bytes (?:\*|(\d+)-(-1|\d+|\*))\/(\*|\d+)$/.exec(cr.trim());
    if (!r) throw badRequest(`Invalid Content-Range: ${cr}`);
    let total = r[3] === '*' ? undefined : Number(r[3]);
    if (r[1] === undefined) {
      if (body.length > 0) throw badRequest('A status query carries no data.');
      return total === s.persisted ? finalize(s, id, Buffer.concat(s.chunks), req, base, send) : incomplete();
    }
    const start = Number(r[1]);
    if (r[2] === '*') total ??= start + body.length;
    else if (Number(r[2]) - start + 1 !== body.length) throw badRequest(`Content-Range ${cr} does not match ${body.length} bytes.`);
    const end = start + body.length; // exclusive
    if (start > s.persisted) {
      throw badRequest(
        `Invalid request. According to the Content-Range header, the upload offset is ${start} byte(s), ` +
          `which exceeds already uploaded size of ${s.persisted} byte(s).`,
      );
    }
    if (total !== undefined && (end > total || total < s.persisted)) throw badRequest(`Content-Range ${cr} contradicts the upload.`);
    // The client may resend bytes the server already has (it must not assume they all arrived): skip them.
    const fresh = body.subarray(Math.min(body.length, s.persisted - start));
    if (end === total) return finalize(s, id, Buffer.concat([...s.chunks, fresh]), req, base, send);
    const keep = Math.floor((s.persisted + fresh.length) / UPLOAD_UNIT) * UPLOAD_UNIT - s.persisted;
    if (keep > 0) {
      s.chunks.push(Buffer.from(fresh.subarray(0, keep)));
      s.persisted += keep;
    }
    return incomplete();
  }

  function finalize(s: Session, id: string, data: Buffer, req: IncomingMessage, base: string, send: Send): void {
    try {
      if (s.declaredLength !== undefined && s.declaredLength !== data.length) {
        throw badRequest(`Upload of ${data.length} bytes does not match X-Upload-Content-Length ${s.declaredLength}.`);
      }
      s.result = commit(s.bucket, s.name, data, { ...s.write, hashHeader: header(req, 'x-goog-hash') });
    } catch (err) {
      sessions.delete(id); // a failed finalization ends the session, and nothing was stored
      throw err;
    }
    Object.assign(s, { state: 'done', chunks: [], persisted: data.length });
    send(200, resource(s.bucket, s.result, base), { 'X-GUploader-UploadID': id });
  }

  /** alt=media: the bytes, the whole object's hashes in x-goog-hash (also for a range), single Range → 206. */
  function sendMedia(req: IncomingMessage, res: ServerResponse, o: StoredObject): void {
    const size = o.data.length;
    const headers: Record<string, string> = {
      'Content-Type': o.contentType,
      'x-goog-hash': `crc32c=${o.crc32c},md5=${o.md5Hash}`,
      'x-goog-generation': String(o.generation),
      'x-goog-metageneration': String(o.metageneration),
      'x-goog-stored-content-length': String(size),
      'x-goog-stored-content-encoding': 'identity', // the SDK validates hashes only when this says identity
      'x-goog-storage-class': 'STANDARD',
      ETag: `"${Buffer.from(o.md5Hash, 'base64').toString('hex')}"`,
      'Last-Modified': new Date(o.updated).toUTCString(),
    };
    let status = 200;
    let body = o.data;
    const range = /^bytes=(\d*)-(\d*)$/.exec(header(req, 'range')?.trim() ?? '');
    if (range && (range[1] || range[2]) && size > 0) {
      // "a-b", "a-" or the suffix form "-n"
      const first = range[1] ? Number(range[1]) : Math.max(0, size - Number(range[2]));
      const last = range[1] && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (first >= size || first > last) {
        const cr = { 'Content-Range': `bytes */${size}` };
        throw new GcsError(416, 'The requested range cannot be satisfied.', 'requestedRangeNotSatisfiable', cr);
      }
      status = 206;
      body = o.data.subarray(first, last + 1);
      headers['Content-Range'] = `bytes ${first}-${last}/${size}`;
    }
    res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
    res.end(body);
  }

  /**
   * objects.list in UTF-8 byte order of names. maxResults counts items and prefixes together; the page
   * token remembers the last entry returned (an object name, or a prefix whose whole subtree was returned).
   */
  function list(b: Bucket, q: URLSearchParams, base: string) {
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter') ?? '';
    const [startOffset, endOffset, token] = [q.get('startOffset'), q.get('endOffset'), q.get('pageToken')];
    const max = Math.max(1, Math.min(Number(q.get('maxResults')) || 1000, 1000));
    let cursor: { k: 'o' | 'p'; v: string } | undefined;
    try {
      if (token) cursor = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as typeof cursor;
    } catch {
      throw badRequest('Invalid pageToken.');
    }
    const names = [...b.objects.keys()]
      .filter((n) => n.startsWith(prefix))
      .filter((n) => (startOffset === null || byteCompare(n, startOffset) >= 0) && (endOffset === null || byteCompare(n, endOffset) < 0))
      .filter((n) => !cursor || (byteCompare(n, cursor.v) > 0 && !(cursor.k === 'p' && n.startsWith(cursor.v))))
      .sort(byteCompare);
    const items: Record<string, unknown>[] = [];
    const prefixes: string[] = [];
    let last: typeof cursor;
    let nextPageToken: string | undefined;
    for (const n of names) {
      const cut = delimiter ? n.indexOf(delimiter, prefix.length) : -1;
      const p = cut >= 0 ? n.slice(0, cut + delimiter.length) : undefined;
      if (p !== undefined && last?.k === 'p' && last.v === p) continue; // names under a prefix are contiguous
      if (items.length + prefixes.length === max) {
        nextPageToken = Buffer.from(JSON.stringify(last)).toString('base64url');
        break;
      }
      if (p !== undefined) prefixes.push(p);
      else items.push(resource(b.name, b.objects.get(n)!, base));
      last = p !== undefined ? { k: 'p', v: p } : { k: 'o', v: n };
    }
    return { kind: 'storage#objects', nextPageToken, prefixes: prefixes.length ? prefixes : undefined, items: items.length ? items : undefined };
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // A bug in this server, not a simulated fault: answer 500 with the reason so the test shows it.
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify({ error: { code: 500, message, errors: [{ domain: 'global', reason: 'backendError', message }] } }));
    });
  });
  // Google's front ends keep an idle connection open for minutes (610 s for its load balancers);
  // Node's 5 s default closed one just as a client reused it, failing that request with EPIPE.
  server.keepAliveTimeout = 610_000;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://${host}:${port}`,
    port,
    requests,
    faults: { failNext: (count, status) => void (fault = { count, status }) },
    createBucket,
    objects: (bucket) => bucketOf(bucket).objects,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function parseJson(body: Buffer): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(body.toString('utf8') || '{}');
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw badRequest('Parse Error', 'parseError');
}

/** "crc32c=AAAA,md5=BBBB==" → { crc32c, md5 }; base64 values contain '=', so split at the first one. */
function parseHashHeader(value: string | undefined): { md5?: string; crc32c?: string } {
  const out: { md5?: string; crc32c?: string } = {};
  for (const pair of (value ?? '').split(',')) {
    const i = pair.indexOf('=');
    const k = pair.slice(0, i).trim();
    if (k === 'md5' || k === 'crc32c') out[k] = pair.slice(i + 1).trim();
  }
  return out;
}

/** Custom metadata values are strings; a null value removes the key (patch semantics). */
function mergeMetadata(into: Record<string, string>, patch: unknown): Record<string, string> {
  const out = { ...into };
  for (const [k, v] of Object.entries(patch && typeof patch === 'object' ? patch : {})) {
    if (v === null) delete out[k];
    else out[k] = String(v);
  }
  return out;
}

function bucketResource(b: Bucket) {
  const { name, timeCreated } = b;
  return {
    ...{ kind: 'storage#bucket', id: name, name, projectNumber: '0', metageneration: '1', etag: 'CAE=' },
    ...{ location: 'US', storageClass: 'STANDARD', timeCreated, updated: timeCreated },
  };
}

/** GCS orders names by their UTF-8 bytes, which differs from JS (UTF-16) order above U+FFFF. */
function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** multipart/related → parts. Each part follows CRLF "--boundary" (the first may not); the last is "--boundary--". */
function parseMultipart(body: Buffer, contentType: string | undefined) {
  const bm = /^multipart\/related;.*\bboundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType ?? '');
  const boundary = bm?.[1] ?? bm?.[2];
  if (!boundary) throw badRequest('Expected multipart/related with a boundary.');
  const delim = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  const parts: { headers: Record<string, string>; body: Buffer }[] = [];
  let pos = body.indexOf(delim);
  while (pos >= 0) {
    pos += delim.length;
    if (body.subarray(pos, pos + 2).toString() === '--') return parts; // the closing delimiter
    const headStart = body.indexOf('\r\n', pos) + 2;
    const partEnd = body.indexOf(next, headStart);
    const split = body.indexOf('\r\n\r\n', headStart - 2);
    if (headStart < 2 || partEnd < 0 || split < 0 || split > partEnd) break;
    const headers: Record<string, string> = {};
    for (const line of body.subarray(headStart, split).toString('utf8').split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    parts.push({ headers, body: body.subarray(split + 4, partEnd) });
    pos = partEnd + 2;
  }
  throw badRequest('Malformed multipart body.');
}

/** Partial responses: "fields=nextPageToken,items(name,size),prefixes", also "a/b" paths and nesting. */
function pickFields(value: unknown, spec: string): unknown {
  if (Array.isArray(value)) return value.map((v) => pickFields(v, spec));
  if (!value || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  let depth = 0;
  let from = 0;
  for (let i = 0; i <= spec.length; i++) {
    if (spec[i] === '(') depth++;
    else if (spec[i] === ')') depth--;
    else if (depth === 0 && (spec[i] === ',' || i === spec.length)) {
      // one top-level selector: "name", "name(sub,selectors)" or "name/sub/path"
      const m = /^\s*([^(/\s]+)(?:\((.*)\)|\/(.+))?\s*$/s.exec(spec.slice(from, i));
      from = i + 1;
      const v = m && (value as Record<string, unknown>)[m[1]!];
      if (!m || v === undefined) continue;
      const sub = m[2] ?? m[3];
      const picked = sub === undefined ? v : pickFields(v, sub);
      const prev = out[m[1]!];
      out[m[1]!] = prev && typeof prev === 'object' && !Array.isArray(prev) ? { ...prev, ...(picked as object) } : picked;
    }
  }
  return out;
}
