/**
 * The listening side of client.ts, and the life of a background process: one server loop for
 * every role (runBackground), which serves each request with the role's handler for its type,
 * declines requests of another configuration, and answers failures the same way for all. The
 * roles (push/pusher.ts, restore/fetcher.ts) differ only in their handlers and their own work.
 *
 * A background process lives only as long as what it serves: it stops within a second or two
 * when its server (the postmaster that ran the call which started it) is gone, when
 * `pg_wal/walbridge/` or its socket is removed or replaced, when its role says so (the
 * fetcher: recovery ended), or after --background-idle without work. It runs from `/`, never
 * creates a directory that is gone (the call creates `pg_wal/walbridge/`), and at most one per
 * role runs for a pg_wal (util/single-instance.ts).
 */
import { readFile, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { WalbridgeError, ExitCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import { StoreError } from '../../storage/store.js';
import { receiveLines, sendLine } from '../../util/json-lines.js';
import { trimStderrLog } from '../../util/log-file.js';
import { ensureRuntimeDir, clusterRuntime, socketIn } from '../../util/runtime-dir.js';
import { takeInstanceLock } from '../../util/single-instance.js';
import { processRunning, type ServerProcess } from '../../wal/server.js';
import {
  failedAnswer,
  fingerprintDifference,
  type BackgroundMessage,
  type BackgroundRequest,
  type DeclinedAnswer,
  type FailedAnswer,
  type LogLine,
} from './client.js';
import { pidFile, walbridgeDir, type BackgroundRole } from '../local-layout.js';

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
 * `makeDir` (re)makes the socket's directory: the other role's process removes it when it stops
 * and finds it empty, possibly between our making it and binding there.
 */
async function listenForCalls(
  socketPath: string,
  base: Logger,
  handle: (call: Call) => Promise<void>,
  makeDir: () => Promise<void> = async () => undefined,
): Promise<Server | undefined> {
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
        if (request?.walbridge !== 1 || typeof request.fingerprint !== 'string' || typeof request.type !== 'string') return socket.destroy();
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
  for (let attempt = 1; ; attempt++) {
    await makeDir(); // a directory that is not private stops the process (runBackground)
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      return server;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 3) continue; // its directory was removed meanwhile
      base.warn(`cannot listen on ${socketPath} (calls do their own work): ${(err as Error).message}`);
      return undefined;
    }
  }
}

/** Stops taking calls (a call arriving now does its own work); calls being served still get their answers. */
async function stopListening(server: Server | undefined, socketPath: string, socketIno: number | undefined): Promise<void> {
  // Only our own socket: a successor may listen at that path already.
  if (
    socketIno !== undefined &&
    (await stat(socketPath).then(
      (s) => s.ino,
      () => undefined,
    )) === socketIno
  )
    await unlink(socketPath).catch(() => undefined);
  if (server) await new Promise((resolve) => server.close(resolve));
}

/** Failures that are the archive's answer (a store error, a refused file), as opposed to trouble of this process. */
function reportable(err: unknown): boolean {
  return (err instanceof WalbridgeError && err.kind !== 'internal') || err instanceof StoreError;
}

/** Thrown by a handler for a request this process cannot serve (the spool cannot take it, say): the call does its own work. */
export class Declined extends Error {}

/** How often the role's work runs, and how often the process checks that it should live on. */
const TICK_MS = 100;
const LIFE_CHECK_MS = 1_000;

export interface BackgroundOptions {
  readonly walDir: string;
  /** The postmaster whose call started the process; undefined outside a running server (a copied pg_wal, tests). */
  readonly server: ServerProcess | undefined;
  readonly idleMs: number;
  readonly log: Logger;
  /** fingerprint() of the process's own configuration: a request of another configuration is declined, and the process retires. */
  readonly fingerprint: string;
}

/** The store failures a fresh process may not meet: credentials, a region or an endpoint mended outside. */
const STORE_FAILURES: ReadonlySet<number> = new Set([ExitCode.storeUnavailable, ExitCode.storeAccess, ExitCode.storeMissing, ExitCode.storeError]);

/** What a role does; the life around it, the protocol and the failures are runBackground's. */
export interface Role {
  readonly name: BackgroundRole;
  /** Serves one request of its type, and returns the answer (a role's own status). */
  readonly handlers: Readonly<Record<string, (call: Call) => Promise<{ readonly status: string }>>>;
  /**
   * Whether a failure ends this process: its clients, caches and settings date from its start,
   * and the call's next try must not meet them again. Absent: every failure answered to a call
   * (none met after the call had gone); present, it is asked about those too.
   */
  retireAfter?(answer: FailedAnswer): boolean;
  /** The role's own work, every TICK_MS (the pusher's scan of .ready files); `retiring`: take no new work. */
  tick?(retiring: boolean): Promise<void>;
  /** Work in flight: it keeps the process from counting as idle. */
  busy(): boolean;
  /** Settles when work in flight finishes: the next tick comes then rather than after TICK_MS. */
  settled?(): Promise<unknown>;
  /** A reason of the role's own to stop now (the fetcher: recovery ended), checked every LIFE_CHECK_MS. */
  mustStop?(): Promise<string | undefined>;
  /** Last: wait for the work in flight, or abandon it (its server is gone: nobody needs it). */
  finish(abandon: boolean): Promise<void>;
}

/** A failure retires the process only when a fresh one could fare better. */
export const retireOnStoreFailures = (answer: FailedAnswer): boolean => STORE_FAILURES.has(answer.exitCode);

