import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addCall, parseSamples, recordCall, renderSamples } from '../../src/cli/metrics.js';
import { ExitCode } from '../../src/errors.js';
import { scratchDir } from '../support/scratch.js';

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };

describe('Prometheus textfile metrics', () => {
  it('adds calls to counters by command and exit status, and renders what it parses', () => {
    let samples = parseSamples('');
    samples = addCall(samples, { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 0.25, walBytes: 16, at: 1000 });
    samples = addCall(samples, { command: 'push', namespace: 'db1', status: ExitCode.storeUnavailable, seconds: 60, at: 1100 });
    samples = addCall(samples, { command: 'fetch', namespace: 'db1', standby: 'east', status: ExitCode.notFound, seconds: 0.5, at: 1200 });
    const text = renderSamples(samples);
    expect(text).toContain('# TYPE walbridge_calls_total counter');
    expect(text).toContain('walbridge_calls_total{command="push",namespace="db1",status="ok"} 1');
    expect(text).toContain('walbridge_calls_total{command="push",namespace="db1",status="storeUnavailable"} 1');
    expect(text).toContain('walbridge_calls_total{command="fetch",namespace="db1",standby="east",status="notFound"} 1');
    expect(text).toContain('walbridge_call_duration_seconds_total{command="push",namespace="db1"} 60.25');
    expect(text).toContain('walbridge_wal_bytes_total{command="push",namespace="db1"} 16');
    expect(text).toContain('walbridge_last_success_timestamp_seconds{command="push",namespace="db1"} 1000');
    expect(text).not.toContain('walbridge_last_success_timestamp_seconds{command="fetch",namespace="db1",standby="east"}');
    expect(renderSamples(parseSamples(text))).toBe(text);
  });

  it("drops an older walbridge's series without a namespace label: nothing would update them again", () => {
    const old = 'walbridge_last_success_timestamp_seconds{command="push"} 900\nwalbridge_calls_total{command="push",status="ok"} 7\n';
    const text = renderSamples(addCall(parseSamples(old), { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 1, at: 1000 }));
    expect(text).not.toContain('{command="push"}');
    expect(text).not.toContain('{command="push",status="ok"}');
    expect(text).toContain('walbridge_last_success_timestamp_seconds{command="push",namespace="db1"} 1000');
  });

  it('loses no count when many processes record at once', async () => {
    const dir = await scratchDir('wb-metrics-');
    const file = path.join(dir, 'walbridge.prom');
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        recordCall(file, { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 1, walBytes: i, at: i }, silent),
      ),
    );
    const samples = parseSamples(await readFile(file, 'utf8'));
    expect(samples.get('walbridge_calls_total{command="push",namespace="db1",status="ok"}')).toBe(40);
    expect(samples.get('walbridge_wal_bytes_total{command="push",namespace="db1"}')).toBe((39 * 40) / 2);
    await rm(dir, { recursive: true });
  });
});
