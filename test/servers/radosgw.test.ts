/**
 * The radosgw harness, and what RGW (Ceph 16.2.15, Debian 12) does with the S3 features walbridge
 * relies on, through @aws-sdk/client-s3 3.1175 with checksums set to WHEN_REQUIRED.
 *
 * Observed (the assertions below pin each of these down), identical over http and https:
 *  - PutObject with IfNoneMatch: '*' on a new key: 200. Again on the same key: HTTP 412, the SDK
 *    throws name 'PreconditionFailed' (Code 'PreconditionFailed', $fault 'client').
 *  - PutObject with a wrong ContentMD5: HTTP 400, name 'BadDigest'. RGW verifies Content-MD5.
 *  - Single PutObject (no multipart): ETag is the quoted hex MD5 of the body, '"<32 hex>"'
 *    (the same in PutObject, HeadObject and GetObject responses).
 *  - GetObject round-trips the bytes; ListObjectsV2 paginates (MaxKeys, ContinuationToken,
 *    IsTruncated, KeyCount) and honours StartAfter; DeleteObjects deletes and reports Deleted[].
 *  - HeadBucket of a missing bucket: HTTP 404, name 'NotFound' (a HEAD has no body to carry a code).
 *    GetObject/ListObjectsV2/PutObject on a missing bucket: HTTP 404, name 'NoSuchBucket'.
 *    GetObject of a missing key: HTTP 404, name 'NoSuchKey'.
 *  - Wrong secret key: HTTP 403, name 'SignatureDoesNotMatch'.
 *    Unknown access key: HTTP 403, name 'InvalidAccessKeyId'.
 *  - Server stopped (connection refused): no HTTP status ($metadata.httpStatusCode undefined),
 *    err.name 'Error', err.code 'ECONNREFUSED' ($retryable not set; the SDK's standard retry
 *    strategy treats it as a transient network error and retries while attempts remain).
 *  - Over https, a client that does not trust caFile fails with code
 *    'DEPTH_ZERO_SELF_SIGNED_CERT'; with the CA it works (SAN has IP:127.0.0.1, DNS:127.0.0.1,
 *    DNS:localhost).
 *  - SSE-KMS with the testing backend (keys in ceph.conf, rgw_crypt_require_ssl = false): PutObject,
 *    HeadObject and GetObject answer x-amz-server-side-encryption: aws:kms and the key id exactly as
 *    given (no ARN made of a bare id, unlike AWS); the ETag stays the hex MD5 of the plaintext (on AWS
 *    an SSE-KMS object's is not); Content-MD5 is still checked (BadDigest). CreateMultipartUpload and
 *    UploadPart report the encryption, CompleteMultipartUpload does not (AWS's does).
 *  - An SSE-KMS key id the backend does not know: HTTP 403, name 'InvalidAccessKeyId', message
 *    "Failed to retrieve the actual key, kms-keyid: <id>", nothing stored (AWS: 400
 *    KMS.NotFoundException, or 403 AccessDenied without kms:GenerateDataKey). aws:kms without a
 *    key id: HTTP 400 InvalidArgument (AWS would use its aws/s3 key).
 *  - x-amz-server-side-encryption: AES256 (SSE-S3) is accepted and ignored: 200, the object is
 *    stored unencrypted and no answer mentions encryption. RGW 16 has no SSE-S3.
 */
import { X509Certificate } from 'node:crypto';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { startGateway, startRadosgw, type Radosgw } from './radosgw.js';

let rgw: Radosgw;

beforeAll(async () => {
  rgw = await startRadosgw({ tls: true, log: (l) => console.log(l) });
  console.log(`radosgw started in ${rgw.startMs} ms: ${rgw.endpoint} ${rgw.httpsEndpoint}`);
}, 120_000);

afterAll(async () => {
  await rgw?.stop();
});

interface SdkError extends Error {
  Code?: string;
  code?: string;
  $fault?: string;
  $metadata?: { httpStatusCode?: number };
}

async function failure(p: Promise<unknown>): Promise<SdkError> {
  try {
    await p;
  } catch (err) {
    return err as SdkError;
  }
  throw new Error('expected the request to fail, it succeeded');
}

