import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addCall, finishMetering, meterCall, meterHolding, meterWaiting, meterWalFile, recordCall } from '../../src/metrics/calls.js';
import { withStreamPass, withoutStream } from '../../src/metrics/stream.js';
import { parseSamples, renderSamples, updateMetricsFile } from '../../src/metrics/textfile.js';
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

  it('keeps the newest segment archived or restored (a late call for an older one does not move it back) and the .ready backlog', () => {
    const seg = 16 * 1024 * 1024;
    let samples = addCall(parseSamples(''), { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 1, segmentEnd: 5 * seg, readyFiles: 3, at: 1 });
    samples = addCall(samples, { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 1, segmentEnd: 4 * seg, readyFiles: 0, at: 2 });
    samples = addCall(samples, { command: 'fetch', namespace: 'db1', standby: 'east', status: ExitCode.ok, seconds: 1, segmentEnd: 2 * seg, at: 3 });
    expect(samples.get('walbridge_archived_position_bytes{command="push",namespace="db1"}')).toBe(5 * seg);
    expect(samples.get('walbridge_archive_ready_files{command="push",namespace="db1"}')).toBe(0);
    expect(samples.get('walbridge_restored_position_bytes{command="fetch",namespace="db1",standby="east"}')).toBe(2 * seg);
    expect(samples.get('walbridge_fetch_state{command="fetch",namespace="db1",standby="east",state="restored"}')).toBe(1);
    expect(samples.get('walbridge_fetch_state{command="fetch",namespace="db1",standby="east",state="waiting"}')).toBe(0);
    expect(samples.has('walbridge_fetch_state{command="push",namespace="db1",state="restored"}')).toBe(false);
  });

  it("writes the stream's positions, lag, failing flag and heartbeat", () => {
    const owner = { namespace: 'db1' };
    let samples = withStreamPass(parseSamples(''), owner, { flush: 5000n, shipped: 4000n, failing: false }, 100);
    samples = withStreamPass(samples, owner, { flush: 6000n, shipped: 6000n, failing: true }, 105);
    const text = renderSamples(samples);
    expect(text).toContain('walbridge_stream_flush_position_bytes{command="stream",namespace="db1"} 6000');
    expect(text).toContain('walbridge_stream_shipped_position_bytes{command="stream",namespace="db1"} 6000');
    expect(text).toContain('walbridge_stream_lag_bytes{command="stream",namespace="db1"} 0');
    expect(text).toContain('walbridge_stream_failing{command="stream",namespace="db1"} 1');
    expect(text).toContain('walbridge_stream_heartbeat_timestamp_seconds{command="stream",namespace="db1"} 105');
    expect(text).toContain('# TYPE walbridge_stream_lag_bytes gauge');
  });

  it('a waiting call says it waits, then holds (with the failure), then how it ended, while it runs', async () => {
    const dir = await scratchDir('wb-metrics-');
    const file = path.join(dir, 'walbridge.prom');
    const key = (state: string) => `walbridge_fetch_state{command="fetch",namespace="db1",standby="east",state="${state}"}`;
    const read = async () => parseSamples(await readFile(file, 'utf8').catch(() => ''));
    meterCall(file, 'fetch', { namespace: 'db1', standby: 'east' }, silent);
    meterWalFile(path.join(dir, 'RECOVERYXLOG'), '000000010000000000000003');
    meterWaiting(60_000);
    expect((await read()).size).toBe(0); // an answer within 2 s writes nothing before the call's end
    await new Promise((r) => setTimeout(r, 2_300));
    expect((await read()).get(key('waiting'))).toBe(1);
    meterHolding(ExitCode.storeAccess);
    await new Promise((r) => setTimeout(r, 200));
    let samples = await read();
    expect(samples.get(key('holding'))).toBe(1);
    expect(samples.get(key('waiting'))).toBe(0);
    expect(samples.get('walbridge_fetch_holding{command="fetch",namespace="db1",standby="east",failure="storeAccess"}')).toBe(1);
    meterWaiting(60_000); // the next attempt: not waiting again until it outlasts a failure's deadline
    await new Promise((r) => setTimeout(r, 2_300));
    expect((await read()).get(key('holding'))).toBe(1);
    await writeFile(path.join(dir, 'RECOVERYXLOG'), Buffer.alloc(16 * 1024 * 1024));
    await finishMetering(ExitCode.ok);
    samples = await read();
    expect(samples.get(key('restored'))).toBe(1);
    expect(samples.get(key('holding'))).toBe(0);
    expect([...samples.keys()].some((k) => k.startsWith('walbridge_fetch_holding{'))).toBe(false);
    expect(samples.get('walbridge_restored_position_bytes{command="fetch",namespace="db1",standby="east"}')).toBe(4 * 16 * 1024 * 1024);
    await rm(dir, { recursive: true });
  }, 15_000);

  it("a push into a namespace removes that namespace's standby series from its file: a promoted standby's would stay silent and behind for ever", () => {
    let samples = addCall(parseSamples(''), { command: 'fetch', namespace: 'db1', standby: 'east', status: ExitCode.ok, seconds: 1, segmentEnd: 16, at: 1 });
    samples = addCall(samples, { command: 'fetch', namespace: 'db2', standby: 'east', status: ExitCode.ok, seconds: 1, segmentEnd: 16, at: 1 });
    samples = addCall(samples, { command: 'push', namespace: 'db1', status: ExitCode.ok, seconds: 1, at: 2 });
    const keys = [...samples.keys()];
    expect(keys.filter((k) => k.includes('namespace="db1"') && (k.startsWith('walbridge_fetch_') || k.startsWith('walbridge_restored_')))).toEqual([]);
    expect(keys.filter((k) => k.includes('namespace="db2"') && k.startsWith('walbridge_fetch_state{'))).toHaveLength(5);
    expect(samples.get('walbridge_calls_total{command="fetch",namespace="db1",standby="east",status="ok"}')).toBe(1); // counters stay
  });

  it("a fenced streamer's series go, another namespace's stay", () => {
    let samples = withStreamPass(parseSamples(''), { namespace: 'db1' }, { flush: 10n, shipped: 5n, failing: false }, 100);
    samples = withStreamPass(samples, { namespace: 'db2' }, { flush: 10n, shipped: 5n, failing: false }, 100);
    const keys = [...withoutStream(samples, { namespace: 'db1' }).keys()];
    expect(keys.filter((k) => k.includes('namespace="db1"'))).toEqual([]);
    expect(keys.filter((k) => k.includes('namespace="db2"'))).toHaveLength(5);
  });

  it('a restored file whose size is no segment size counts its bytes but no position, and never throws', async () => {
    const dir = await scratchDir('wb-metrics-');
    const file = path.join(dir, 'walbridge.prom');
    await writeFile(path.join(dir, 'RECOVERYXLOG'), Buffer.alloc(3 * 1024 * 1024));
    meterCall(file, 'fetch', { namespace: 'db1' }, silent);
    meterWalFile(path.join(dir, 'RECOVERYXLOG'), '000000010000000000000003');
    await finishMetering(ExitCode.ok);
    const samples = parseSamples(await readFile(file, 'utf8'));
    expect(samples.get('walbridge_wal_bytes_total{command="fetch",namespace="db1"}')).toBe(3 * 1024 * 1024);
    expect(samples.has('walbridge_restored_position_bytes{command="fetch",namespace="db1"}')).toBe(false);
    await rm(dir, { recursive: true });
  });

  it('a file that cannot be written is one warning a minute, not one per write', async () => {
    const warnings: string[] = [];
    const log = { ...silent, warn: (m: string) => void warnings.push(m) };
    const file = path.join(await scratchDir('wb-metrics-'), 'no-such-dir', 'walbridge.prom');
    for (let i = 0; i < 3; i++) await updateMetricsFile(file, (s) => s, log);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/metrics not recorded in .*walbridge\.prom/);
  });
});
