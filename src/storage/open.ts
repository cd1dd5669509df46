/**
 * Opens the driver for a repository URL. Each SDK is imported only when its scheme is used:
 * every WAL file pays Node's start-up, and loading an SDK that is not needed costs tens of ms.
 */
import { formatRepo, type RepoLocation } from '../config/repo-url.js';
import type { Settings } from '../config/settings.js';
import type { Logger } from '../log.js';
import type { RetryPolicy } from './retry.js';
import type { Store } from './store.js';

/** The store every command uses: the repository's driver, with retries of transient failures. */
export async function openRepository(settings: Settings, log: Logger): Promise<{ store: Store; retry: RetryPolicy }> {
  const { retryPolicy, withRetries } = await import('./retry.js');
  // One line when an operation first fails; the final outcome is logged by the command.
  const retry = retryPolicy(settings.timeout, (what, err, attempt) => {
    if (attempt === 1) log.warn(`${what} failed (${err.message}); retrying for up to ${settings.timeout} s`);
  });
  return { store: withRetries(await openStore(settings.repo, settings), retry), retry };
}

/**
 * Names the repository without opening it (no SDK loaded): local caches (lookahead markers,
 * the prefetch spool) are valid only for the repository and endpoint that filled them.
 */
export function repositoryId(settings: Settings): string {
  const endpoint = settings.repo.scheme === 's3' ? settings.s3Endpoint : settings.repo.scheme === 'gs' ? settings.gcsEndpoint : undefined;
  return formatRepo(settings.repo) + (endpoint ? ` at ${endpoint}` : '');
}

/** Per-request idle bound: 30 s, or less when the whole operation may take less (--timeout). */
const IDLE_TIMEOUT_MS = 30_000;

async function openStore(
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
