import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearInFlight, inFlightFile, markInFlight } from '../../src/archive/push/markers.js';

/** Reads `file` as fast as it can until told to stop; reports how often it found it there but empty. */
const POLLER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const stop = new Int32Array(workerData.stop);
let empty = 0, seen = 0;
while (Atomics.load(stop, 0) === 0) {
  try { const text = readFileSync(workerData.file, 'utf8'); seen++; if (text === '') empty++; } catch {}
}
parentPort.postMessage({ empty, seen });
`;

describe('the .pushing file bin/archive-push reads', () => {
  let walDir: string;
  beforeAll(async () => {
    walDir = path.join(await mkdtemp(path.join(tmpdir(), 'walbridge-in-flight-')), 'pg_wal');
    await mkdir(walDir, { recursive: true });
  });
  afterAll(() => rm(path.dirname(walDir), { recursive: true, force: true }));

  it('is never seen empty: it appears whole, naming the pid (an empty one reads as no live pusher)', async () => {
    const name = '000000010000000000000001';
    await markInFlight(walDir, name, true);
    await clearInFlight(walDir, name);
    const stop = new SharedArrayBuffer(4);
    const poller = new Worker(POLLER, { eval: true, workerData: { file: inFlightFile(walDir, name), stop } });
    const result = new Promise<{ empty: number; seen: number }>((resolve) => poller.once('message', resolve));
    for (let i = 0; i < 300; i++) {
      await markInFlight(walDir, name);
      await clearInFlight(walDir, name);
    }
    Atomics.store(new Int32Array(stop), 0, 1);
    const { empty, seen } = await result;
    await poller.terminate();
    expect(seen).toBeGreaterThan(0);
    expect(empty).toBe(0);
  });
});
