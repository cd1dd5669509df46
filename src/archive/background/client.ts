/**
 * A call (archive_command, restore_command) and walbridge's background processes talk over a
 * Unix socket in the cluster's private runtime directory (local-layout.ts): the background
 * pusher and the background fetcher keep the SDK loaded and connections open, so a call they
 * serve pays neither the SDK's start-up nor a TLS handshake.
 *
 * The protocol: the call sends one request line (JSON: its type, its configuration's
 * fingerprint, its arguments), may send more lines (a failover request), and receives its log
 * lines as they happen, then one answer. The call repeats the log lines as its own, so
 * PostgreSQL's log reads as if the call had done the work. The rule for what the call does with
 * the answer is askBackground's, for every role. This module stays free of heavy imports: every
 * call loads it.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ExitCode, WalbridgeError, describeFailure, kindOfStatus, mendableOutside } from '../../errors.js';
import type { Logger } from '../../log.js';
import { drivers } from '../../storage/registry.js';
import { StoreError } from '../../storage/store.js';
import { receiveLines, sendLine } from '../../util/json-lines.js';
import { instanceLockHeld } from '../../util/single-instance.js';
import { backgroundSocket, instanceName, type BackgroundRole } from '../local-layout.js';

/** Whether a background process of `role` runs for this pg_wal. */
export async function backgroundRunning(walDir: string, role: BackgroundRole): Promise<boolean> {
  const name = instanceName(walDir, role);
  return name !== undefined && (await instanceLockHeld(name));
}

/** Every request names its type and the configuration of the call; a background process serves only its own. */
export interface BackgroundRequest {
  readonly walbridge: 1;
  readonly type: string;
  readonly fingerprint: string;
  /** The WAL file the request is about, for log lines. */
  readonly name: string;
}

export interface LogLine {
  readonly level: 'info' | 'warn' | 'error';
  readonly message: string;
}

/** What a background process sends: log lines as they happen, then one answer. */
export type BackgroundMessage<A> = { readonly log: LogLine } | { readonly answer: A };

/**
 * A failure as a background process answers it. The call reports it as its own (or holds on
 * it, restore/hold.ts): the background process says it only in its own log, so that a call that
 * holds and asks again does not repeat it in PostgreSQL's log at every attempt.
 */
export interface FailedAnswer {
  readonly status: 'failed';
  readonly exitCode: number;
  readonly message: string;
  readonly mendableOutside: boolean;
}

/** The background process will not do this work (another configuration, stopping, not its kind of request): the call does it. */
export interface DeclinedAnswer {
  readonly status: 'declined';
  readonly reason: string;
}

/** Every answer: a role's own statuses, or one of these two. */
export type Answer<A> = A | FailedAnswer | DeclinedAnswer;

export function failedAnswer(err: unknown): FailedAnswer {
  const { status, message } = describeFailure(err);
  return { status: 'failed', exitCode: status, message, mendableOutside: mendableOutside(err) };
}

/** The failure a FailedAnswer stands for, in the call. */
function failureOf(answer: FailedAnswer): WalbridgeError {
  return new WalbridgeError(kindOfStatus(answer.exitCode), String(answer.message), { mendableOutside: answer.mendableOutside === true });
}

/** Beyond --timeout: the background process's aborted attempt unwinding, and the answer's way back. */
const ANSWER_MARGIN_MS = 2_000;

export interface AskBackgroundOptions {
  /**
   * The request is one operation (`what`: a push, a fetch without waiting), which the background
   * process runs within its own --timeout of `seconds`: the call waits that long and a margin. No
   * answer by then is the store failing to answer in time as far as the call can tell: the call
   * does not start the same work again by itself, which would take another --timeout.
   * Undefined: the request waits (a waiting fetch) as long as `keepWaiting` says.
   */
  readonly timeout?: { readonly seconds: number; readonly what: string };
  /** Called once connected, with a way to send further lines (a failover request). */
  readonly connected?: (send: (value: unknown) => void) => void;
  /** Checked every 200 ms while waiting: false gives up (the call's own server is gone, say). */
  readonly keepWaiting?: () => boolean;
}

/**
 * Asks the background `role` of `walDir` to do a call's work, with the one rule for its answer:
 * a failure is the call's own (thrown), except access refused, which may be the background
 * process's stale credentials (the call tries with its own); no answer within the time bound is
 * the store's failure to answer in time (thrown); no process, a lost connection, or a decline:
 * undefined, and the call does the work itself.
 */
export async function askBackground<A extends { readonly status: string }>(
  role: BackgroundRole,
  walDir: string,
  request: BackgroundRequest & Record<string, unknown>,
  log: Logger,
  opts: AskBackgroundOptions = {},
): Promise<A | undefined> {
  const waitMs = opts.timeout && opts.timeout.seconds * 1000 + ANSWER_MARGIN_MS;
  const asked = Date.now();
  const answer = await ask<Answer<A>>(backgroundSocket(walDir, role), request, log, { ...opts, timeoutMs: waitMs });
  if (answer === undefined) {
    if (opts.timeout && Date.now() - asked >= waitMs!) {
      throw new StoreError(
        'transient',
        `${opts.timeout.what} did not complete within --timeout ${opts.timeout.seconds} s: the background ${role} did not answer in time`,
      );
    }
    return undefined;
  }
  if (answer.status === 'failed') {
    const failed = answer as FailedAnswer;
    if (failed.exitCode !== ExitCode.storeAccess) throw failureOf(failed);
    return undefined;
  }
  if (answer.status === 'declined') {
    log.info(`the background ${role} declined (${String((answer as DeclinedAnswer).reason)}); doing the work directly`);
    return undefined;
  }
  return answer as A;
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
  // Part by part, so that a decline can say which differs (and a part is no clue to the others).
  return FINGERPRINT_PARTS.map((part) => {
    const value = { build: buildId(), settings, environment: relevant, server }[part];
    return createHash('sha256')
      .update(JSON.stringify({ [part]: value ?? null }))
      .digest('hex')
      .slice(0, 32);
  }).join('.');
}

const FINGERPRINT_PARTS = ['build', 'settings', 'environment', 'server'] as const;
const PART_NAMES = { build: 'build of walbridge', settings: 'settings', environment: 'environment', server: 'PostgreSQL server' } as const;

/** What makes two fingerprints differ, for a log line: "settings, environment and PostgreSQL server". */
export function fingerprintDifference(a: string, b: string): string {
  const [pa, pb] = [a.split('.'), b.split('.')];
  const differing = FINGERPRINT_PARTS.filter((_, i) => pa[i] !== pb[i]).map((part) => PART_NAMES[part]);
  if (differing.length === 0) return 'nothing';
  return differing.length === 1 ? differing[0]! : `${differing.slice(0, -1).join(', ')} and ${differing.at(-1)}`;
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

interface AskOptions {
  /** No answer by then: give up on the background process (the call does the work itself). */
  readonly timeoutMs?: number;
  /** Called once connected, with a way to send further lines (a failover request). */
  readonly connected?: (send: (value: unknown) => void) => void;
  /** Checked every 200 ms while waiting: false gives up (the call's own server is gone, say). */
  readonly keepWaiting?: () => boolean;
}

/** The background process's answer to `request`, its log lines written to `log` meanwhile; undefined if there is none. */
function ask<A>(
  socketPath: string | undefined,
  request: BackgroundRequest & Record<string, unknown>,
  log: Logger,
  opts: AskOptions = {},
): Promise<A | undefined> {
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
