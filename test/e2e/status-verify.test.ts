/** walbridge status and walbridge verify on real WAL through each backend, healthy and damaged. */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { BACKENDS, createRepo, type TestRepo } from '../support/repos.js';

let wal: GeneratedWal;
beforeAll(async () => {
  wal = await generateWalSegments(5);
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
    const empty = await runCli('walbridge', ['status'], env(namespace));
    expect(empty.status).toBe(0);
    expect(empty.stdout).toMatch(/cluster: none recorded yet/);
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

  it('verify reports a namespace without a bucket as a store error, not as a clean namespace', async () => {
    const r = await runCli('walbridge', ['verify'], { ...env('sv-missing'), WALBRIDGE_REPO: repo.url.replace(/(s3|gs):\/\/[^/]+/, '$1://walbridge-no-such-bucket').replace(/^file:\/\/.*/, 'file:///nonexistent/walbridge-repo') });
    expect(r.status).toBe(ExitCode.storeMissing);
  });
});
