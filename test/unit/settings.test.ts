import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRepoUrl } from '../../src/config/repo-url.js';
import { resolveSettings } from '../../src/config/settings.js';
import { WalbridgeError } from '../../src/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'wb-settings-'));
function configFile(text: string): string {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
  writeFileSync(file, text);
  return file;
}

function failure(fn: () => unknown): WalbridgeError {
  try {
    fn();
  } catch (err) {
    if (err instanceof WalbridgeError) return err;
    throw err;
  }
  throw new Error('expected a WalbridgeError');
}

describe('repository URLs', () => {
  it('parses the three schemes', () => {
    expect(parseRepoUrl('s3://my-bucket/a/b/')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: 'a/b' });
    expect(parseRepoUrl('gs://bkt')).toEqual({ scheme: 'gs', bucket: 'bkt', prefix: '' });
    expect(parseRepoUrl('file:///var/lib/wal/')).toEqual({ scheme: 'file', directory: '/var/lib/wal' });
  });
  it.each(['bucket/x', 'http://x', 's3://', 's3://b/../x', 's3://b//x', 'file://relative/dir', 's3://bu\ncket', 'S3://b'])('refuses %j', (url) => {
    expect(typeof parseRepoUrl(url)).toBe('string');
  });
});

describe('resolveSettings', () => {
  it('prefers flags to the environment, and the environment to the config file', () => {
    const config = configFile('repo = file:///from/file\nnamespace = filens\ncompress = gzip\n# comment\ntimeout = 7\n');
    const env = { WALBRIDGE_CONFIG: config, WALBRIDGE_NAMESPACE: 'envns' };
    const s = resolveSettings({ flags: { namespace: 'flagns' }, env });
    expect(s.namespace).toBe('flagns');
    expect(s.repo).toEqual({ scheme: 'file', directory: '/from/file' });
    expect(s.compress).toBe('gzip');
    expect(s.timeout).toBe(7);
    expect(resolveSettings({ flags: {}, env }).namespace).toBe('envns');
    expect(resolveSettings({ flags: { config }, env: {} }).namespace).toBe('filens');
  });

  it('has safe defaults for everything but repo and namespace', () => {
    const s = resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n' }, env: {} });
    expect(s).toMatchObject({ compress: 'zstd', timeout: 60, s3PathStyle: false, s3Checksum: 'when-required' });
  });

  it('reads booleans from flags and the environment', () => {
    expect(resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n', 's3-path-style': true }, env: {} }).s3PathStyle).toBe(true);
    expect(resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n' }, env: { WALBRIDGE_S3_PATH_STYLE: '1' } }).s3PathStyle).toBe(true);
  });

  it.each([
    [{}, {}, /no repository/],
    [{ repo: 'ftp://x' }, {}, /bad repository/],
    [{ repo: 's3://bkt' }, {}, /no namespace/],
    [{ repo: 's3://bkt', namespace: '../x' }, {}, /namespace/],
    [{ repo: 's3://bkt', namespace: 'n', compress: 'brotli' }, {}, /compress/],
    [{ repo: 's3://bkt', namespace: 'n', timeout: '0' }, {}, /timeout/],
    [{ repo: 's3://bkt', namespace: 'n', compress: 'none', 'compress-level': '3' }, {}, /no levels/],
    [{ repo: 's3://bkt', namespace: 'n', 's3-checksum': 'crc' }, {}, /s3-checksum/],
    [{ repo: 's3://bkt', namespace: 'n' }, { WALBRIDGE_S3_PATH_STYLE: 'maybe' }, /WALBRIDGE_S3_PATH_STYLE/],
    [{ repo: 's3://bkt', namespace: 'n', 's3-endpoint': 'localhost:9000' }, {}, /http/],
  ])('refuses %j %j with a config error naming the setting', (flags, env, message) => {
    const err = failure(() => resolveSettings({ flags, env }));
    expect(err.kind).toBe('config');
    expect(err.message).toMatch(message);
  });

  it('refuses unknown keys and malformed lines in the config file, naming the line', () => {
    expect(failure(() => resolveSettings({ flags: { config: configFile('repo = s3://bkt\nrepoo = x\n') }, env: {} })).message).toMatch(
      /:2: unknown setting "repoo"/,
    );
    expect(failure(() => resolveSettings({ flags: { config: configFile('just words\n') }, env: {} })).message).toMatch(/:1: expected/);
    expect(failure(() => resolveSettings({ flags: { config: path.join(dir, 'missing.conf') }, env: {} })).message).toMatch(/cannot read config/);
  });

  it('reads encryption keys from a key file or the environment, never quoting a bad line', () => {
    const base = { repo: 'file:///r', namespace: 'n' };
    const key = Buffer.alloc(32, 7).toString('base64');
    const good = configFile(`${key}\n`);
    const fromFile = resolveSettings({ flags: { ...base, 'encryption-key-file': good }, env: {} });
    expect(fromFile.encryption?.ids).toHaveLength(1);
    expect(JSON.stringify(fromFile)).not.toContain(key);
    expect(resolveSettings({ flags: base, env: { WALBRIDGE_ENCRYPTION_KEY: key } }).encryption?.ids).toEqual(fromFile.encryption?.ids);
    expect(resolveSettings({ flags: base, env: {} }).encryption).toBeUndefined();

    const secretish = 'hunter2-is-not-a-key';
    const bad = configFile(`${key}\n${secretish}\n`);
    const badFile = failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': bad }, env: {} }));
    expect(badFile.message).toBe(`bad key file ${bad} (--encryption-key-file): line 2: not a key (expected 32 bytes as base64, e.g. from "openssl rand -base64 32", or 64 hex digits)`);
    expect(badFile.kind).toBe('config');
    expect(failure(() => resolveSettings({ flags: base, env: { WALBRIDGE_ENCRYPTION_KEY: secretish } })).message).not.toContain(secretish);
    expect(failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': good }, env: { WALBRIDGE_ENCRYPTION_KEY: key } })).message).toMatch(
      /both --encryption-key-file and WALBRIDGE_ENCRYPTION_KEY are set/,
    );
    expect(failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': path.join(dir, 'none') }, env: {} })).message).toMatch(/cannot read it: ENOENT/);
    expect(failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': 'keys' }, env: {} })).message).toMatch(/give an absolute path/);
  });
});
