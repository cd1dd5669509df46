/**
 * Log lines (src/log.ts): a call's as PostgreSQL's log shows them, a background process's with
 * time, pid and level, or one JSON object each. Written by a child process: the logger writes to
 * fd 2 synchronously.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN_DIR } from '../support/cli.js';

const LOG_MODULE = path.join(path.dirname(BIN_DIR), 'dist/log.js');

function linesOf(opts: { stamped?: boolean; format?: string; setTo?: string }): string[] {
  const script = `
    const { createLogger, setLogFormat } = await import(${JSON.stringify(LOG_MODULE)});
    ${opts.setTo ? `setLogFormat(${JSON.stringify(opts.setTo)});` : ''}
    const log = createLogger('walbridge pusher', { stamped: ${!!opts.stamped} });
    log.info('archived 000000010000000000000001');
    log.warn('slow\\nstore');
    log.error('cannot store: denied');
  `;
  const env = { ...process.env, WALBRIDGE_LOG_FORMAT: opts.format ?? '' };
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stderr.trimEnd().split('\n');
}

describe('log lines', () => {
  it("a call's: the program, the level where it is not plain information, one line each", () => {
    expect(linesOf({})).toEqual([
      'walbridge pusher: archived 000000010000000000000001',
      'walbridge pusher: WARNING: slow store',
      'walbridge pusher: ERROR: cannot store: denied',
    ]);
  });

  it("a background process's: ISO time, pid and level first", () => {
    const lines = linesOf({ stamped: true });
    const stamp = String.raw`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[\d+\] `;
    expect(lines[0]).toMatch(new RegExp(`${stamp}INFO walbridge pusher: archived 000000010000000000000001$`));
    expect(lines[1]).toMatch(new RegExp(`${stamp}WARNING walbridge pusher: slow store$`));
    expect(lines[2]).toMatch(new RegExp(`${stamp}ERROR walbridge pusher: cannot store: denied$`));
  });

  it('json: one object per line, from the environment at once or from the resolved setting', () => {
    for (const lines of [linesOf({ format: 'json', stamped: true }), linesOf({ setTo: 'json' })]) {
      const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(records.map((r) => [r['level'], r['program'], r['message']])).toEqual([
        ['info', 'walbridge pusher', 'archived 000000010000000000000001'],
        ['warning', 'walbridge pusher', 'slow store'],
        ['error', 'walbridge pusher', 'cannot store: denied'],
      ]);
      for (const r of records) {
        expect(r['time']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        expect(r['pid']).toEqual(expect.any(Number));
      }
    }
  });

  it('json covers usage errors too, read from the environment (no flag is parsed then)', () => {
    const r = spawnSync(path.join(BIN_DIR, 'walbridge'), ['status', '--bogus'], {
      env: { ...process.env, WALBRIDGE_CONFIG: '', WALBRIDGE_LOG_FORMAT: 'json' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stderr.trim())).toMatchObject({ level: 'error', program: 'walbridge status', message: "unknown option '--bogus'" });
  });
});
