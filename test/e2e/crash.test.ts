/**
 * kill -9 of archive-push and archive-fetch at random moments (seeded, reproducible): afterwards
 * the store holds nothing or the complete verified object under the name, %p is absent or
 * complete, and a retry succeeds. The default run is a sample; WALBRIDGE_CRASH_TRIALS=100 (per
 * command and backend) runs the full count; WALBRIDGE_CRASH_SEED replays a run.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeContent, unseal } from '../../src/codec/envelope.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { BIN_DIR, runCli } from '../support/cli.js';
import { createRepo, type Backend, type TestRepo } from '../support/repos.js';
import { Writable } from 'node:stream';
import { scratchDir } from '../support/scratch.js';

const TRIALS = Number(process.env['WALBRIDGE_CRASH_TRIALS'] ?? 10);
const SEED = Number(process.env['WALBRIDGE_CRASH_SEED'] ?? 20261124);

/** mulberry32: a small seeded PRNG, so a failing trial can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let wal: GeneratedWal;
let sha: Map<string, string>;
beforeAll(async () => {
  wal = await generateWalSegments(2);
  sha = new Map();
  for (const seg of wal.segments)
    sha.set(
      path.basename(seg),
      createHash('sha256')
        .update(await readFile(seg))
        .digest('hex'),
    );
}, 180_000);

/** Starts a command and kills it with SIGKILL after `ms` (or lets it finish first). */
function runAndKill(bin: string, args: string[], env: Record<string, string>, ms: number): Promise<{ killed: boolean; status: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(BIN_DIR, bin), args, {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env },
      stdio: 'ignore',
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ killed: signal === 'SIGKILL', status });
    });
  });
}

/** How long a call takes: the fastest of three, so a slow first run (a busy machine) does not
 *  stretch the kill window past most calls' end. */
async function duration(run: (attempt: number) => Promise<unknown>): Promise<number> {
  let fastest = Infinity;
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    await run(i);
    fastest = Math.min(fastest, Date.now() - started);
  }
  return fastest;
}

/** The stored object's plain content hash, or undefined if absent; throws if it does not verify. */
async function storedSha(repo: TestRepo, key: string): Promise<string | undefined> {
  const info = await repo.store().head(key);
  if (!info) return undefined;
  const { info: got, body } = await repo.store().get(key);
  const promised = describeContent(got.metadata);
  if (typeof promised === 'string') throw new Error(`${key}: ${promised}`);
  const seen = await unseal(body, promised, () => new Writable({ write: (_c, _e, done) => done() }), { fileName: path.basename(key), keys: undefined });
  if (seen.sha256 !== promised.sha256 || seen.size !== promised.size) throw new Error(`${key} is stored but does not verify`);
  return seen.sha256;
}

describe.each(['file', 's3'] as Backend[])('kill -9 at random moments through %s', (backend) => {
  let repo: TestRepo;
  let work: string;
  beforeAll(async () => {
    repo = await createRepo(backend);
    work = await scratchDir('wb-crash-');
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });
  const env = (namespace: string) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: namespace, WALBRIDGE_PUSH_CONCURRENCY: '1', ...repo.env });

  it(
    `push: ${TRIALS} trials (seed ${SEED}); the store has nothing or the verified object, and a retry succeeds`,
    async () => {
      const random = prng(SEED);
      const outcomes = { killed: 0, finished: 0, storedAfterKill: 0 };
      const span = await duration((i) => runCli('archive-push', [wal.segments[0]!], env(`crash-push-timing-${i}`)));
      for (let trial = 0; trial < TRIALS; trial++) {
        const namespace = `crash-push-${trial}`;
        const segment = wal.segments[trial % wal.segments.length]!;
        const name = path.basename(segment);
        const ms = Math.floor(random() * span * 1.1); // anywhere in a push: start-up, reading, upload, verification
        const run = await runAndKill('archive-push', [segment], env(namespace), ms);
        if (run.killed) outcomes.killed++;
        else outcomes.finished++;
        const after = await storedSha(repo, `${namespace}/wal/${name}`);
        if (run.killed && after) outcomes.storedAfterKill++;
        if (after !== undefined) expect(after, `trial ${trial} (kill after ${ms} ms)`).toBe(sha.get(name));
        if (!run.killed) expect(run.status, `trial ${trial}`).toBe(0);
        const retry = await runCli('archive-push', [segment], env(namespace));
        expect(retry.status, `trial ${trial} retry: ${retry.stderr}`).toBe(0);
        expect(await storedSha(repo, `${namespace}/wal/${name}`)).toBe(sha.get(name));
      }
      // The sample must really have killed pushes midway, not only before or after.
      expect(outcomes.killed).toBeGreaterThan(TRIALS / 3);
    },
    60_000 + TRIALS * 4_000,
  );

  it(
    `fetch: ${TRIALS} trials (seed ${SEED}); %p is absent or complete, no temp file stays, and a retry succeeds`,
    async () => {
      const random = prng(SEED + 1);
      const namespace = 'crash-fetch';
      for (const seg of wal.segments) expect((await runCli('archive-push', [seg], env(namespace))).status).toBe(0);
      let killed = 0;
      const span = await duration(() => runCli('archive-fetch', ['--no-wait', path.basename(wal.segments[0]!), path.join(work, 'timing')], env(namespace)));
      for (let trial = 0; trial < TRIALS; trial++) {
        const dir = await mkdtemp(path.join(work, `fetch-${trial}-`));
        const segment = wal.segments[trial % wal.segments.length]!;
        const name = path.basename(segment);
        const dest = path.join(dir, 'RECOVERYXLOG');
        const ms = Math.floor(random() * span * 1.1);
        const run = await runAndKill('archive-fetch', ['--no-wait', name, dest], env(namespace), ms);
        if (run.killed) killed++;
        const entries = await readdir(dir);
        if (entries.includes('RECOVERYXLOG')) {
          expect(
            createHash('sha256')
              .update(await readFile(dest))
              .digest('hex'),
            `trial ${trial} (kill after ${ms} ms)`,
          ).toBe(sha.get(name));
        } else expect(run.killed, `trial ${trial}: no %p, yet not killed`).toBe(true);
        // A killed download leaves at most its own temp file (a dot file, never %p); the next
        // call in the directory removes it.
        const retry = await runCli('archive-fetch', ['--no-wait', name, dest], env(namespace));
        expect(retry.status, `trial ${trial} retry: ${retry.stderr}`).toBe(0);
        expect(
          createHash('sha256')
            .update(await readFile(dest))
            .digest('hex'),
        ).toBe(sha.get(name));
        expect(await readdir(dir), `trial ${trial}`).toEqual(['RECOVERYXLOG']);
      }
      expect(killed).toBeGreaterThan(TRIALS / 3);
    },
    60_000 + TRIALS * 4_000,
  );
});
