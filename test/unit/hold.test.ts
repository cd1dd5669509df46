/** The rule for how a waiting restore_command may end under recovery.signal (src/archive/restore/hold.ts). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { failoverSwitch } from '../../src/archive/restore/failover.js';
import { holdingFailures, stopServer, verdictOn, waitsUnderRecoverySignal } from '../../src/archive/restore/hold.js';
import { choose, triggerId, type Trigger } from '../../src/archive/repo/trigger.js';
import { ExitCode, WalbridgeError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { StoreError } from '../../src/storage/store.js';
import { scratchDir } from '../support/scratch.js';

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) };
}

describe('verdictOn', () => {
  it.each<[string, unknown, 'hold' | 'stop']>([
    ['a store that does not answer', new StoreError('transient', 'reset'), 'hold'],
    ['a store refusing access', new StoreError('denied', '403'), 'hold'],
    ['a missing bucket', new StoreError('no-bucket', 'gone'), 'hold'],
    ['any other store error', new StoreError('permanent', '400'), 'hold'],
    ['a corrupt object', new WalbridgeError('corrupt', 'x'), 'hold'],
    ['an object of another cluster', new WalbridgeError('foreignCluster', 'x'), 'hold'],
    ['a key not given', new WalbridgeError('encryptionKey', 'x'), 'hold'],
    ['a full disk', new WalbridgeError('localIo', 'x'), 'hold'],
    ['a bad value in the config file', new WalbridgeError('config', 'x', { mendableOutside: true }), 'hold'],
    ['a bad flag or environment variable', new WalbridgeError('config', 'x'), 'stop'],
    ['bad arguments', new WalbridgeError('usage', 'x'), 'stop'],
    ['a name that is no WAL file', new WalbridgeError('badName', 'x'), 'stop'],
    ['a bug', new TypeError('undefined is not a function'), 'stop'],
    ['a codec package missing (an install in progress)', new WalbridgeError('config', 'codec zstd is unavailable', { mendableOutside: true }), 'hold'],
    [
      'a module of walbridge missing (an upgrade under the call: Node keeps failed imports)',
      Object.assign(new Error('Cannot find module'), { code: 'ERR_MODULE_NOT_FOUND' }),
      'stop',
    ],
  ])('%s: %s', (_what, err, verdict) => {
    expect(verdictOn(err)).toBe(verdict);
  });

  it('turns what must stop into exit 200, saying which status it would have been', () => {
    const stop = stopServer(new WalbridgeError('badName', 'refusing to restore "x": not a WAL file name'));
    expect(stop.exitCode).toBe(ExitCode.stopServer);
    expect(stop.message).toMatch(/^refusing to restore "x": not a WAL file name — .*exit status 4 would end recovery and promote this standby: exiting 200/);
  });
});

describe('holdingFailures', () => {
  const base = (log: Logger, failover = failoverSwitch()) => ({
    log,
    name: '000000010000000000000003',
    holding: true,
    failover,
    promoteRequested: () => false,
    serverAlive: () => true,
  });

  it('holds a mendable failure, says it once, and goes on when the attempt succeeds', async () => {
    const log = recorder();
    let tries = 0;
    const outcome = await holdingFailures(base(log), async () => {
      if (++tries < 3) throw new StoreError('transient', 'connection reset');
      return 'restored';
    });
    expect(outcome).toBe('restored');
    expect(tries).toBe(3);
    expect(log.lines.filter((l) => l.startsWith('error'))).toHaveLength(1); // the same cause, said once
    expect(log.lines[0]).toMatch(/cannot restore 000000010000000000000003: store unreachable or failing: connection reset .*; holding: under recovery\.signal/);
    expect(log.lines.at(-1)).toMatch(/going on after \d+ s of holding/);
  }, 10_000);

  it('says it again at once when the cause changes', async () => {
    const log = recorder();
    const failures = [new StoreError('denied', 'AccessDenied'), new WalbridgeError('corrupt', 'bit flipped')];
    await holdingFailures(base(log), async () => {
      const next = failures.shift();
      if (next) throw next;
      return 'restored';
    });
    expect(log.lines.filter((l) => l.startsWith('error'))).toHaveLength(2);
  }, 10_000);

  it('stops (exit 200) on what nothing outside can mend, without trying again', async () => {
    let tries = 0;
    const err = await holdingFailures(base(recorder()), async () => {
      tries++;
      throw new WalbridgeError('config', 'bad WALBRIDGE_TIMEOUT "x"');
    }).catch((e: unknown) => e as WalbridgeError);
    expect(tries).toBe(1);
    expect((err as WalbridgeError).exitCode).toBe(ExitCode.stopServer);
  });

  it('answers "not found" while holding only for a failover someone asked for', async () => {
    const failover = failoverSwitch();
    setTimeout(() => failover.request(), 200);
    const started = Date.now();
    const outcome = await holdingFailures(base(recorder(), failover), async () => {
      throw new StoreError('transient', 'black hole');
    });
    expect(outcome).toBe('not-found');
    expect(Date.now() - started).toBeLessThan(1500); // the pause is cut short
  });

  it('without holding (standby.signal, --no-wait), a failure ends the call with its own status', async () => {
    const err = new StoreError('denied', '403');
    await expect(holdingFailures({ ...base(recorder()), holding: false }, async () => Promise.reject(err))).rejects.toBe(err);
  });

  it('stops when the server that asked is gone', async () => {
    let alive = true;
    const err = await holdingFailures({ ...base(recorder()), serverAlive: () => alive }, async () => {
      alive = false;
      throw new StoreError('transient', 'reset');
    }).catch((e: unknown) => e as WalbridgeError);
    expect((err as WalbridgeError).exitCode).toBe(ExitCode.stopServer);
    expect((err as WalbridgeError).message).toMatch(/the server that asked for .* is gone/);
  }, 10_000);
});

describe('waitsUnderRecoverySignal', () => {
  it('finds the data directory from %p or the working directory, and honours --no-wait and standby.signal; bin/launch.js (which cannot load the bundle) agrees', async () => {
    // @ts-expect-error: plain JavaScript, outside the TypeScript project
    const { waitingUnderRecoverySignal } = (await import('../../bin/launch.js')) as {
      waitingUnderRecoverySignal: (exe: string, argv: string[], cwd: string) => string | undefined;
    };
    const both = (argv: string[], cwd: string) => {
      const verdict = waitsUnderRecoverySignal(argv, cwd);
      expect(waitingUnderRecoverySignal('archive-fetch', argv, cwd) !== undefined, argv.join(' ')).toBe(verdict);
      expect(waitingUnderRecoverySignal('walbridge', ['fetch', ...argv], cwd) !== undefined).toBe(verdict);
      expect(waitingUnderRecoverySignal('archive-push', argv, cwd)).toBeUndefined();
      return verdict;
    };
    const dir = await scratchDir('wb-hold-');
    await mkdir(path.join(dir, 'pg_wal'));
    const argv = ['000000010000000000000001', path.join(dir, 'pg_wal', 'RECOVERYXLOG')];
    expect(both(argv, '/')).toBe(false);
    await writeFile(path.join(dir, 'recovery.signal'), '');
    expect(both(argv, '/')).toBe(true);
    expect(both(['--bogus'], dir)).toBe(true); // unparsable arguments: PostgreSQL's working directory
    expect(both(['--no-wait', ...argv], '/')).toBe(false);
    await writeFile(path.join(dir, 'standby.signal'), '');
    expect(both(argv, '/')).toBe(false);
  });
});

describe('leftover triggers', () => {
  const trigger = (mode: 'smart' | 'fast', createdAt: string, target = 'all'): Trigger => ({ format: 1, mode, target, createdAt, createdBy: 'postgres@db1' });

  it('obeys a trigger that was not there at the first look, whatever the clocks say; fast wins', () => {
    const old = trigger('smart', '2026-12-01T10:00:00.000Z');
    // Written later by a host whose clock is behind the standby's: still a new one.
    const fresh = trigger('fast', '2020-01-01T00:00:00.000Z', 's1');
    expect(choose([old, fresh], new Set([triggerId(old)]))).toEqual({ obey: fresh, leftovers: [old] });
    expect(choose([old], new Set([triggerId(old)]))).toEqual({ obey: undefined, leftovers: [old] });
    expect(choose([old, trigger('fast', old.createdAt)], new Set())).toMatchObject({ obey: { mode: 'fast' } });
  });

  it('takes a trigger written again for a new one', () => {
    const first = trigger('smart', '2026-12-01T10:00:00.000Z');
    const again = trigger('smart', '2026-12-01T10:05:00.000Z');
    expect(choose([again], new Set([triggerId(first)])).obey).toEqual(again);
  });
});
