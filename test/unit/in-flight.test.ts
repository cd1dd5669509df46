import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearInFlight, inFlightFile, markInFlight, prepareMarkers } from '../../src/archive/push/markers.js';
import { markerDir } from '../../src/archive/local-layout.js';

/**
 * Reads `file` as fast as it can until told to stop (state[0]); counts in state[1] how often it
 * found it there, and reports how often it found it empty. Says when its loop has begun.
 */
const POLLER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const state = new Int32Array(workerData.state);
let empty = 0;
parentPort.postMessage('polling');
while (Atomics.load(state, 0) === 0) {
  try { const text = readFileSync(workerData.file, 'utf8'); Atomics.add(state, 1, 1); if (text === '') empty++; } catch {}
}
parentPort.postMessage({ empty });
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
    const state = new Int32Array(new SharedArrayBuffer(8));
    const poller = new Worker(POLLER, { eval: true, workerData: { file: inFlightFile(walDir, name), state: state.buffer } });
    const failed = new Promise<never>((_, reject) => poller.once('error', reject));
    await Promise.race([new Promise((resolve) => poller.once('message', resolve)), failed]); // polling
    const result = Promise.race([new Promise<{ empty: number }>((resolve) => poller.once('message', resolve)), failed]);
    // Until the poller has read the file often enough (a loaded machine slows it), 10 s at most.
    const deadline = Date.now() + 10_000;
    let rounds = 0;
    while ((rounds < 300 || Atomics.load(state, 1) < 500) && Date.now() < deadline) {
      await markInFlight(walDir, name);
      await clearInFlight(walDir, name);
      rounds++;
    }
    Atomics.store(state, 0, 1);
    const { empty } = await result;
    await poller.terminate();
    expect(Atomics.load(state, 1)).toBeGreaterThanOrEqual(500);
    expect(empty).toBe(0);
  });

  it("a starting pusher's sweep leaves a live process's temp file alone and removes a dead one's", async () => {
    const dir = markerDir(walDir);
    await mkdir(dir, { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const writer = spawn('sleep', ['60'], { stdio: 'ignore' }); // a live process other than this one
    try {
      const live = `.000000010000000000000002.${writer.pid}.0`;
      const gone = `.000000010000000000000003.${dead}.0`;
      const own = `.000000010000000000000004.${process.pid}.0`; // none of its own is being written as it starts
      for (const [file, pid] of [
        [live, writer.pid],
        [gone, dead],
        [own, process.pid],
      ] as const)
        await writeFile(path.join(dir, file), `${pid}\n`);
      await prepareMarkers(walDir, { repository: 'file:///nowhere', namespace: 'ns', callKey: undefined });
      expect((await readdir(dir)).sort()).toEqual([live]);
    } finally {
      writer.kill();
    }
  });
});
