/**
 * A call (archive_command, restore_command) and walbridge's background processes talk over a
 * Unix socket in `pg_wal/walbridge/` (a 0700 directory of the cluster's user): the background
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
import { connect } from 'node:net';
import path from 'node:path';
import type { Logger } from '../log.js';
import { receiveLines, sendLine } from '../util/json-lines.js';
import { walbridgeDir } from './markers.js';

export type BackgroundRole = 'pusher' | 'fetcher';

export function backgroundSocket(walDir: string, role: BackgroundRole): string {
  return path.join(walbridgeDir(walDir), `${role}.sock`);
}

export function backgroundLock(walDir: string, role: BackgroundRole): string {
  return path.join(walbridgeDir(walDir), `${role}.pid`);
}

export interface LogLine {
  readonly level: 'info' | 'warn' | 'error';
  readonly message: string;
}

/** What a background process sends: log lines as they happen, then one answer. */
export type BackgroundMessage<A> = { readonly log: LogLine } | { readonly answer: A };

/** Every request names the configuration of the call; a background process serves only its own. */
export interface BackgroundRequest {
  readonly walbridge: 1;
  readonly fingerprint: string;
}

/**
 * What makes two processes reach the repository the same way: the resolved settings, and the
 * environment the SDKs read credentials, endpoints and CAs from. Compared as is, never logged.
 */
export function fingerprint(settings: unknown, env: NodeJS.ProcessEnv): string {
  const relevant = Object.keys(env)
    .filter((k) => /^(AWS_|GOOGLE_|GCLOUD_|CLOUDSDK_)/.test(k) || ['STORAGE_EMULATOR_HOST', 'NODE_EXTRA_CA_CERTS', 'HOME', 'SSL_CERT_FILE', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'].includes(k))
    .sort()
    .map((k) => [k, env[k]]);
  return JSON.stringify({ settings, env: relevant });
}

export interface AskOptions {
  /** No answer by then: give up on the background process (the call does the work itself). */
  readonly timeoutMs?: number;
  /** Called once connected, with a way to send further lines (a failover request). */
  readonly connected?: (send: (value: unknown) => void) => void;
}

/** The background process's answer to `request`, its log lines written to `log` meanwhile; undefined if there is none. */
export function ask<A>(socketPath: string, request: BackgroundRequest & Record<string, unknown>, log: Logger, opts: AskOptions = {}): Promise<A | undefined> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let settled = false;
    const finish = (answer: A | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => finish(undefined), opts.timeoutMs);
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
        const message = value as BackgroundMessage<A>;
        if ('log' in message) log[message.log.level](message.log.message);
        else if ('answer' in message) finish(message.answer);
      },
      () => finish(undefined),
    );
  });
}

/** Sends one line without waiting for any answer (a hint; nothing depends on it arriving). */
export function tell(socketPath: string, value: BackgroundRequest & Record<string, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    const timer = setTimeout(() => socket.destroy(), 1_000);
    socket.once('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('connect', () => socket.end(`${JSON.stringify(value)}\n`));
  });
}
