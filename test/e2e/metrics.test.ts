/** --metrics-file: calls of several processes at once, each counted once, by outcome. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSamples } from '../../src/metrics/textfile.js';
import { generateWalSegments, type GeneratedWal } from '../servers/postgres.js';
import { runCli } from '../support/cli.js';
import { createRepo, type TestRepo } from '../support/repos.js';
import { removeScratch, scratchDir } from '../support/scratch.js';

let wal: GeneratedWal;
beforeAll(async () => {
  wal = await generateWalSegments(6);
}, 180_000);

describe('metrics textfile', () => {
  let repo: TestRepo;
  beforeAll(async () => {
    repo = await createRepo('file');
  });

  it('counts concurrent pushes and fetches by exit status, with their WAL bytes', async () => {
    const dir = await scratchDir('wb-metrics-e2e-');
    const metrics = path.join(dir, 'walbridge.prom');
    const env = { WALBRIDGE_REPO: repo.url, WALBRIDGE_NAMESPACE: 'metrics', WALBRIDGE_METRICS_FILE: metrics, ...repo.env };
    const pushes = await Promise.all(wal.segments.map((seg) => runCli('archive-push', [seg], env)));
    expect(pushes.map((p) => p.status)).toEqual(wal.segments.map(() => 0));
    const names = wal.segments.map((s) => path.basename(s));
    expect((await runCli('archive-fetch', ['--no-wait', names[0]!, path.join(dir, 'restored')], env)).status).toBe(0);
    expect((await runCli('archive-fetch', ['--no-wait', '0000000100000000000000FF', path.join(dir, 'absent')], env)).status).toBe(1);
    expect((await runCli('archive-fetch', ['--no-wait', '--standby', 'east', names[1]!, path.join(dir, 'restored-east')], env)).status).toBe(0);
    const bad = await runCli('archive-push', [path.join(dir, 'no-such-file')], env);
    expect(bad.status).not.toBe(0);

    const text = await readFile(metrics, 'utf8');
    const samples = parseSamples(text);
    expect(samples.get('walbridge_calls_total{command="push",namespace="metrics",status="ok"}')).toBe(6);
    expect(samples.get('walbridge_calls_total{command="fetch",namespace="metrics",status="ok"}')).toBe(1);
    expect(samples.get('walbridge_calls_total{command="fetch",namespace="metrics",status="notFound"}')).toBe(1);
    expect(samples.get('walbridge_calls_total{command="fetch",namespace="metrics",standby="east",status="ok"}')).toBe(1);
    expect([...samples.keys()].filter((k) => k.startsWith('walbridge_calls_total{command="push",namespace="metrics"') && !k.includes('"ok"'))).toHaveLength(1);
    expect(samples.get('walbridge_wal_bytes_total{command="push",namespace="metrics"}')).toBe(6 * 16 * 1024 * 1024);
    expect(samples.get('walbridge_wal_bytes_total{command="fetch",namespace="metrics"}')).toBe(16 * 1024 * 1024);
    expect(samples.get('walbridge_call_duration_seconds_total{command="push",namespace="metrics"}')).toBeGreaterThan(0);
    expect(text).toMatch(/^# TYPE walbridge_calls_total counter$/m);
    await removeScratch(dir);
  });

  it('refuses a relative metrics path as a settings error', async () => {
    const r = await runCli('archive-push', [wal.segments[0]!], {
      WALBRIDGE_REPO: repo.url,
      WALBRIDGE_NAMESPACE: 'metrics',
      WALBRIDGE_METRICS_FILE: 'walbridge.prom',
      ...repo.env,
    });
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/absolute path/);
  });
});
