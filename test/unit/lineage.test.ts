/**
 * A call knows whoever asked is gone (src/wal/server.ts lineageIntact), with real processes:
 * PostgreSQL's call runs as startup process -> sh -> call, and a killed postmaster leaves the
 * startup process in system(), re-parented, with the call's own parent untouched. The probe is
 * tsc's output of the module (the suite builds before it runs).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN_DIR } from '../support/cli.js';

const REPO_ROOT = path.dirname(BIN_DIR);

const PROBE = `
import { callerLineage, lineageIntact } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/wal/server.js'))};
const lineage = callerLineage();
const grandparent = Number((await import('node:fs')).readFileSync('/proc/' + process.ppid + '/stat', 'utf8').split(') ')[1].split(' ')[1]);
console.log('ready ' + process.ppid + ' ' + grandparent);
const started = Date.now();
const timer = setInterval(() => {
  if (!lineageIntact(lineage)) { console.log('gone ' + (Date.now() - started)); process.exit(0); }
  if (Date.now() - started > 20000) { console.log('still there'); process.exit(0); }
}, 20);
`;

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
  }
});

/** grandparent sh -> parent sh -> probe (each `; :` keeps sh from exec'ing its last command). */
async function probeTree(): Promise<{ parent: number; grandparent: number; lines: AsyncIterator<string> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'walbridge-lineage-'));
  const probe = path.join(dir, 'probe.mjs');
  await writeFile(probe, PROBE);
  const child = spawn('sh', ['-c', `sh -c 'node ${probe}; :'; :`], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  started.push(child.pid!);
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = (await lines.next()).value as string;
  const [word, parent, grandparent] = first.split(' ');
  expect(word).toBe('ready');
  expect(Number(grandparent)).toBe(child.pid);
  return { parent: Number(parent), grandparent: Number(grandparent), lines };
}

describe('a call and whoever asked it', () => {
  it('sees its grandparent killed (a postmaster killed under its startup process) though its parent still runs', async () => {
    const { grandparent, lines } = await probeTree();
    await new Promise((r) => setTimeout(r, 200));
    process.kill(grandparent, 'SIGKILL');
    const answer = (await lines.next()).value as string;
    expect(answer).toMatch(/^gone \d+$/);
  }, 30_000);

  it('sees its parent killed, and stays while neither is', async () => {
    const { parent, lines } = await probeTree();
    const next = lines.next();
    const early = await Promise.race([next, new Promise((r) => setTimeout(() => r('quiet'), 500))]);
    expect(early).toBe('quiet');
    process.kill(parent, 'SIGKILL');
    expect((await next).value as string).toMatch(/^gone \d+$/);
  }, 30_000);
});
