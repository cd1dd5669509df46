/** One deadline per operation (src/storage/deadline.ts, retry.ts), without any server of the suite. */
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retryPolicy, retryTransient, withRetries, withinTimeout } from '../../src/storage/retry.js';
import { StoreError, type Store } from '../../src/storage/store.js';

const policy = retryPolicy(0.3); // --timeout 0.3 s
const failing = () => Promise.reject(new StoreError('transient', 'connection reset'));
const never = () => new Promise<never>(() => undefined);

async function timed<T>(run: () => Promise<T>): Promise<{ error: unknown; ms: number }> {
  const started = Date.now();
  const error = await run().then(
    () => undefined,
    (err: unknown) => err,
  );
  return { error, ms: Date.now() - started };
}

describe('one deadline per operation', () => {
  it('retries nested in each other share it: an inner retry does not start the clock again', async () => {
    const quick = { ...policy, minDelayMs: 10, maxDelayMs: 20 };
    let outer = 0;
    const { error, ms } = await timed(() =>
      retryTransient(quick, 'download', async () => {
        outer++;
        // The get works the first time, then keeps failing; the body it gave breaks off midway.
        await retryTransient(quick, 'read', () => (outer === 1 ? Promise.resolve() : failing()));
        await new Promise((r) => setTimeout(r, 200));
        throw new StoreError('transient', 'body broke off');
      }),
    );
    expect(error).toMatchObject({ kind: 'transient', message: 'download did not complete within --timeout 0.3 s; last error: connection reset' });
    expect(ms).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(450); // not the inner retries' own 0.3 s on top
    expect(outer).toBe(2);
  });

  it('an attempt still running at the deadline is given up, not waited for', async () => {
    const { error, ms } = await timed(() => withinTimeout(policy, 'push of 000000010000000000000001', () => retryTransient(policy, 'store x', never)));
    expect(error).toMatchObject({ kind: 'transient', message: 'push of 000000010000000000000001 did not complete within --timeout 0.3 s' });
    expect(ms).toBeLessThan(1_500); // the deadline, and the second an aborted attempt gets to unwind
  });

  it('a failure that is not transient ends the operation at once', async () => {
    const { error, ms } = await timed(() => retryTransient(policy, 'read', () => Promise.reject(new StoreError('denied', 'no'))));
    expect(error).toMatchObject({ kind: 'denied' });
    expect(ms).toBeLessThan(100);
  });

  it('attempts that fail at once stop at the deadline by the clock, before its timer had a turn', async () => {
    let calls = 0;
    const started = Date.now();
    const { error } = await timed(() =>
      retryTransient({ budgetMs: 50, minDelayMs: 1, maxDelayMs: 1 }, 'inspect k', () => {
        calls++;
        // The first attempt holds the event loop past the deadline; every one fails in a microtask.
        while (calls === 1 && Date.now() - started < 60);
        if (calls > 1000) return Promise.reject(new StoreError('permanent', 'still retrying after the deadline'));
        return Promise.reject(new StoreError('transient', 'connection reset'));
      }),
    );
    expect(error).toMatchObject({ kind: 'transient', message: 'inspect k did not complete within --timeout 0.05 s; last error: connection reset' });
    expect(calls).toBe(1);
  });

  it('operations one after another each get their own', async () => {
    expect(await retryTransient(policy, 'a', () => new Promise((r) => setTimeout(() => r('a'), 200)))).toBe('a');
    expect(await retryTransient(policy, 'b', () => new Promise((r) => setTimeout(() => r('b'), 200)))).toBe('b');
  });
});

describe('what an operation leaves running is aborted at its deadline', () => {
  let server: Server;
  let closed = 0;
  beforeAll(async () => {
    // Answers at once, then trickles its body forever: the connection never idles.
    server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const timer = setInterval(() => res.write('x'), 20);
      req.socket.on('close', () => {
        clearInterval(timer);
        closed++;
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it('an HTTP request made inside an operation, whatever the client (the GCS SDK takes no abort signal)', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const before = closed;
    const { error, ms } = await timed(() =>
      retryTransient(
        policy,
        'read x',
        () =>
          new Promise((resolve, reject) =>
            get(url, (res) =>
              res
                .on('data', () => undefined)
                .on('end', resolve)
                .on('error', reject),
            ).on('error', reject),
          ),
      ),
    );
    expect(error).toMatchObject({ kind: 'transient', message: expect.stringMatching(/^read x did not complete within --timeout 0\.3 s/) });
    expect(ms).toBeLessThan(1_500);
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(before + 1); // the server saw the connection go
  });

  it('the body a get handed out, read after the get returned', async () => {
    const endless = () =>
      new Readable({
        read() {
          setTimeout(() => this.push(Buffer.alloc(1)), 20);
        },
      });
    let body: Readable | undefined;
    const store = withRetries({ get: async () => ({ info: { key: 'k', size: 1, metadata: {} }, body: (body = endless()) }) } as unknown as Store, policy);
    const { error, ms } = await timed(() =>
      retryTransient(policy, 'download k', async () => {
        const opened = await store.get('k');
        for await (const chunk of opened.body) void chunk;
      }),
    );
    expect(error).toMatchObject({ kind: 'transient', message: expect.stringMatching(/did not complete within --timeout 0\.3 s/) });
    expect(ms).toBeLessThan(1_500);
    expect(body!.destroyed).toBe(true);
  });
});
