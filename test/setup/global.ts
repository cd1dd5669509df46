/**
 * Starts the real servers once per test run, on 127.0.0.1 only, and tells the test files
 * where they are: Ceph radosgw (S3) and the project's GCS JSON-API test server.
 */
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startGcsServer } from '../servers/gcs/server.js';
import { startRadosgw } from '../servers/radosgw.js';

export interface S3Endpoint {
  endpoint: string;
  /** The same server over TLS, with a self-signed certificate (caFile). */
  httpsEndpoint: string;
  caFile: string;
  accessKey: string;
  secretKey: string;
  region: string;
  /** ceph.conf of the cluster behind it: startGateway() runs one more gateway on that cluster,
   *  for a test that stops and restarts its S3 server without disturbing the others. */
  confFile: string;
  /** The cluster's directory; extra gateways keep their files under it. */
  dir: string;
  /** SSE-KMS key ids radosgw knows. */
  kmsKeyIds: readonly string[];
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3Endpoint;
    gcsUrl: string;
    /** The one Cloud KMS key the GCS test server knows (CMEK). */
    gcsKmsKey: string;
    /** This run's directory for temporary files (test/support/scratch.ts). */
    scratch: string;
  }
}

const GCS_KMS_KEY = 'projects/walbridge-test/locations/us/keyRings/walbridge/cryptoKeys/wal';

interface Servers {
  rgw: Awaited<ReturnType<typeof startRadosgw>>;
  gcs: Awaited<ReturnType<typeof startGcsServer>>;
  scratch: string;
}

const SCRATCH_PREFIX = 'walbridge-test-run-';

function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The run's scratch directory, readable by PostgreSQL's user (it holds file:// repositories).
 * Those of earlier runs that were killed before their teardown (their pid is gone) go first.
 */
async function makeScratch(): Promise<string> {
  for (const name of await readdir(tmpdir())) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const dir = path.join(tmpdir(), name);
    const pid = Number(await readFile(path.join(dir, 'pid'), 'utf8').catch(() => '0'));
    if (pid > 0 && processRunning(pid)) continue;
    // No pid yet: another run made it a moment ago.
    if (
      pid === 0 &&
      Date.now() -
        (await stat(dir).then(
          (s) => s.mtimeMs,
          () => 0,
        )) <
        600_000
    )
      continue;
    await rm(dir, { recursive: true, force: true });
  }
  const dir = await mkdtemp(path.join(tmpdir(), SCRATCH_PREFIX));
  await chmod(dir, 0o755);
  await writeFile(path.join(dir, 'pid'), String(process.pid));
  return dir;
}

/**
 * One set of servers for the whole run: vitest calls this once per project (vitest.config.ts
 * splits the files into projects), in the same process, and the last teardown stops them.
 */
const shared = globalThis as { walbridgeTestServers?: { started: Promise<Servers>; users: number } };

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // The S3 SDK's multi-line Node 20 notice (the radosgw harness uses the SDK here too).
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  shared.walbridgeTestServers ??= {
    started: Promise.all([startRadosgw({ tls: true }), startGcsServer({ kmsKeys: [GCS_KMS_KEY] }), makeScratch()]).then(([rgw, gcs, scratch]) => ({
      rgw,
      gcs,
      scratch,
    })),
    users: 0,
  };
  const servers = shared.walbridgeTestServers;
  servers.users++;
  const { rgw, gcs, scratch } = await servers.started;
  project.provide('s3', {
    endpoint: rgw.endpoint,
    httpsEndpoint: rgw.httpsEndpoint!,
    caFile: rgw.caFile!,
    accessKey: rgw.accessKey,
    secretKey: rgw.secretKey,
    region: rgw.region,
    confFile: rgw.confFile,
    dir: rgw.dir,
    kmsKeyIds: rgw.kmsKeyIds,
  });
  project.provide('gcsUrl', gcs.url);
  project.provide('gcsKmsKey', GCS_KMS_KEY);
  project.provide('scratch', scratch);
  return async () => {
    if (--servers.users > 0) return;
    delete shared.walbridgeTestServers;
    await Promise.all([rgw.stop(), gcs.close()]);
    // A background process that outlives its test may still write there: retried, and never a failure of the run.
    await rm(scratch, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }).catch((err: unknown) => {
      console.warn(`test scratch directory ${scratch} not removed: ${(err as Error).message}`);
    });
  };
}