const md5 = (b: Buffer): Buffer => createHash('md5').update(b).digest();

function client(endpoint: string, extra: Partial<S3ClientConfig> = {}): S3Client {
  const cfg: S3ClientConfig = {
    endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKey, secretAccessKey: rgw.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...extra,
  };
  if (endpoint.startsWith('https:') && extra.requestHandler === undefined) {
    cfg.requestHandler = { httpsAgent: new https.Agent({ ca: fs.readFileSync(rgw.caFile!) }) };
  }
  return new S3Client(cfg);
}

/** pids of this cluster's daemons (their command line names our ceph.conf). */
function daemonPids(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(dir)) pids.push(Number(entry));
    } catch {
      /* raced with exit */
    }
  }
  return pids;
}

/** Listening TCP sockets of the given pids, as [address, port], from /proc (no ss needed). */
function listeningSockets(pids: number[]): Array<{ addr: string; port: number; pid: number }> {
  const inodeToPid = new Map<string, number>();
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) inodeToPid.set(m[1], pid);
      } catch {
        /* fd closed meanwhile */
      }
    }
  }
  const out: Array<{ addr: string; port: number; pid: number }> = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = fs.readFileSync(table, 'utf8').trim().split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      const [local, state, inode] = [f[1], f[3], f[9]];
      if (state !== '0A' || !local || !inode) continue; // 0A = LISTEN
      const pid = inodeToPid.get(inode);
      if (pid === undefined) continue;
      const [hexAddr = '', hexPort = '0'] = local.split(':');
      let addr = hexAddr;
      if (hexAddr.length === 8) {
        addr = [3, 2, 1, 0].map((i) => parseInt(hexAddr.slice(i * 2, i * 2 + 2), 16)).join('.');
      } else if (hexAddr === '00000000000000000000000001000000') {
        addr = '::1';
      }
      out.push({ addr, port: parseInt(hexPort, 16), pid });
    }
  }
  return out;
}

function connectError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
  });
}

