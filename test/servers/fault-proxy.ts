/**
 * A TCP proxy on 127.0.0.1 between walbridge and a test server, misbehaving on demand: added
 * latency, a connection reset after N bytes, a black hole (accepts, never answers), a slow
 * trickle of the server's answers (or of what the client sends), optionally reset midway. The fault in force when a connection is accepted applies to
 * that whole connection; `set()` changes it for the next ones, and `resetAll()` cuts the open
 * ones (kept-alive connections would otherwise carry on as if the network were fine).
 */
import net from 'node:net';

export type Fault =
  | { readonly kind: 'none' }
  /** Every chunk, both ways, arrives `ms` later (order kept; throughput unchanged). */
  | { readonly kind: 'latency'; readonly ms: number }
  /** The connection is reset (RST) once `bytes` have passed, both ways counted; for the next `connections` connections, or all. */
  | { readonly kind: 'reset-after'; readonly bytes: number; readonly connections?: number }
  /** Connections are accepted and held; nothing is forwarded or answered. */
  | { readonly kind: 'blackhole' }
  /**
   * The server's answers reach the client at `bytesPerSecond` (with `upstream`, what the client
   * sends reaches the server so, instead); with `resetAfter`, the connection is reset once that
   * many bytes of one answer (or request) have trickled through, counted afresh whenever the
   * other side sends: a body cut off midway after moving slowly, on kept-alive connections too.
   */
  | { readonly kind: 'trickle'; readonly bytesPerSecond: number; readonly upstream?: boolean; readonly resetAfter?: number };

export interface FaultProxy {
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  set(fault: Fault): void;
  /** Resets every open connection (a network outage starts for the kept-alive ones too). */
  resetAll(): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  let fault: Fault = { kind: 'none' };
  let faultyLeft = Infinity;
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };

  const server = net.createServer((client) => {
    accepted++;
    track(client);
    let mine: Fault = fault;
    if (mine.kind === 'reset-after') {
      if (faultyLeft <= 0) mine = { kind: 'none' };
      else faultyLeft--;
    }
    if (mine.kind === 'blackhole') return; // held until the client gives up or the proxy closes
    const upstream = net.connect(target.port, target.host);
    track(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);

    let passed = 0;
    const reset = () => {
      client.resetAndDestroy();
      upstream.destroy();
    };
    const forward = (from: net.Socket, to: net.Socket, slow: boolean) => {
      let queue = Promise.resolve();
      from.on('data', (chunk: Buffer) => {
        if (mine.kind === 'trickle' && !slow) passed = 0; // a new request (or answer): count its counterpart afresh
        if (mine.kind === 'reset-after') {
          passed += chunk.length;
          if (passed >= mine.bytes) return reset();
        }
        if (mine.kind === 'latency') {
          // Each chunk arrives `ms` after it was sent (timers of equal delay keep their order): a
          // longer path, not a slower one.
          const due = new Promise((r) => setTimeout(r, mine.kind === 'latency' ? mine.ms : 0));
          queue = queue.then(() => due).then(() => void to.write(chunk));
        } else if (mine.kind === 'trickle' && slow) {
          const step = Math.max(1, Math.floor(mine.bytesPerSecond / 10));
          from.pause();
          queue = queue.then(async () => {
            for (let at = 0; at < chunk.length && !to.destroyed; at += step) {
              const piece = chunk.subarray(at, at + step);
              passed += piece.length;
              if (mine.kind === 'trickle' && mine.resetAfter !== undefined && passed >= mine.resetAfter) return reset();
              to.write(piece);
              await new Promise((r) => setTimeout(r, 100));
            }
            from.resume();
          });
        } else to.write(chunk);
      });
      from.on('end', () => void queue.then(() => to.end()));
    };
    const up = mine.kind === 'trickle' && mine.upstream === true;
    forward(client, upstream, up);
    forward(upstream, client, !up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    set(next) {
      fault = next;
      faultyLeft = next.kind === 'reset-after' && next.connections !== undefined ? next.connections : Infinity;
    },
    resetAll() {
      for (const s of sockets) s.resetAndDestroy();
    },
    get accepted() {
      return accepted;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
