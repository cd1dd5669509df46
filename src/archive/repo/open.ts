/**
 * Opens the repository a command's settings name: its driver (storage/registry.ts), behind the
 * one retry layer that keeps every operation within --timeout (storage/retry.ts). A driver's
 * SDK is imported only when its scheme is used: every WAL file pays Node's start-up, and loading
 * an SDK that is not needed costs tens of ms.
 */
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import { driverFor, formatRepo } from '../../storage/registry.js';
import type { RetryPolicy } from '../../storage/retry.js';
import type { Store } from '../../storage/store.js';

/** Per-request idle bound: 30 s, or less when the whole operation may take less (--timeout). */
const IDLE_TIMEOUT_MS = 30_000;

/** The store every command uses: the repository's driver, with retries of transient failures. */
export async function openRepository(settings: Settings, log: Logger): Promise<{ store: Store; retry: RetryPolicy }> {
  const { retryPolicy, withRetries } = await import('../../storage/retry.js');
  // One line when an operation first fails; the final outcome is logged by the command.
  const retry = retryPolicy(settings.timeout, (what, err, attempt) => {
    if (attempt === 1) log.warn(`${what} failed (${err.message}); retrying for up to ${settings.timeout} s`);
  });
  // A black-holed connection must fail within the operation's time bound, not after 30 s.
  const idleTimeoutMs = Math.min(IDLE_TIMEOUT_MS, settings.timeout * 1000);
  const store = await driverFor(settings.repo.scheme)!.open(settings.repo, settings.storage, { idleTimeoutMs });
  return { store: withRetries(store, retry), retry };
}

/**
 * Names the repository without opening it (no SDK loaded): local caches (pusher markers, the
 * prefetch spool) are valid only for the repository and endpoint that filled them.
 */
export function repositoryId(settings: Settings): string {
  const endpoint = driverFor(settings.repo.scheme)!.endpoint(settings.storage);
  return formatRepo(settings.repo) + (endpoint ? ` at ${endpoint}` : '');
}
