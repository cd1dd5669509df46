/**
 * A call knows whoever asked is gone (src/wal/server.ts lineageIntact), with real processes in
 * PostgreSQL's shapes: a "postmaster" and a "startup process" (sh scripts named postgres, so
 * their comm reads as PostgreSQL's) run the call either through `sh -c` or directly (where sh
 * execs a single command, as bash does). A killed postmaster leaves the startup process re-parented; a postmaster
 * re-parented itself (pg_ctl exits once the server is up) is no reason to stop. The probe runs
 * tsc's output of the module (the suite builds before it runs).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN_DIR } from '../support/cli.js';
import { scratchDir } from '../support/scratch.js';

const SERVER_MODULE = path.join(path.dirname(BIN_DIR), 'dist/wal/server.js');

const PROBE = `
import { readFileSync } from 'node:fs';
import { callerLineage, lineageIntact } from ${JSON.stringify(SERVER_MODULE)};
const ppidOf = (pid) => Number(readFileSync('/proc/' + pid + '/stat', 'utf8').split(') ')[1].split(' ')[1]);
const startOf = (pid) => readFileSync('/proc/' + pid + '/stat', 'utf8').split(') ')[1].split(' ')[19];
const serverPid = Number(process.env.SERVER_PID || 0);
const lineage = callerLineage(serverPid ? { pid: serverPid, startTime: startOf(serverPid) } : undefined);
console.log('ready ' + process.ppid + ' ' + ppidOf(process.ppid));
const started = Date.now();
setInterval(() => {
  if (!lineageIntact(lineage)) { console.log('gone ' + (Date.now() - started)); process.exit(0); }
  if (Date.now() - started > 20000) { console.log('still there'); process.exit(0); }
}, 20);
`;

const groups: number[] = [];
afterEach(() => {
  for (const pid of groups.splice(0)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
  }
});

interface Tree {
  /** The process that started the "postmaster" (pg_ctl's part). */
  readonly launcher: number;
  readonly postmaster: number;
  readonly startup: number;
  /** The call's parent: the sh, or the startup process when sh exec'd the call. */
  readonly parent: number;
  readonly lines: AsyncIterator<string>;
}

