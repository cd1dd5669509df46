/**
 * A call (archive_command, restore_command) and walbridge's background processes talk over a
 * Unix socket in the cluster's private runtime directory (local-layout.ts): the background
 * pusher and the background fetcher keep the SDK loaded and connections open, so a call they
 * serve pays neither the SDK's start-up nor a TLS handshake.
 *
 * The protocol: the call sends one request line (JSON), may send more lines (a failover
 * request), and receives its log lines as they happen, then one answer. The call repeats the
 * log lines as its own, so PostgreSQL's log reads as if the call had done the work. No pusher,
 * a pusher with other settings, a lost connection or no answer in time: `ask` returns
 * undefined and the call does the work itself. This module stays free of heavy imports: every
 * call loads it.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WalbridgeError, describeFailure, kindOfStatus } from '../../errors.js';
import type { Logger } from '../../log.js';
import { drivers } from '../../storage/drivers.js';
import { StoreError } from '../../storage/store.js';
import { receiveLines, sendLine } from '../../util/json-lines.js';
import { instanceLockHeld } from '../../util/single-instance.js';
import { verdictOn } from '../restore/hold.js';
import { instanceName, type BackgroundRole } from '../local-layout.js';

/** Whether a background process of `role` runs for this pg_wal. */
export async function backgroundRunning(walDir: string, role: BackgroundRole): Promise<boolean> {
  const name = instanceName(walDir, role);
  return name !== undefined && (await instanceLockHeld(name));
}

export interface LogLine {
  readonly level: 'info' | 'warn' | 'error';
  readonly message: string;
}

/** What a background process sends: log lines as they happen, then one answer. */
export type BackgroundMessage<A> = { readonly log: LogLine } | { readonly answer: A };

/**
 * A failure as a background process answers it. The call reports it as its own (or holds on
 * it, hold.ts): the background process says it only in its own log, so that a call that holds
 * and asks again does not repeat it in PostgreSQL's log at every attempt.
 */
export interface FailedAnswer {
  readonly status: 'failed';
  readonly exitCode: number;
  readonly message: string;
  readonly mendableOutside: boolean;
}

export function failedAnswer(err: unknown): FailedAnswer {
  const { status, message } = describeFailure(err);
  return { status: 'failed', exitCode: status, message, mendableOutside: verdictOn(err) === 'hold' };
}

/** The failure a FailedAnswer stands for, in the call. */
export function failureOf(answer: FailedAnswer): WalbridgeError {
  return new WalbridgeError(kindOfStatus(answer.exitCode), String(answer.message), { mendableOutside: answer.mendableOutside === true });
}

/** Beyond --timeout: the background process's aborted attempt unwinding, and the answer's way back. */
const ANSWER_MARGIN_MS = 2_000;

/**
 * How long a call waits for the answer to a request that is one operation (a push, a fetch
 * without waiting): the background process runs it under its own --timeout deadline and answers
 * by then. No answer by then is the store failing to answer in time as far as the call can tell
 * (noAnswer): the call does not start the same work again by itself, which would take another --timeout.
 */
export function answerWaitMs(timeoutSeconds: number): number {
  return timeoutSeconds * 1000 + ANSWER_MARGIN_MS;
}

export function noAnswer(role: BackgroundRole, what: string, timeoutSeconds: number): StoreError {
  return new StoreError('transient', `${what} did not complete within --timeout ${timeoutSeconds} s: the background ${role} did not answer in time`);
}

/** Every request names the configuration of the call; a background process serves only its own. */
export interface BackgroundRequest {
  readonly walbridge: 1;
  readonly fingerprint: string;
}

/**
 * What makes two processes reach the repository the same way: this build of walbridge (a
 * process started by an older build must not serve calls of a newer one), the resolved
 * settings, the environment the SDKs read credentials, endpoints, proxies and CAs from, and the
 * server the calls come from (a restarted server's calls are not served by the old server's
 * process). Hashed: the socket never carries a secret.
 */
/** What every driver's connections also depend on: Node's options, TLS, proxies, the home directory (SDK config files). */
const RUNTIME_ENVIRONMENT = /^(NODE_|SSL_|HTTPS?_PROXY$|NO_PROXY$|HOME$)/i;

export function fingerprint(settings: unknown, env: NodeJS.ProcessEnv, server: string | undefined): string {
  const relevant = Object.keys(env)
    .filter((k) => RUNTIME_ENVIRONMENT.test(k) || drivers().some((d) => d.environment.test(k)))
    .sort()
    .map((k) => [k, env[k]]);
  return createHash('sha256').update(JSON.stringify({ build: buildId(), settings, env: relevant, server })).digest('hex');
}

/** The running build: when this module's file was written (every build rewrites it). */
function buildId(): string {
  try {
    const file = fileURLToPath(import.meta.url);
    return `${file}@${statSync(file).mtimeMs}`;
  } catch {
    return 'unknown';
  }
}

export interface AskOptions {
  /** No answer by then: give up on the background process (the call does the work itself). */
  readonly timeoutMs?: number;
  /** Called once connected, with a way to send further lines (a failover request). */
  readonly connected?: (send: (value: unknown) => void) => void;
  /** Checked every 200 ms while waiting: false gives up (the call's own server is gone, say). */
  readonly keepWaiting?: () => boolean;
}

/** The background process's answer to `request`, its log lines written to `log` meanwhile; undefined if there is none. */
export function ask<A>(socketPath: string | undefined, request: BackgroundRequest & Record<string, unknown>, log: Logger, opts: AskOptions = {}): Promise<A | undefined> {
  return new Promise((resolve) => {
    if (socketPath === undefined) return resolve(undefined);
    const socket = connect(socketPath);
    let settled = false;
    const finish = (answer: A | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(watch);
      socket.destroy();
      resolve(answer);
    };
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => finish(undefined), opts.timeoutMs);
    const watch = opts.keepWaiting ? setInterval(() => opts.keepWaiting!() || finish(undefined), 200) : undefined;
    socket.once('error', () => finish(undefined)); // no process listening, or it went away
    socket.once('connect', () => {
      sendLine(socket, request);
      opts.connected?.((value) => {
        if (!settled) sendLine(socket, value);
      });
    });
    receiveLines(
      socket,
      (value) => {
        // Anything but a well-formed message ends the conversation: the call does its own work.
        if (typeof value !== 'object' || value === null) return finish(undefined);
        const message = value as Partial<{ log: LogLine; answer: A }>;
        const line = message.log;
        if (line && ['info', 'warn', 'error'].includes(line.level) && typeof line.message === 'string') log[line.level](line.message);
        else if ('answer' in message && typeof message.answer === 'object' && message.answer !== null) finish(message.answer);
        else finish(undefined);
      },
      () => finish(undefined),
    );
  });
}

/** Sends one line without waiting for any answer (a hint; nothing depends on it arriving). */
export function tell(socketPath: string | undefined, value: BackgroundRequest & Record<string, unknown>): Promise<void> {
  return new Promise((resolve) => {
    if (socketPath === undefined) return resolve();
    const socket = connect(socketPath);
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, 1_000);
    socket.once('error', done);
    // Done once the line is handed to the kernel: the receiver reads it even after we close.
    socket.once('connect', () => socket.end(`${JSON.stringify(value)}\n`, done));
  });
}