/** Runs a background process until it has no reason to live on. */
export async function runBackground(opts: BackgroundOptions, role: Role): Promise<void> {
  const { walDir, server, log } = opts;
  const runtime = clusterRuntime(walDir);
  const socketPath = runtime && socketIn(runtime, `${role.name}.sock`);
  const home = await stat(walbridgeDir(walDir)).catch(() => undefined);
  if (!runtime || !socketPath || !home) return; // nothing to serve (pg_wal/walbridge/ is gone already)
  const lock = await takeInstanceLock(`${runtime.id}-${role.name}`);
  if (!lock) return; // another one serves this pg_wal
  const pid = pidFile(walDir, role.name);
  let listening: Server | undefined;
  let socketIno: number | undefined;
  let abandon = false;
  let calls = 0;
  let retiring = false;
  let lastWork = Date.now();

  const declined = (reason: string): DeclinedAnswer => ({ status: 'declined', reason });
  const serve = async (call: Call): Promise<{ readonly status: string }> => {
    const { request } = call;
    if (retiring) return declined(`the background ${role.name} is stopping`);
    if (request.fingerprint !== opts.fingerprint) {
      retiring = true; // configured otherwise (or another server) since this process started: let a new one take over
      return declined(
        `the background ${role.name} was started with another ${fingerprintDifference(opts.fingerprint, request.fingerprint)}; it stops after its current work`,
      );
    }
    const handler = Object.hasOwn(role.handlers, request.type) ? role.handlers[request.type] : undefined;
    if (!handler) return declined(`the background ${role.name} does not serve ${JSON.stringify(request.type)} requests`);
    try {
      return await handler(call);
    } catch (err) {
      const what = String(request.name);
      if (!call.connected) {
        // A failure met after the call gave up (PostgreSQL ended it, or it stopped waiting) is no
        // answer to anyone. A role that retires on it whatever the call does (the pusher, on a
        // store failure) still does: its clients date from its start.
        const answer = reportable(err) ? failedAnswer(err) : undefined;
        if (answer && role.retireAfter?.(answer) && !retiring) {
          retiring = true;
          log.error(`${what}: ${answer.message} (its call had gone); stopping, so that the next try starts afresh`);
        } else log.info(`stopped serving ${what}: ${(err as Error).message}`);
        return declined('the call has gone');
      }
      if (err instanceof Declined) {
        log.info(`declined ${what}: ${err.message}`);
        return declined(err.message);
      }
      if (!reportable(err)) {
        // Not the archive's answer but this process's trouble (the spool, a bug): the call does its own work.
        log.error(`cannot serve ${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        return declined(`the background ${role.name} failed`);
      }
      const answer = failedAnswer(err);
      const retire = role.retireAfter?.(answer) ?? true;
      log.error(`${what}: ${answer.message}${retire ? '; stopping, so that the next try starts afresh' : ''}`);
      if (retire) retiring = true;
      return answer;
    }
  };

  try {
    await writeFile(pid, `${process.pid}\n`);
    listening = await listenForCalls(
      socketPath,
      log,
      async (call) => {
        calls++;
        try {
          call.answer(await serve(call));
        } finally {
          calls--;
          lastWork = Date.now();
        }
      },
      () => ensureRuntimeDir(runtime),
    );
    socketIno = listening ? (await stat(socketPath)).ino : undefined;
    let lastCheck = Date.now();
    for (let tick = 0; ; tick++) {
      if (Date.now() - lastCheck >= LIFE_CHECK_MS) {
        lastCheck = Date.now();
        const serverGone = server !== undefined && !processRunning(server);
        const reason = serverGone
          ? `its server (postmaster pid ${server.pid}) is gone`
          : ((await moved(walDir, home.ino, socketPath, socketIno)) ?? (await role.mustStop?.()));
        if (reason) {
          log.info(`stopping: ${reason}`);
          abandon = serverGone;
          return;
        }
      }
      if (tick % 300 === 0) trimStderrLog();
      await role.tick?.(retiring);
      if (calls > 0 || role.busy()) lastWork = Date.now();
      else if (retiring || Date.now() - lastWork > opts.idleMs) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, TICK_MS))), ...(role.settled ? [role.settled()] : [])]);
      clearTimeout(timer);
    }
  } catch (err) {
    log.error(`stopping: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await stopListening(listening, socketPath, socketIno);
    // The cluster's runtime directory goes with its last socket (it stays while the other role's
    // process listens there), or every cluster and test data directory ever served would leave one
    // in /tmp/walbridge-<uid>/. A process about to listen there makes it again (listenForCalls).
    await rmdir(runtime.dir).catch(() => undefined);
    await role.finish(abandon);
    if ((await readFile(pid, 'utf8').catch(() => '')).trim() === String(process.pid)) await unlink(pid).catch(() => undefined);
    await lock.release();
  }
}

/** Why the process's place is gone: pg_wal/walbridge/ removed or replaced, or its socket removed (a /tmp cleaner, say). */
async function moved(walDir: string, homeIno: number, socketPath: string, socketIno: number | undefined): Promise<string | undefined> {
  const home = await stat(walbridgeDir(walDir)).catch(() => undefined);
  if (home?.ino !== homeIno) return `${walbridgeDir(walDir)} was removed`;
  if (
    socketIno !== undefined &&
    (await stat(socketPath).then(
      (s) => s.ino,
      () => undefined,
    )) !== socketIno
  )
    return `its socket ${socketPath} was removed`;
  return undefined;
}