describe('radosgw harness', () => {
  it('serves http and https on loopback only, with a usable certificate', () => {
    expect(rgw.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(rgw.httpsEndpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(rgw.startMs).toBeLessThan(30_000);
    const cert = new X509Certificate(fs.readFileSync(rgw.caFile!));
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(cert.subjectAltName).toContain('DNS:127.0.0.1');
    expect(cert.subjectAltName).toContain('DNS:localhost');

    const pids = daemonPids(rgw.dir);
    expect(pids.length).toBeGreaterThanOrEqual(3); // mon, osd, radosgw (+ watchdog shell)
    const socks = listeningSockets(pids);
    const ports = socks.map((s) => s.port);
    expect(ports).toContain(Number(new URL(rgw.endpoint).port));
    expect(ports).toContain(Number(new URL(rgw.httpsEndpoint!).port));
    expect(socks.filter((s) => s.addr !== '127.0.0.1')).toEqual([]);
  });

  it('rejects https from a client that does not trust the CA', async () => {
    const c = client(rgw.httpsEndpoint!, { requestHandler: { httpsAgent: new https.Agent() }, maxAttempts: 1 });
    const err = await failure(c.send(new ListBucketsCommand({})));
    expect(err.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    c.destroy();
  });
});

describe.each(['http', 'https'] as const)('RGW S3 semantics over %s', (scheme) => {
  let s3: S3Client;
  let endpoint: string;
  const bucket = `walbridge-${scheme}-${randomBytes(4).toString('hex')}`;

  beforeAll(() => {
    endpoint = scheme === 'http' ? rgw.endpoint : rgw.httpsEndpoint!;
    s3 = client(endpoint);
  });
  afterAll(() => s3?.destroy());

  it('creates a bucket', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    const list = await s3.send(new ListBucketsCommand({}));
    expect(list.Buckets?.map((b) => b.Name)).toContain(bucket);
  });

  it('honours If-None-Match: * and Content-MD5; ETag is the hex MD5', async () => {
    const body = randomBytes(100_000);
    const put = await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: 'wal/000000010000000000000001',
        Body: body,
        IfNoneMatch: '*',
        ContentMD5: md5(body).toString('base64'),
      }),
    );
    expect(put.ETag).toBe(`"${md5(body).toString('hex')}"`);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'wal/000000010000000000000001' }));
    expect(head.ETag).toBe(put.ETag);
    expect(head.ContentLength).toBe(body.length);

    const again = await failure(
      s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: 'wal/000000010000000000000001',
          Body: body,
          IfNoneMatch: '*',
          ContentMD5: md5(body).toString('base64'),
        }),
      ),
    );
    expect(again.$metadata?.httpStatusCode).toBe(412);
    expect(again.name).toBe('PreconditionFailed');
    expect(again.Code).toBe('PreconditionFailed');
    expect(again.$fault).toBe('client');

    const bad = await failure(
      s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: 'wal/bad-digest',
          Body: body,
          ContentMD5: md5(Buffer.from('something else')).toString('base64'),
        }),
      ),
    );
    expect(bad.$metadata?.httpStatusCode).toBe(400);
    expect(bad.name).toBe('BadDigest');
    const gone = await failure(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'wal/bad-digest' })));
    expect(gone.$metadata?.httpStatusCode).toBe(404);
  });

  it('round-trips GetObject', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'rt', Body: body, ContentMD5: md5(body).toString('base64') }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'rt' }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    expect(bytes.equals(body)).toBe(true);
    expect(got.ETag).toBe(`"${md5(body).toString('hex')}"`);

    const missing = await failure(s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'no-such-key' })));
    expect(missing.$metadata?.httpStatusCode).toBe(404);
    expect(missing.name).toBe('NoSuchKey');
  });

  it('paginates ListObjectsV2 (MaxKeys, ContinuationToken, StartAfter) and deletes with DeleteObjects', async () => {
    const keys = ['p/a', 'p/b', 'p/c', 'p/d', 'p/e'];
    await Promise.all(keys.map((Key) => s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Key }))));

    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'p/', MaxKeys: 2, ContinuationToken: token }));
      pages++;
      expect(page.KeyCount).toBe(page.Contents?.length ?? 0);
      expect(page.KeyCount).toBeLessThanOrEqual(2);
      seen.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated) expect(token).toBeTruthy();
    } while (token);
    expect(seen).toEqual(keys);
    expect(pages).toBe(3);

    const after = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'p/', StartAfter: 'p/b', MaxKeys: 2 }));
    expect(after.Contents?.map((o) => o.Key)).toEqual(['p/c', 'p/d']);
    expect(after.IsTruncated).toBe(true);

    const del = await s3.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: [...keys, 'p/never-existed'].map((Key) => ({ Key })) },
      }),
    );
    expect(del.Errors ?? []).toEqual([]);
    expect((del.Deleted ?? []).map((d) => d.Key).sort()).toEqual([...keys, 'p/never-existed'].sort());
    const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'p/' }));
    expect(left.KeyCount).toBe(0);
  });

  it('reports a missing bucket as 404 (NotFound for HEAD, NoSuchBucket otherwise)', async () => {
    const nb = `walbridge-missing-${randomBytes(4).toString('hex')}`;
    const head = await failure(s3.send(new HeadBucketCommand({ Bucket: nb })));
    expect(head.$metadata?.httpStatusCode).toBe(404);
    expect(head.name).toBe('NotFound');

    const list = await failure(s3.send(new ListObjectsV2Command({ Bucket: nb })));
    expect(list.$metadata?.httpStatusCode).toBe(404);
    expect(list.name).toBe('NoSuchBucket');

    const get = await failure(s3.send(new GetObjectCommand({ Bucket: nb, Key: 'x' })));
    expect(get.name).toBe('NoSuchBucket');

    const put = await failure(s3.send(new PutObjectCommand({ Bucket: nb, Key: 'x', Body: 'x' })));
    expect(put.$metadata?.httpStatusCode).toBe(404);
    expect(put.name).toBe('NoSuchBucket');
  });

  it('SSE-KMS: the key id on PUT, HEAD and GET, the ETag still the MD5, Content-MD5 still checked', async () => {
    const [keyId] = rgw.kmsKeyIds;
    const body = randomBytes(10_000);
    const sse = { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId } as const;
    const put = await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'kms/a', Body: body, ContentMD5: md5(body).toString('base64'), IfNoneMatch: '*', ...sse }),
    );
    expect(put).toMatchObject(sse);
    expect(put.ETag).toBe(`"${md5(body).toString('hex')}"`);
    expect(await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'kms/a' }))).toMatchObject({ ...sse, ETag: put.ETag });
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'kms/a' }));
    expect(got).toMatchObject(sse);
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(body)).toBe(true);

    const bare = await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'kms/bare', Body: body, ServerSideEncryption: 'aws:kms', SSEKMSKeyId: rgw.kmsKeyIds[1] }),
    );
    expect(bare.SSEKMSKeyId).toBe(rgw.kmsKeyIds[1]);

    const damaged = await failure(
      s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'kms/damaged', Body: body, ContentMD5: md5(Buffer.from('x')).toString('base64'), ...sse })),
    );
    expect(damaged.name).toBe('BadDigest');
  });

  it('SSE-KMS: an unknown key id is 403 InvalidAccessKeyId and stores nothing; no key id is 400', async () => {
    const unknown = await failure(
      s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'kms/unknown', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'no-such-key' })),
    );
    expect(unknown.$metadata?.httpStatusCode).toBe(403);
    expect(unknown.name).toBe('InvalidAccessKeyId');
    expect(unknown.message).toBe('Failed to retrieve the actual key, kms-keyid: no-such-key');
    expect((await failure(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'kms/unknown' })))).$metadata?.httpStatusCode).toBe(404);
    const unknownParts = await failure(
      s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'kms/unknown', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'no-such-key' })),
    );
    expect(unknownParts.name).toBe('InvalidAccessKeyId');

    const noKey = await failure(s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'kms/no-key', Body: 'x', ServerSideEncryption: 'aws:kms' })));
    expect(noKey.$metadata?.httpStatusCode).toBe(400);
    expect(noKey.name).toBe('InvalidArgument');
  });

  it('SSE-KMS multipart: CreateMultipartUpload reports the key, CompleteMultipartUpload does not, HEAD does', async () => {
    const [keyId] = rgw.kmsKeyIds;
    const part = randomBytes(5 * 1024 * 1024);
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'kms/mp', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId }));
    expect(created).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId });
    const uploaded = await s3.send(
      new UploadPartCommand({ Bucket: bucket, Key: 'kms/mp', UploadId: created.UploadId, PartNumber: 1, Body: part, ContentMD5: md5(part).toString('base64') }),
    );
    expect(uploaded).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId });
    const completed = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: 'kms/mp',
        UploadId: created.UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: uploaded.ETag }] },
      }),
    );
    expect(completed.ServerSideEncryption).toBeUndefined();
    expect(await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'kms/mp' }))).toMatchObject({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: keyId });
  });

  it('accepts AES256 (SSE-S3) and stores the object without it, saying nothing', async () => {
    const put = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'sse-s3', Body: 'x', ServerSideEncryption: 'AES256' }));
    expect(put.ServerSideEncryption).toBeUndefined();
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'sse-s3' }))).ServerSideEncryption).toBeUndefined();
  });

  it('rejects a wrong secret key (SignatureDoesNotMatch) and an unknown access key (InvalidAccessKeyId) with 403', async () => {
    const wrongSecret = client(endpoint, {
      credentials: { accessKeyId: rgw.accessKey, secretAccessKey: `${rgw.secretKey}x` },
      maxAttempts: 1,
    });
    const e1 = await failure(wrongSecret.send(new ListObjectsV2Command({ Bucket: bucket })));
    expect(e1.$metadata?.httpStatusCode).toBe(403);
    expect(e1.name).toBe('SignatureDoesNotMatch');
    const e1put = await failure(wrongSecret.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'x' })));
    expect(e1put.$metadata?.httpStatusCode).toBe(403);
    expect(e1put.name).toBe('SignatureDoesNotMatch');
    wrongSecret.destroy();

    const wrongKey = client(endpoint, {
      credentials: { accessKeyId: 'NOSUCHACCESSKEY00000', secretAccessKey: rgw.secretKey },
      maxAttempts: 1,
    });
    const e2 = await failure(wrongKey.send(new ListObjectsV2Command({ Bucket: bucket })));
    expect(e2.$metadata?.httpStatusCode).toBe(403);
    expect(e2.name).toBe('InvalidAccessKeyId');
    wrongKey.destroy();
  });
});

