/**
 * How long a call waits for the background pusher's or fetcher's answer to a request that is one
 * operation (a push, a fetch without waiting): the background process runs it under its own
 * --timeout deadline and answers by then, so the call waits only a little longer. No answer by
 * then is the store failing to answer in time as far as the call can tell: exit 10, and the call
 * does not start the same work again by itself (it would take another --timeout).
 */
import { StoreError } from '../storage/store.js';

/** Beyond --timeout: the background process's aborted attempt unwinding, and the answer's way back. */
const ANSWER_MARGIN_MS = 2_000;

export function backgroundAnswerWaitMs(timeoutSeconds: number): number {
  return timeoutSeconds * 1000 + ANSWER_MARGIN_MS;
}

export function noBackgroundAnswer(role: 'pusher' | 'fetcher', what: string, timeoutSeconds: number): StoreError {
  return new StoreError('transient', `${what} did not complete within --timeout ${timeoutSeconds} s: the background ${role} did not answer in time`);
}
