/**
 * At most one process per name (one background pusher per pg_wal, one streamer per data
 * directory), whatever the timing: the lock is a Unix socket in Linux's abstract namespace.
 * Binding a name there either succeeds or fails (EADDRINUSE) in one step, and the kernel frees
 * the name when its holder dies, even by SIGKILL, so there is no stale lock to take over: the
 * race of "a dead process's pid file, removed by two processes at once" cannot happen.
 *
 * The socket carries nothing: a connection is closed at once (abstract sockets have no file
 * permissions, so nothing may ever be served on one). Their names are visible to every local
 * user (/proc/net/unix): someone who binds a name first only keeps that background process from
 * starting, and the calls do their own work.
 */
import { connect, createServer, type Server } from 'node:net';

export interface InstanceLock {
  release(): Promise<void>;
}

function address(name: string): string {
  return `\0walbridge-${process.getuid?.() ?? 0}-${name}`;
}

/** Takes the lock `name`; undefined if another process holds it. */
export function takeInstanceLock(name: string): Promise<InstanceLock | undefined> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer((socket) => socket.destroy());
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err)));
    server.listen(address(name), () => {
      server.unref(); // holding the lock must not keep the process alive
      resolve({ release: () => new Promise((done) => server.close(() => done())) });
    });
  });
}

/** Whether a live process holds the lock `name` (a connection is accepted). */
export function instanceLockHeld(name: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(address(name));
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