describe('an extra gateway on the same cluster (startGateway)', () => {
  it('listens on loopback only, survives SIGKILL and SIGTERM with its objects, and stop() leaves nothing', async () => {
    const gw = await startGateway(rgw);
    const port = Number(new URL(gw.endpoint).port);
    expect(gw.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(gw.dir.startsWith(`${rgw.dir}/`)).toBe(true);
    const socks = listeningSockets(daemonPids(gw.dir));
    expect(socks.map((s) => s.port)).toContain(port);
    expect(socks.filter((s) => s.addr !== '127.0.0.1')).toEqual([]);

    // Written through the cluster's own gateway, read through the extra one: one store.
    const bucket = `walbridge-gw-${randomBytes(4).toString('hex')}`;
    const main = client(rgw.endpoint);
    await main.send(new CreateBucketCommand({ Bucket: bucket }));
    await main.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: 'before' }));
    const extra = client(gw.endpoint, { maxAttempts: 1 });
    const read = async () => (await extra.send(new GetObjectCommand({ Bucket: bucket, Key: 'k' }))).Body!.transformToString();
    expect(await read()).toBe('before');

    for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
      let t = Date.now();
      await gw.kill(signal);
      const down = Date.now() - t;
      expect(gw.running()).toBe(false);
      expect(await connectError(port)).toBe('ECONNREFUSED');
      expect((await failure(extra.send(new ListBucketsCommand({})))).code).toBe('ECONNREFUSED');
      // The cluster's own gateway is not disturbed.
      await main.send(new HeadBucketCommand({ Bucket: bucket }));
      t = Date.now();
      await gw.start();
      console.log(`extra gateway: ${signal} took ${down} ms, start() ${Date.now() - t} ms`);
      expect(gw.running()).toBe(true);
      expect(await read()).toBe('before');
    }
    extra.destroy();
    main.destroy();

    await gw.stop();
    await gw.stop(); // idempotent
    expect(fs.existsSync(gw.dir)).toBe(false);
    expect(daemonPids(gw.dir)).toEqual([]); // the radosgw and the watchdog shell
    expect(await connectError(port)).toBe('ECONNREFUSED');
    await expect(gw.start()).rejects.toThrow(/after stop/);
  });
});

