/**
 * Starts the real servers once per test run, on 127.0.0.1 only, and tells the test files
 * where they are: Ceph radosgw (S3) and the project's GCS JSON-API test server.
 */
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
  }
}

const GCS_KMS_KEY = 'projects/walbridge-test/locations/us/keyRings/walbridge/cryptoKeys/wal';

interface Servers {
  rgw: Awaited<ReturnType<typeof startRadosgw>>;
  gcs: Awaited<ReturnType<typeof startGcsServer>>;
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
    started: Promise.all([startRadosgw({ tls: true }), startGcsServer({ kmsKeys: [GCS_KMS_KEY] })]).then(([rgw, gcs]) => ({ rgw, gcs })),
    users: 0,
  };
  const servers = shared.walbridgeTestServers;
  servers.users++;
  const { rgw, gcs } = await servers.started;
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
  return async () => {
    if (--servers.users > 0) return;
    delete shared.walbridgeTestServers;
    await Promise.all([rgw.stop(), gcs.close()]);
  };
}