/** launcher sh -> postgres ("postmaster") -> postgres ("startup") -> [sh ->] probe. */
async function pgTree(opts: { viaSh: boolean; serverKnown: boolean }): Promise<Tree> {
  const dir = await scratchDir('walbridge-lineage-');
  const probe = path.join(dir, 'probe.mjs');
  await writeFile(probe, PROBE);
  for (const d of ['pm', 'st']) await mkdir(path.join(dir, d));
  // Each `; :` keeps sh from exec'ing its last command (bash would; dash, Debian's sh, does not).
  await writeFile(path.join(dir, 'pm', 'postgres'), `#!/bin/sh\nSERVER_PID=${opts.serverKnown ? '$$' : ''} ${dir}/st/postgres; :\n`, { mode: 0o755 });
  const call = opts.viaSh ? `sh -c 'node ${probe}; :'` : `node ${probe}`;
  await writeFile(path.join(dir, 'st', 'postgres'), `#!/bin/sh\nexport SERVER_PID\n${call}; :\n`, { mode: 0o755 });
  const child = spawn('sh', ['-c', `${dir}/pm/postgres; :`], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  groups.push(child.pid!);
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const [word, parent, grandparent] = ((await lines.next()).value as string).split(' ');
  expect(word).toBe('ready');
  const startup = opts.viaSh ? Number(grandparent) : Number(parent);
  const postmaster = Number(readFileSync(`/proc/${startup}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  expect(readFileSync(`/proc/${startup}/comm`, 'utf8').trim()).toBe('postgres');
  expect(readFileSync(`/proc/${postmaster}/comm`, 'utf8').trim()).toBe('postgres');
  return { launcher: child.pid!, postmaster, startup, parent: Number(parent), lines };
}

async function quiet(next: Promise<IteratorResult<string>>, ms: number): Promise<boolean> {
  return (await Promise.race([next.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), ms))])) === true;
}

describe('a call and whoever asked it', () => {
  for (const viaSh of [true, false]) {
    for (const serverKnown of [false, true]) {
      const shape = `${viaSh ? 'through sh' : "exec'd by sh"}, postmaster ${serverKnown ? 'known' : 'unknown'}`;
      it(`${shape}: stays while the postmaster is re-parented, goes when it is killed`, async () => {
        const tree = await pgTree({ viaSh, serverKnown });
        const next = tree.lines.next();
        process.kill(tree.launcher, 'SIGKILL'); // pg_ctl gone: the postmaster is re-parented
        expect(await quiet(next, 500)).toBe(true);
        process.kill(tree.postmaster, 'SIGKILL');
        expect((await next).value as string).toMatch(/^gone \d+$/);
      }, 30_000);
    }
  }

  it('goes when its parent is killed', async () => {
    const tree = await pgTree({ viaSh: true, serverKnown: false });
    const next = tree.lines.next();
    expect(await quiet(next, 300)).toBe(true);
    process.kill(tree.parent, 'SIGKILL');
    expect((await next).value as string).toMatch(/^gone \d+$/);
  }, 30_000);
});

/**
 * A startup process that runs restore_command after its postmaster died (before it noticed):
 * postmaster.pid still names the dead postmaster. The probe asks calledByGoneServer() as the call
 * does when it starts; the real archive-fetch, waiting under recovery.signal, must end at once.
 */
describe('a call started after its postmaster died', () => {
  const GONE_PROBE = `
import { calledByGoneServer } from ${JSON.stringify(SERVER_MODULE)};
console.log(String(await calledByGoneServer(process.env.DATA_DIR)));
`;

  interface GatedTree {
    readonly dir: string;
    readonly dataDir: string;
    readonly postmaster: number;
    readonly lines: AsyncIterator<string>;
    /** Lets the startup process run `call`. */
    go(): Promise<void>;
  }

  /** launcher sh -> postgres ("postmaster") -> postgres ("startup", waits for `go`) -> sh -c `call` (DATA_DIR set, in the data directory). */
  async function gatedTree(call = `node ${'$PROBE'}`, opts: { pidNamespace?: boolean } = {}): Promise<GatedTree> {
    const dir = await scratchDir('walbridge-lineage-');
    const dataDir = path.join(dir, 'data');
    await writeFile(path.join(dir, 'probe.mjs'), GONE_PROBE);
    for (const d of ['pm', 'st', 'data', 'data/pg_wal']) await mkdir(path.join(dir, d));
    await writeFile(path.join(dir, 'pm', 'postgres'), `#!/bin/sh\n${dir}/st/postgres; :\n`, { mode: 0o755 });
    await writeFile(path.join(dir, 'call'), `${call}\necho "exit $?"\n`);
    await writeFile(
      path.join(dir, 'st', 'postgres'),
      `#!/bin/sh\necho "started $PPID"\nwhile [ ! -e ${dir}/go ]; do sleep 0.02; done\ncd ${dataDir} && PROBE=${dir}/probe.mjs DATA_DIR=${dataDir} sh ${dir}/call; :\n`,
      { mode: 0o755 },
    );
    // stderr ignored: the launcher's "Killed" (the call's own stderr goes to stdout).
    // In a pid namespace of its own the "postmaster" is pid 1, as in a container.
    const [exe, ...args] = opts.pidNamespace ? ['unshare', '--pid', '--fork', '--mount-proc', `${dir}/pm/postgres`] : ['sh', '-c', `${dir}/pm/postgres; :`];
    const child = spawn(exe!, args, { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    groups.push(child.pid!);
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const [word, postmaster] = ((await lines.next()).value as string).split(' ');
    expect(word).toBe('started');
    return { dir, dataDir, postmaster: Number(postmaster), lines, go: () => writeFile(path.join(dir, 'go'), '') };
  }

  const answer = async (lines: AsyncIterator<string>) => (await lines.next()).value as string;
  const pidFile = (tree: GatedTree, pid: number | string) => writeFile(path.join(tree.dataDir, 'postmaster.pid'), `${pid}\n${tree.dataDir}\n`);

  it('knows its server is gone when postmaster.pid names a postmaster that no longer runs', async () => {
    const tree = await gatedTree();
    await pidFile(tree, tree.postmaster);
    process.kill(tree.postmaster, 'SIGKILL');
    await tree.go();
    expect(await answer(tree.lines)).toBe('true');
  }, 30_000);

  it('knows its server is gone when postmaster.pid names another (restarted) postmaster', async () => {
    const tree = await gatedTree();
    const other = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
    groups.push(other.pid!);
    await pidFile(tree, other.pid!);
    await tree.go();
    expect(await answer(tree.lines)).toBe('true');
  }, 30_000);

  it("goes on while its postmaster runs, or when postmaster.pid is missing or a standalone backend's", async () => {
    for (const pid of [(pm: number) => pm, () => undefined, (pm: number) => `-${pm}`]) {
      const tree = await gatedTree();
      const text = pid(tree.postmaster);
      if (text !== undefined) await pidFile(tree, text);
      await tree.go();
      expect(await answer(tree.lines)).toBe('false');
    }
  }, 30_000);

  it.skipIf(process.getuid?.() !== 0)(
    'goes on under a postmaster that is pid 1 (a container)',
    async () => {
      const tree = await gatedTree(undefined, { pidNamespace: true });
      expect(tree.postmaster).toBe(1);
      await pidFile(tree, 1);
      await tree.go();
      expect(await answer(tree.lines)).toBe('false');
    },
    30_000,
  );

  it('goes on when no PostgreSQL process started it (a call run by hand)', async () => {
    const dir = await scratchDir('walbridge-lineage-');
    await writeFile(path.join(dir, 'postmaster.pid'), '1\n');
    const { calledByGoneServer } = (await import(SERVER_MODULE)) as typeof import('../../src/wal/server.js');
    expect(await calledByGoneServer(dir)).toBe(false);
  });

  it('archive-fetch waiting under recovery.signal ends at once (exit 200, nothing written) instead of waiting for nobody', async () => {
    const repo = await scratchDir('walbridge-lineage-repo-');
    const tree = await gatedTree(
      `WALBRIDGE_CONFIG= WALBRIDGE_REPO=file://${repo} WALBRIDGE_NAMESPACE=gone ${path.join(BIN_DIR, 'archive-fetch')} 000000010000000000000003 pg_wal/RECOVERYXLOG 2>&1`,
    );
    await writeFile(path.join(tree.dataDir, 'recovery.signal'), '');
    await pidFile(tree, tree.postmaster);
    process.kill(tree.postmaster, 'SIGKILL');
    const started = Date.now();
    await tree.go();
    const said: string[] = [];
    for (let line = await answer(tree.lines); ; line = await answer(tree.lines)) {
      said.push(line);
      if (line.startsWith('exit ')) break;
    }
    expect(said.at(-1)).toBe('exit 200');
    expect(said.join('\n')).toMatch(/the server that asked for 000000010000000000000003 is gone; stopping without writing anything/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(existsSync(path.join(tree.dataDir, 'pg_wal', 'RECOVERYXLOG'))).toBe(false);
  }, 30_000);
});