describe('radosgw harness teardown', () => {
  it('runs the garbage collector', async () => {
    await rgw.gc();
  });

  it('stop() kills every daemon, closes every port, removes the directory; the SDK then sees ECONNREFUSED', async () => {
    const pids = daemonPids(rgw.dir);
    const ports = [...new Set(listeningSockets(pids).map((s) => s.port))];
    expect(ports.length).toBeGreaterThanOrEqual(4); // mon, osd (several), http, https
    const confFile = rgw.confFile;

    const t0 = Date.now();
    await Promise.all([rgw.stop(), rgw.stop()]);
    console.log(`radosgw stopped in ${Date.now() - t0} ms`);
    await rgw.stop(); // idempotent

    expect(fs.existsSync(rgw.dir)).toBe(false);
    expect(fs.existsSync(confFile)).toBe(false);
    for (const port of ports) expect(await connectError(port)).toBe('ECONNREFUSED');
    // Nothing left running that refers to the directory: daemons, watchdog shell.
    expect(daemonPids(rgw.dir)).toEqual([]);

    const s3 = client(rgw.endpoint, { maxAttempts: 1 });
    const err = await failure(s3.send(new ListBucketsCommand({})));
    expect(err.$metadata?.httpStatusCode).toBeUndefined();
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.name).toBe('Error');
    s3.destroy();
  });
});
