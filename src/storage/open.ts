/**
 * Opens the driver for a repository URL. Each SDK is imported only when its scheme is used:
 * every WAL file pays Node's start-up, and loading an SDK that is not needed costs tens of ms.
 */
import type { RepoLocation } from '../config/repo-url.js';
import type { Settings } from '../config/settings.js';
import type { Store } from './store.js';

/** Per-request idle bound: 30 s, or less when the whole operation may take less (--timeout). */
const IDLE_TIMEOUT_MS = 30_000;

export async function openStore(
  repo: RepoLocation,
  settings: Pick<Settings, 's3PathStyle' | 's3Checksum' | 's3Endpoint' | 's3Region' | 'gcsEndpoint' | 'timeout' | 's3Sse' | 's3SseKmsKeyId' | 'gcsKmsKeyName'>,
): Promise<Store> {
  // A black-holed connection must fail within the operation's time bound, not after 30 s.
  const idleTimeoutMs = Math.min(IDLE_TIMEOUT_MS, settings.timeout * 1000);
  switch (repo.scheme) {
    case 'file': {
      const { FsStore } = await import('./fs.js');
      return new FsStore(repo.directory);
    }
    case 's3': {
      const { S3Store } = await import('./s3.js');
      return new S3Store({
        bucket: repo.bucket,
        prefix: repo.prefix,
        region: settings.s3Region,
        endpoint: settings.s3Endpoint,
        pathStyle: settings.s3PathStyle,
        checksum: settings.s3Checksum,
        idleTimeoutMs,
        serverSideEncryption: settings.s3Sse && { algorithm: settings.s3Sse, kmsKeyId: settings.s3SseKmsKeyId },
      });
    }
    case 'gs': {
      const { GcsStore } = await import('./gcs.js');
      return new GcsStore({ bucket: repo.bucket, prefix: repo.prefix, endpoint: settings.gcsEndpoint, idleTimeoutMs, kmsKeyName: settings.gcsKmsKeyName });
    }
  }
}
