/** The listening side of background-link.ts, shared by the background pusher and fetcher. */
import { unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { WalbridgeError } from '../errors.js';
import type { Logger } from '../log.js';
import { StoreError } from '../storage/store.js';
import { receiveLines, sendLine } from '../util/json-lines.js';
import type { BackgroundMessage, BackgroundRequest, LogLine } from './background-link.js';

/** One call being served. */
export interface Call {
  readonly request: BackgroundRequest & Record<string, unknown>;
  /** Writes to the background process's own log and, as they happen, to the call. */
  readonly log: Logger;
  /** False once the call has gone (PostgreSQL ended it, or it gave up waiting). */
  readonly connected: boolean;
  /** Further lines the call sends after its request. */
  onMessage(handler: (value: unknown) => void): void;
  answer(value: unknown): void;
}

/** The calls being served, for log lines that concern all of them (a store being retried). */
const connectedCalls = new Set<(line: LogLine) => void>();

/**
 * A logger that also tells every call being served: the store's retry warnings come from the
 * process's shared store, and would otherwise reach only its own log file, not PostgreSQL's log.
 */
export function tellingConnectedCalls(base: Logger): Logger {
  const both = (level: LogLine['level']) => (message: string) => {
    base[level](message);
    for (const tell of connectedCalls) tell({ level, message });
  };
  return { info: both('info'), warn: both('warn'), error: both('error') };
}

/**
 * Serves calls on `socketPath` until stopped. A process that cannot listen (a path too long for
 * a Unix socket, say) returns undefined: calls then do their own work, which only costs speed.
 */
export async function listenForCalls(socketPath: string, base: Logger, handle: (call: Call) => Promise<void>): Promise<Server | undefined> {
  await unlink(socketPath).catch(() => undefined); // a dead process's: the caller holds the pid lock
  const server = createServer((socket) => {
    let call: Call | undefined;
    let connected = true;
    const handlers: Array<(value: unknown) => void> = [];
    const send = (message: BackgroundMessage<unknown>) => {
      if (connected) sendLine(socket, message);
    };
    const tell = (line: LogLine) => send({ log: line });
    const forward = (level: LogLine['level']) => (message: string) => {
      base[level](message);
      send({ log: { level, message } });
    };
    receiveLines(
      socket,
      (value) => {
        if (call) return handlers.forEach((h) => h(value));
        const request = value as Call['request'];
        if (request?.walbridge !== 1 || typeof request.fingerprint !== 'string') return socket.destroy();
        connectedCalls.add(tell);
        call = {
          request,
          log: { info: forward('info'), warn: forward('warn'), error: forward('error') },
          get connected() {
            return connected;
          },
          onMessage: (h) => void handlers.push(h),
          answer: (answer) => {
            connectedCalls.delete(tell);
            send({ answer });
            socket.end();
          },
        };
        handle(call).catch((err: unknown) => {
          base.error(`internal error serving a call: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
          socket.destroy();
        });
      },
      () => {
        connected = false;
        connectedCalls.delete(tell);
      },
    );
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    return server;
  } catch (err) {
    base.warn(`cannot listen on ${socketPath} (calls do their own work): ${(err as Error).message}`);
    return undefined;
  }
}

/** Stops taking calls (a call arriving now does its own work); calls being served still get their answers. */
export async function stopListening(server: Server | undefined, socketPath: string): Promise<void> {
  await unlink(socketPath).catch(() => undefined);
  if (server) await new Promise((resolve) => server.close(resolve));
}

/** Failures that are the archive's answer (a store error, a refused file), as opposed to trouble of this process. */
export function reportable(err: unknown): boolean {
  return (err instanceof WalbridgeError && err.kind !== 'internal') || err instanceof StoreError;
}
