/** Maps whatever ended a command to its exit status, logging the one line that says what to fix. */
import { describeFailure, type ExitStatus } from '../errors.js';
import type { Logger } from '../log.js';

export function reportFailure(err: unknown, log: Logger): ExitStatus {
  const { status, message } = describeFailure(err);
  log.error(message);
  return status;
}
