/** TLS to the S3 server: radosgw's TLS endpoint with a self-signed CA, trusted only when named. */
import { readFile } from 'node:fs/promises';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { createRepo, type TestRepo } from '../support/repos.js';
import { scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
let repo: TestRepo;
let work: string;
beforeAll(async () => {
  wal = await generateWalSegments(2);
  repo = await createRepo('s3');
  work = await scratchDir('wb-tls-');
}, 180_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('S3 over TLS', () => {
  const s3 = inject('s3');
  const env = (namespace: string, extra: Record<string, string> = {}) => ({
    ...repo.env,
    WALBRIDGE_REPO: repo.url,
    WALBRIDGE_NAMESPACE: namespace,
    AWS_ENDPOINT_URL_S3: s3.httpsEndpoint,
    WALBRIDGE_TIMEOUT: '20',
    ...extra,
  });

  it('pushes and fetches over https when the CA is named in NODE_EXTRA_CA_CERTS', async () => {
    const trusted = env('tls-ok', { NODE_EXTRA_CA_CERTS: s3.caFile });
    const pushed = await runCli('archive-push', [wal.segments[0]!], trusted);
    expect(pushed.status, pushed.stderr).toBe(0);
    const dest = path.join(work, 'ok');
    expect((await runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[0]!), dest], trusted)).status).toBe(0);
    expect((await readFile(dest)).equals(await readFile(wal.segments[0]!))).toBe(true);
  });

  it('refuses a server whose certificate it cannot verify at once (exit 13, no retries), storing and writing nothing', async () => {
    const started = Date.now();
    const pushed = await runCli('archive-push', [wal.segments[1]!], env('tls-untrusted'));
    expect(pushed.status).toBe(ExitCode.storeError);
    expect(pushed.stderr).toMatch(
      /TLS certificate is not trusted \((SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\): give its CA certificate in NODE_EXTRA_CA_CERTS/,
    );
    expect(pushed.stderr.trim().split('\n')).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(10_000); // not retried for the 20 s --timeout
    expect(await repo.store().head(`tls-untrusted/wal/${path.basename(wal.segments[1]!)}`)).toBeUndefined();
    const dest = path.join(work, 'untrusted');
    expect((await runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[0]!), dest], env('tls-ok'))).status).toBe(ExitCode.storeError);
    await expect(readFile(dest)).rejects.toThrow(/ENOENT/);
  });

  it('refuses to run with NODE_TLS_REJECT_UNAUTHORIZED=0, the one switch that turns checks off', async () => {
    const r = await runCli('archive-push', [wal.segments[1]!], env('tls-off', { NODE_TLS_REJECT_UNAUTHORIZED: '0' }));
    expect(r.status).toBe(ExitCode.config);
    expect(r.stderr).toMatch(/refusing to run with NODE_TLS_REJECT_UNAUTHORIZED=0/);
    expect(await repo.store().head(`tls-off/wal/${path.basename(wal.segments[1]!)}`)).toBeUndefined();
  });
});
