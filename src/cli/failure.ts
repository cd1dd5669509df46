/** Maps whatever ended a command to its exit status and one line that says what to fix. */
import { ExitCode, WalbridgeError, type ExitStatus } from '../errors.js';
import type { Logger } from '../log.js';
import { StoreError } from '../storage/store.js';

export function reportFailure(err: unknown, log: Logger): ExitStatus {
  if (err instanceof WalbridgeError) {
    log.error(err.message);
    return err.exitCode;
  }
  if (err instanceof StoreError) {
    switch (err.kind) {
      case 'transient':
        log.error(`store unreachable or failing: ${err.message} (check the endpoint and the network; --timeout bounds each operation)`);
        return ExitCode.storeUnavailable;
      case 'denied':
        log.error(`access denied: ${err.message} (check the credentials and the bucket's permissions for this namespace)`);
        return ExitCode.storeAccess;
      case 'no-bucket':
        log.error(`${err.message}: create it (see terraform/) or fix --repo / WALBRIDGE_REPO`);
        return ExitCode.storeMissing;
      case 'not-found':
      case 'permanent':
        log.error(`store error: ${err.message}`);
        return ExitCode.storeError;
    }
  }
  log.error(`internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return ExitCode.internal;
}
