/** walbridge status and walbridge verify on real WAL through each backend, healthy and damaged. */
import { createHash } from 'node:crypto';
import { readdir, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';
import { stopPushWhileWriting } from '../support/stopped-push.js';

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

let wal: GeneratedWal;
/** WAL of another cluster (its own system identifier, 1 MiB segments). */
let otherWal: GeneratedWal;
beforeAll(async () => {
  [wal, otherWal] = await Promise.all([generateWalSegments(5), generateWalSegments(1, { walSegSizeMb: 1 })]);
}, 180_000);

describe.each(BACKENDS)('status and verify through %s', (backend) => {
  let repo: TestRepo;
  let n = 0;
  beforeAll(async () => {
    repo = await createRepo(backend);
  });
  const env = (namespace: string) => ({ WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: namespace, ...repo.env });
  const names = () => wal.segments.map((s) => path.basename(s));

  async function archived(namespace: string): Promise<void> {
    for (const seg of wal.segments) expect((await runCli('archive-push', ['--push-concurrency', '1', seg], env(namespace))).status).toBe(0);
  }

  it('status shows the cluster, the timeline, its newest segment and its age, and triggers; --json the same', async () => {
    const namespace = `sv${++n}`;
    await archived(namespace);
    expect((await runCli('walbridge', ['trigger', 'smart'], env(namespace))).status).toBe(0);
    const text = await runCli('walbridge', ['status'], env(namespace));
    expect(text.status).toBe(0);
    expect(text.stdout).toContain(`timeline 1: 5 segments ${names()[0]} … ${names()[4]}, newest`);
    expect(text.stdout).toMatch(/system identifier \d+, PostgreSQL 15, 16\.0 MiB segments/);
    expect(text.stdout).toMatch(/trigger: smart for every standby/);
    const json = JSON.parse((await runCli('walbridge', ['status', '--json'], env(namespace))).stdout) as {
      identity: { segmentSize: number };
      timelines: { timeline: number; segments: number; newest: string; newestAgeSeconds: number; missingSegments: number }[];
      triggers: { mode: string }[];
    };
    expect(json.identity.segmentSize).toBe(16 * 1024 * 1024);
    expect(json.timelines).toMatchObject([{ timeline: 1, segments: 5, newest: names()[4], missingSegments: 0 }]);
    expect(json.timelines[0]!.newestAgeSeconds).toBeLessThan(120);
    expect(json.triggers.map((t) => t.mode)).toEqual(['smart']);
    // --max-age: a newest segment older than that is a problem (archiving stalled).
    expect((await runCli('walbridge', ['status', '--max-age', '3600'], env(namespace))).status).toBe(0);
    await new Promise((r) => setTimeout(r, 2100));
    const stale = await runCli('walbridge', ['status', '--max-age', '1', '--json'], env(namespace));
    expect(stale.status).toBe(ExitCode.problems);
    expect((JSON.parse(stale.stdout) as { problems: string[] }).problems).toEqual([
      expect.stringMatching(new RegExp(`^the newest segment, ${names()[4]}, is \\d+ s old \\(--max-age 1\\)$`)),
    ]);
  });

  it('status --all lists every namespace with the cluster it holds, in name order, a damaged identity as such; --json the same; none at all exits 1', async () => {
    const own = await createRepo(backend);
    const envOf = (namespace?: string) => ({ WALBRIDGE_REPO: own.url, ...(namespace && { WALBRIDGE_NAMESPACE: namespace }), ...own.env });
    const empty = await runCli('walbridge', ['status', '--all'], envOf());
    expect(empty.status).toBe(ExitCode.notFound);
    expect(empty.stderr).toMatch(/no namespace in .*: is --repo right\?/);

    expect((await runCli('archive-push', [wal.segments[0]!], envOf('pg15-old'))).status).toBe(0);
    expect((await runCli('archive-push', [otherWal.segments[0]!], envOf('pg15-new'))).status).toBe(0);
    await own.putForeign('broken/identity.json', Buffer.from('not json'));
    await own.putForeign('notes.txt', Buffer.from('a top-level object is no namespace'));
    await own.putForeign('-not-a-namespace/x', Buffer.from('x'));
    const [oldId, newId] = [wal.systemIdentifier, otherWal.systemIdentifier];
    expect(oldId).not.toBe(newId);

    // A namespace set in the environment changes nothing: --all is the whole repository.
    const text = await runCli('walbridge', ['status', '--all'], envOf('pg15-old'));
    expect(text.status).toBe(0);
    const lines = text.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^3 namespaces in /);
    expect(lines.slice(1).map((l) => l.split(' ')[0])).toEqual(['broken', 'pg15-new', 'pg15-old']);
    expect(lines[1]).toMatch(/^broken {4}UNREADABLE identity.json \(.+\)$/);
    expect(lines[2]).toMatch(
      new RegExp(`^pg15-new  system identifier ${newId}, PostgreSQL 15, 1\\.0 MiB segments, recorded \\S+ from ${otherWal.segments[0]!.split('/').pop()}$`),
    );
    expect(lines[3]).toMatch(new RegExp(`^pg15-old  system identifier ${oldId}, PostgreSQL 15, 16\\.0 MiB segments`));

    const json = JSON.parse((await runCli('walbridge', ['status', '--all', '--json'], envOf())).stdout) as {
      namespaces: { namespace: string; identity: { systemIdentifier: string; segmentSize: number } | null; problem: string | null }[];
    };
    expect(json.namespaces.map((n) => [n.namespace, n.identity?.systemIdentifier ?? null, n.problem !== null])).toEqual([
      ['broken', null, true],
      ['pg15-new', String(newId), false],
      ['pg15-old', String(oldId), false],
    ]);
    await own.cleanup();
  });

  it('verify passes a healthy namespace, deep too; finds a gap, a foreign object and a corrupt one, exiting 14', async () => {
    const namespace = `sv${++n}`;
    await archived(namespace);
    const ok = await runCli('walbridge', ['verify', '--deep'], env(namespace));
    expect(ok.stdout).toMatch(/^OK: .*5 read and checked/m);
    expect(ok.status).toBe(0);

    const store = repo.store();
    await store.deleteMany([`${namespace}/wal/${names()[2]}`]);
    const body = Buffer.from('not WAL');
    await store.putIfAbsent(`${namespace}/wal/notes.txt`, { body, md5: createHash('md5').update(body).digest(), metadata: {} });
    const shallow = await runCli('walbridge', ['verify'], env(namespace));
    expect(shallow.status).toBe(ExitCode.problems);
    expect(shallow.stdout).toContain(`PROBLEM (gap): timeline 1: 1 segment missing, ${names()[2]}`);
    expect(shallow.stdout).toContain(`PROBLEM (foreign): ${namespace}/wal/notes.txt`);
    expect(shallow.stdout).not.toMatch(/corrupt/);
    const status = await runCli('walbridge', ['status'], env(namespace));
    expect(status.status).toBe(ExitCode.problems);
    expect(status.stdout).toContain('PROBLEM: timeline 1: 1 segment missing (walbridge verify names them)');
    expect(status.stdout).toContain('PROBLEM: 1 object walbridge never writes (walbridge verify names them)');

    await repo.tamper(`${namespace}/wal/${names()[3]}`, (stored) => {
      const copy = Buffer.from(stored);
      copy.writeUInt8(copy.readUInt8(copy.length - 1) ^ 0xff, copy.length - 1);
      return copy;
    });
    const deep = await runCli('walbridge', ['verify', '--deep', '--json'], env(namespace));
    expect(deep.status).toBe(ExitCode.problems);
    const report = JSON.parse(deep.stdout) as { ok: boolean; problems: { kind: string; message: string }[] };
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => p.kind).sort()).toEqual(['corrupt', 'foreign', 'gap']);
    expect(report.problems.find((p) => p.kind === 'corrupt')!.message).toContain(names()[3]);
  });

  it('status and verify on a namespace that holds nothing (a mistyped --namespace) say so: status exits 1, verify 14', async () => {
    const namespace = `sv-typo${++n}`;
    const where = repo.url.replace(/\/+$/, '');
    const status = await runCli('walbridge', ['status'], env(namespace));
    expect(status.status).toBe(ExitCode.notFound);
    expect(status.stdout).toMatch(/cluster: none recorded yet/);
    expect(status.stderr).toBe(`walbridge status: ERROR: namespace "${namespace}" holds nothing in ${where}: is --namespace right?\n`);
    const json = await runCli('walbridge', ['status', '--json'], env(namespace));
    expect(json.status).toBe(ExitCode.notFound);
    expect(JSON.parse(json.stdout)).toMatchObject({ namespace, objects: 0, timelines: [] });
    const verify = await runCli('walbridge', ['verify'], env(namespace));
    expect(verify.status).toBe(ExitCode.problems);
    expect(verify.stdout).toContain(`PROBLEM (empty): namespace "${namespace}" holds nothing in ${where}: is --namespace right?\n`);
    expect(verify.stdout).not.toMatch(/^OK/m);
  });

  it('a file another tool put into the namespace is a foreign object: status shows it, verify reports it (14), cleanup leaves it', async () => {
    const namespace = `sv${++n}`;
    await archived(namespace);
    await repo.putForeign(`${namespace}/README`, Buffer.from('copied here by hand\n'));
    await repo.putForeign(`${namespace}/wal/${names()[0]}.gz`, Buffer.from([0x1f, 0x8b, 0x08, 0x00]));
    const status = await runCli('walbridge', ['status'], env(namespace));
    expect(status.status, status.stderr).toBe(ExitCode.problems);
    expect(status.stdout).toContain('foreign objects: 2 (run walbridge verify)');
    expect(status.stdout).toContain('PROBLEM: 2 objects walbridge never writes (walbridge verify names them)');
    expect(status.stdout).toContain(`timeline 1: 5 segments ${names()[0]} … ${names()[4]}`);
    const verify = await runCli('walbridge', ['verify'], env(namespace));
    expect(verify.status, verify.stderr).toBe(ExitCode.problems);
    expect(verify.stdout).toContain(`PROBLEM (foreign): ${namespace}/README is not an object walbridge writes here`);
    expect(verify.stdout).toContain(`PROBLEM (foreign): ${namespace}/wal/${names()[0]}.gz is not an object walbridge writes here`);
    const cleanup = await runCli('walbridge', ['cleanup', names()[2]!], env(namespace));
    expect(cleanup.status, cleanup.stderr).toBe(0);
    const left = [];
    for await (const entry of repo.store().list(`${namespace}/wal/`)) left.push(entry.key.slice(`${namespace}/wal/`.length));
    expect(left).toEqual([`${names()[0]}.gz`, ...names().slice(2)]);
  });

  if (backend === 'file') {
    it("verify reports the temp file of a push killed by SIGKILL; the next push on this host removes it, never a live writer's or another host's", async () => {
      const root = repo.url.slice('file://'.length);
      const ns = (attempt: number) => `sv-kill${n}-${attempt}`;
      n++;
      const stopped = await stopPushWhileWriting(
        (attempt) => path.join(root, ns(attempt), '.walbridge-tmp'),
        (attempt) => ({ args: ['--push-concurrency', '1', '--compress', 'none', wal.segments[0]!], env: env(ns(attempt)) }),
      );
      stopped.child.kill('SIGKILL');
      await stopped.exited;
      const namespace = path.basename(path.dirname(path.dirname(stopped.temp)));
      const tempDir = path.dirname(stopped.temp);
      const pid = stopped.child.pid!;
      const host = hostname();
      const dead = await runCli('walbridge', ['verify'], env(namespace));
      expect(dead.status).toBe(ExitCode.problems);
      expect(dead.stdout).toMatch(
        new RegExp(
          `^PROBLEM \\(leftover\\): ${escapeRegExp(stopped.temp)}: temp file \\([\\d.]+ (B|KiB|MiB), last written \\d+ s ago\\) of an unfinished write of ${namespace}/wal/${names()[0]} by pid ${pid} on host ${escapeRegExp(host)}, which is gone: remove it \\(rm "${escapeRegExp(stopped.temp)}"\\)`,
          'm',
        ),
      );

      // The same writer's name with another host (idle an hour), and with a live pid (this test's).
      const [key, , pidNs] = path.basename(stopped.temp).split('+');
      const elsewhere = path.join(tempDir, [key, 'another-host.example', pidNs, pid, '0badcafe'].join('+'));
      const live = path.join(tempDir, [key, host, pidNs, process.pid, '0badcafe'].join('+'));
      for (const file of [elsewhere, live]) await writeFile(file, 'partial');
      const anHourAgo = new Date(Date.now() - 3600_000);
      await utimes(elsewhere, anHourAgo, anHourAgo);

      expect((await runCli('archive-push', ['--push-concurrency', '1', wal.segments[1]!], env(namespace))).status).toBe(0);
      expect((await readdir(tempDir)).sort()).toEqual([path.basename(elsewhere), path.basename(live)].sort());
      const after = await runCli('walbridge', ['verify'], env(namespace));
      expect(after.status).toBe(ExitCode.problems);
      const problems = after.stdout.split('\n').filter((line) => line.startsWith('PROBLEM'));
      expect(problems).toHaveLength(1); // the live writer's file is a push in progress
      expect(problems[0]).toContain(
        `of an unfinished write of ${namespace}/wal/${names()[0]} by pid ${pid} on host another-host.example: if no walbridge process ${pid} runs on another-host.example, remove it (rm "${elsewhere}")`,
      );
      expect(problems[0]).toMatch(/last written 60 min ago/);
    });
  }

  it('verify reports a namespace without a bucket as a store error, not as a clean namespace', async () => {
    const r = await runCli('walbridge', ['verify'], {
      ...env('sv-missing'),
      WALBRIDGE_REPO: repo.url.replace(/(s3|gs):\/\/[^/]+/, '$1://walbridge-no-such-bucket').replace(/^file:\/\/.*/, 'file:///nonexistent/walbridge-repo'),
    });
    expect(r.status).toBe(ExitCode.storeMissing);
  });
});
