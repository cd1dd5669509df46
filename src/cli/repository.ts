/** The store every command uses: the repo's driver, with retries of transient failures. */
import { formatRepo } from '../config/repo-url.js';
import type { Settings } from '../config/settings.js';
import type { Logger } from '../log.js';
import type { RetryPolicy } from '../storage/retry.js';
import type { Store } from '../storage/store.js';

export async function openRepository(settings: Settings, log: Logger): Promise<{ store: Store; retry: RetryPolicy }> {
  // Loaded here, not at start: calls answered from local state never open a store.
  const [{ openStore }, { retryPolicy, withRetries }] = await Promise.all([import('../storage/open.js'), import('../storage/retry.js')]);
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
