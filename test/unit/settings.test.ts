import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRepoUrl } from '../../src/storage/registry.js';
import { resolveSettings } from '../../src/config/settings.js';
import { WalbridgeError } from '../../src/errors.js';
import { scratchRoot } from '../support/scratch.js';

const dir = mkdtempSync(path.join(scratchRoot(), 'wb-settings-'));
function configFile(text: string): string {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
  writeFileSync(file, text);
  return file;
}

async function failure(fn: () => Promise<unknown>): Promise<WalbridgeError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof WalbridgeError) return err;
    throw err;
  }
  throw new Error('expected a WalbridgeError');
}

describe('repository URLs', () => {
  it('parses the three schemes', async () => {
    expect(parseRepoUrl('s3://my-bucket/a/b/')).toEqual({ scheme: 's3', bucket: 'my-bucket', prefix: 'a/b' });
    expect(parseRepoUrl('gs://bkt')).toEqual({ scheme: 'gs', bucket: 'bkt', prefix: '' });
    expect(parseRepoUrl('file:///var/lib/wal/')).toEqual({ scheme: 'file', directory: '/var/lib/wal' });
  });
  it.each(['bucket/x', 'http://x', 's3://', 's3://b/../x', 's3://b//x', 'file://relative/dir', 's3://bu\ncket', 'S3://b'])('refuses %j', async (url) => {
    expect(typeof parseRepoUrl(url)).toBe('string');
  });
  it('decodes %-escapes in a file:// path', () => {
    expect(parseRepoUrl('file:///var/lib/my%20wal')).toEqual({ scheme: 'file', directory: '/var/lib/my wal' });
  });
  it.each([
    ['file:///a%zz', /malformed %-escape/],
    ['file:///a%', /malformed %-escape/],
    ['file:///a%00b', /control characters/],
    ['file:///a%0Ab', /control characters/],
    ['file:///a%1b', /control characters/],
    ['file:///', /root directory/],
    ['file:////', /root directory/],
    ['file:///var/..', /root directory/],
    ['file:///a/%2e%2e/', /root directory/],
  ])('refuses %j with a reason', (url, reason) => {
    expect(parseRepoUrl(url)).toMatch(reason);
  });
  it('makes a bad file:// URL a one-line config error (exit 3), never an internal error', async () => {
    const err = await failure(() => resolveSettings({ flags: { repo: 'file:///a%zz', namespace: 'n' }, env: {} }));
    expect(err.exitCode).toBe(3);
    expect(err.message).toMatch(/^bad repository "file:\/\/\/a%zz" \(--repo\): it has a malformed %-escape/);
    expect(err.message).not.toContain('\n');
  });
});

describe('resolveSettings', () => {
  it('prefers flags to the environment, and the environment to the config file', async () => {
    const config = configFile('repo = file:///from/file\nnamespace = filens\ncompress = gzip\n# comment\ntimeout = 7\n');
    const env = { WALBRIDGE_CONFIG: config, WALBRIDGE_NAMESPACE: 'envns' };
    const s = await resolveSettings({ flags: { namespace: 'flagns' }, env });
    expect(s.namespace).toBe('flagns');
    expect(s.repo).toEqual({ scheme: 'file', directory: '/from/file' });
    expect(s.compress).toBe('gzip');
    expect(s.timeout).toBe(7);
    expect((await resolveSettings({ flags: {}, env })).namespace).toBe('envns');
    expect((await resolveSettings({ flags: { config }, env: {} })).namespace).toBe('filens');
  });

  it('reads the default config file when no other is named and it exists; WALBRIDGE_CONFIG set empty reads none', async () => {
    const defaultConfig = configFile('repo = file:///from/default\nnamespace = defaultns\n');
    const other = configFile('repo = file:///from/other\nnamespace = otherns\n');
    expect((await resolveSettings({ flags: {}, env: {}, defaultConfig })).namespace).toBe('defaultns');
    expect((await resolveSettings({ flags: {}, env: { WALBRIDGE_CONFIG: other }, defaultConfig })).namespace).toBe('otherns');
    expect((await resolveSettings({ flags: { config: other }, env: {}, defaultConfig })).namespace).toBe('otherns');
    // Flags and the environment still win over it.
    expect((await resolveSettings({ flags: {}, env: { WALBRIDGE_NAMESPACE: 'envns' }, defaultConfig })).namespace).toBe('envns');
    const none = await failure(() => resolveSettings({ flags: {}, env: { WALBRIDGE_CONFIG: '' }, defaultConfig }));
    expect(none.message).toMatch(/no repository/);
    const absent = await failure(() => resolveSettings({ flags: {}, env: {}, defaultConfig: path.join(dir, 'absent', 'walbridge.conf') }));
    expect(absent.message).toMatch(/no repository/);
    // There but unreadable (a directory here): an error naming it, never skipped.
    const unreadable = await failure(() => resolveSettings({ flags: {}, env: {}, defaultConfig: dir }));
    expect(unreadable.message).toContain(`cannot read config file ${dir}`);
  });

  it('has safe defaults for everything but repo and namespace', async () => {
    const s = await resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n' }, env: {} });
    expect(s).toMatchObject({ compress: 'zstd', timeout: 60, storage: { pathStyle: false, checksum: 'when-required' } });
  });

  it('reads booleans from flags and the environment', async () => {
    expect((await resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n', 's3-path-style': true }, env: {} })).storage).toMatchObject({ pathStyle: true });
    expect((await resolveSettings({ flags: { repo: 's3://bkt', namespace: 'n' }, env: { WALBRIDGE_S3_PATH_STYLE: '1' } })).storage).toMatchObject({
      pathStyle: true,
    });
  });

  it.each([
    [{}, {}, /no repository/],
    [{ repo: 'ftp://x' }, {}, /bad repository/],
    // The in-memory driver is for tests: a repository that vanishes with the process would lose WAL.
    [{ repo: 'memory://bkt', namespace: 'n' }, {}, /unknown scheme "memory:\/\/"/],
    [{ repo: 'file:///r', namespace: 'n', 's3-sse': 'AES256' }, {}, /applies to s3:\/\/ repositories only/],
    // Every driver checks its own settings, also where they do not apply today.
    [{ repo: 'gs://bkt', namespace: 'n' }, { WALBRIDGE_S3_CHECKSUM: 'crc' }, /WALBRIDGE_S3_CHECKSUM/],
    [{ repo: 'file:///r', namespace: 'n', 'gcs-endpoint': 'storage.example' }, {}, /gcs-endpoint.*http/],
    [{ repo: 's3://bkt' }, {}, /no namespace/],
    [{ repo: 's3://bkt', namespace: '../x' }, {}, /namespace/],
    [{ repo: 's3://bkt', namespace: 'n', compress: 'brotli' }, {}, /compress/],
    [{ repo: 's3://bkt', namespace: 'n', timeout: '0' }, {}, /timeout/],
    [{ repo: 's3://bkt', namespace: 'n', compress: 'none', 'compress-level': '3' }, {}, /no levels/],
    [{ repo: 's3://bkt', namespace: 'n', 's3-checksum': 'crc' }, {}, /s3-checksum/],
    [{ repo: 's3://bkt', namespace: 'n' }, { WALBRIDGE_S3_PATH_STYLE: 'maybe' }, /WALBRIDGE_S3_PATH_STYLE/],
    [{ repo: 's3://bkt', namespace: 'n', 's3-endpoint': 'localhost:9000' }, {}, /http/],
  ])('refuses %j %j with a config error naming the setting', async (flags, env, message) => {
    const err = await failure(() => resolveSettings({ flags, env }));
    expect(err.kind).toBe('config');
    expect(err.message).toMatch(message);
  });

  describe('server-side encryption', async () => {
    const s3 = { repo: 's3://bkt/p', namespace: 'n' };
    const gs = { repo: 'gs://bkt/p', namespace: 'n' };
    const KEY = 'projects/my-project/locations/europe-west1/keyRings/wal/cryptoKeys/wal-key';

    it('asks for nothing unless told: the bucket default applies', async () => {
      expect(await resolveSettings({ flags: s3, env: {} })).toMatchObject({ storage: { sse: undefined, sseKmsKeyId: undefined } });
    });

    it('takes SSE-S3, SSE-KMS with or without a key, and a KMS key alone as SSE-KMS', async () => {
      expect(await resolveSettings({ flags: { ...s3, 's3-sse': 'AES256' }, env: {} })).toMatchObject({ storage: { sse: 'AES256', sseKmsKeyId: undefined } });
      expect(await resolveSettings({ flags: s3, env: { WALBRIDGE_S3_SSE: 'aws:kms' } })).toMatchObject({ storage: { sse: 'aws:kms', sseKmsKeyId: undefined } });
      for (const keyId of [
        '1234abcd-12ab-34cd-56ef-1234567890ab',
        'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
        'alias/wal',
        'minio-key',
      ]) {
        expect(await resolveSettings({ flags: s3, env: { WALBRIDGE_S3_SSE_KMS_KEY_ID: keyId } })).toMatchObject({
          storage: { sse: 'aws:kms', sseKmsKeyId: keyId },
        });
      }
      const config = configFile(`repo = s3://bkt\nnamespace = n\ns3-sse = aws:kms\ns3-sse-kms-key-id = alias/wal\n`);
      expect(await resolveSettings({ flags: { config }, env: {} })).toMatchObject({ storage: { sse: 'aws:kms', sseKmsKeyId: 'alias/wal' } });
    });

    it('takes a Cloud KMS crypto key name for GCS, also a domain-scoped project', async () => {
      expect((await resolveSettings({ flags: { ...gs, 'gcs-kms-key-name': KEY }, env: {} })).storage).toMatchObject({ kmsKeyName: KEY });
      const scoped = 'projects/example.com:wal-prod/locations/us/keyRings/r/cryptoKeys/k';
      expect((await resolveSettings({ flags: gs, env: { WALBRIDGE_GCS_KMS_KEY_NAME: scoped } })).storage).toMatchObject({ kmsKeyName: scoped });
    });

    it.each([
      [{ ...s3, 's3-sse': 'aes256' }, {}, /^bad --s3-sse "aes256": use AES256 \(SSE-S3\) or aws:kms \(SSE-KMS\)$/],
      [s3, { WALBRIDGE_S3_SSE: 'aws:kms:dsse' }, /^bad WALBRIDGE_S3_SSE "aws:kms:dsse"/],
      [
        s3,
        { WALBRIDGE_S3_SSE: 'AES256', WALBRIDGE_S3_SSE_KMS_KEY_ID: 'alias/wal' },
        /^WALBRIDGE_S3_SSE_KMS_KEY_ID names a KMS key, but WALBRIDGE_S3_SSE is AES256: use aws:kms or leave it unset$/,
      ],
      [{ ...s3, 's3-sse-kms-key-id': 'alias/my key' }, {}, /^bad --s3-sse-kms-key-id "alias\/my key": expected a KMS key id, key ARN or alias/],
      [{ ...s3, 's3-sse-kms-key-id': 'key\nX-Injected: 1' }, {}, /^bad --s3-sse-kms-key-id "key\\nX-Injected: 1"/],
      [
        { ...gs, 'gcs-kms-key-name': 'wal-key' },
        {},
        /^bad --gcs-kms-key-name "wal-key": expected projects\/PROJECT\/locations\/LOCATION\/keyRings\/RING\/cryptoKeys\/KEY$/,
      ],
      [
        gs,
        { WALBRIDGE_GCS_KMS_KEY_NAME: `${KEY}/cryptoKeyVersions/3` },
        /^bad WALBRIDGE_GCS_KMS_KEY_NAME ".*": expected .*cryptoKeys\/KEY without \/cryptoKeyVersions\/N/,
      ],
      [gs, { WALBRIDGE_GCS_KMS_KEY_NAME: 'projects/p/locations/us/keyRings/r' }, /^bad WALBRIDGE_GCS_KMS_KEY_NAME/],
      [gs, { WALBRIDGE_GCS_KMS_KEY_NAME: `${KEY}/` }, /^bad WALBRIDGE_GCS_KMS_KEY_NAME/],
      [gs, { WALBRIDGE_S3_SSE: 'AES256' }, /^WALBRIDGE_S3_SSE is set, but the repository is gs:\/\/; it applies to s3:\/\/ repositories only$/],
      [s3, { WALBRIDGE_GCS_KMS_KEY_NAME: KEY }, /^WALBRIDGE_GCS_KMS_KEY_NAME is set, but the repository is s3:\/\/; it applies to gs:\/\/ repositories only$/],
      [{ repo: 'file:///var/wal', namespace: 'n', 's3-sse-kms-key-id': 'alias/wal' }, {}, /^--s3-sse-kms-key-id is set, but the repository is file:\/\//],
    ])('refuses %j %j with one line naming the setting', async (flags, env, message) => {
      const err = await failure(() => resolveSettings({ flags, env }));
      expect(err.kind).toBe('config');
      expect(err.message).toMatch(message);
      expect(err.message).not.toContain('\n');
    });
  });

  it('refuses unknown keys and malformed lines in the config file, naming the line', async () => {
    expect((await failure(() => resolveSettings({ flags: { config: configFile('repo = s3://bkt\nrepoo = x\n') }, env: {} }))).message).toMatch(
      /:2: unknown setting "repoo"/,
    );
    expect((await failure(() => resolveSettings({ flags: { config: configFile('just words\n') }, env: {} }))).message).toMatch(/:1: expected/);
    expect((await failure(() => resolveSettings({ flags: { config: path.join(dir, 'missing.conf') }, env: {} }))).message).toMatch(/cannot read config/);
  });

  it('reads encryption keys from a key file or the environment, never quoting a bad line', async () => {
    const base = { repo: 'file:///r', namespace: 'n' };
    const key = Buffer.alloc(32, 7).toString('base64');
    const good = configFile(`${key}\n`);
    const fromFile = await resolveSettings({ flags: { ...base, 'encryption-key-file': good }, env: {} });
    expect(fromFile.encryption?.ids).toHaveLength(1);
    expect(JSON.stringify(fromFile)).not.toContain(key);
    expect((await resolveSettings({ flags: base, env: { WALBRIDGE_ENCRYPTION_KEY: key } })).encryption?.ids).toEqual(fromFile.encryption?.ids);
    expect((await resolveSettings({ flags: base, env: {} })).encryption).toBeUndefined();

    const secretish = 'hunter2-is-not-a-key';
    const bad = configFile(`${key}\n${secretish}\n`);
    const badFile = await failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': bad }, env: {} }));
    expect(badFile.message).toBe(
      `bad key file ${bad} (--encryption-key-file): line 2: not a key (expected 32 bytes as base64, e.g. from "openssl rand -base64 32", or 64 hex digits)`,
    );
    expect(badFile.kind).toBe('config');
    expect((await failure(() => resolveSettings({ flags: base, env: { WALBRIDGE_ENCRYPTION_KEY: secretish } }))).message).not.toContain(secretish);
    expect((await failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': good }, env: { WALBRIDGE_ENCRYPTION_KEY: key } }))).message).toMatch(
      /both --encryption-key-file and WALBRIDGE_ENCRYPTION_KEY are set/,
    );
    expect((await failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': path.join(dir, 'none') }, env: {} }))).message).toMatch(
      /cannot read it: ENOENT/,
    );
    expect((await failure(() => resolveSettings({ flags: { ...base, 'encryption-key-file': 'keys' }, env: {} }))).message).toMatch(
      /give the absolute path of the key file/,
    );
    // A key given where its file's path goes is never printed back.
    const given = await failure(() => resolveSettings({ flags: base, env: { WALBRIDGE_ENCRYPTION_KEY_FILE: key } }));
    expect(given.message).toBe('bad WALBRIDGE_ENCRYPTION_KEY_FILE: give the absolute path of the key file (the value is not shown: it may be a key)');
  });

  it('takes a postgresql:// URL for walbridge stream, never one with a password', async () => {
    const base = { repo: 'file:///r', namespace: 'n' };
    expect((await resolveSettings({ flags: { ...base, conninfo: 'postgresql://postgres@/postgres?host=/run/postgresql' }, env: {} })).conninfo).toBe(
      'postgresql://postgres@/postgres?host=/run/postgresql',
    );
    const withPassword = await failure(() => resolveSettings({ flags: { ...base, conninfo: 'postgresql://u:s3cr3t-pw@db/postgres' }, env: {} }));
    expect(withPassword.message).toBe('bad --conninfo: it holds a password; put it in ~/.pgpass (or PGPASSFILE) instead');
    expect(
      (await failure(() => resolveSettings({ flags: { ...base, conninfo: 'postgresql:///postgres?user=u&password=s3cr3t-pw' }, env: {} }))).message,
    ).toMatch(/holds a password/);
    // libpq's URL parser decodes parameter names too.
    expect(
      (await failure(() => resolveSettings({ flags: { ...base, conninfo: 'postgresql://u@/db?host=/tmp&pass%77ord=s3cr3t-pw' }, env: {} }))).message,
    ).toMatch(/holds a password/);
    expect((await failure(() => resolveSettings({ flags: base, env: { WALBRIDGE_CONNINFO: 'host=db user=u' } }))).message).toMatch(
      /expected a postgresql:\/\/ URL/,
    );
  });
});

describe('what a waiting restore_command may do with a settings failure (archive/restore/hold.ts)', () => {
  it("reads only the settings a command takes: a push-only typo in a shared file is not fetch's failure", async () => {
    const config = configFile('repo = file:///r\nnamespace = n\ncompress = zsdt\n');
    expect((await resolveSettings({ flags: { config }, env: {}, command: 'fetch' })).compress).toBe('zstd');
    const push = await failure(() => resolveSettings({ flags: { config }, env: {}, command: 'push' }));
    expect(push.message).toMatch(/^bad compress in .* "zsdt": use one of/);
  });

  it('marks a failure whose cause is in the config or key file as mendable outside the process, one of a flag or the environment not', async () => {
    const fromFile = await failure(() =>
      resolveSettings({ flags: { config: configFile('repo = file:///r\nnamespace = n\ntimeout = abc\n') }, env: {}, command: 'fetch' }),
    );
    expect(fromFile.mendableOutside).toBe(true);
    const fromFlag = await failure(() => resolveSettings({ flags: { repo: 'file:///r', namespace: 'n', timeout: 'abc' }, env: {}, command: 'fetch' }));
    expect(fromFlag.mendableOutside).toBe(false);
    const fromEnv = await failure(() => resolveSettings({ flags: { repo: 'file:///r', namespace: 'n' }, env: { WALBRIDGE_TIMEOUT: 'abc' }, command: 'fetch' }));
    expect(fromEnv.mendableOutside).toBe(false);
    // Missing from the file (it could be added there), a bad repository URL in it, an empty key file.
    expect((await failure(() => resolveSettings({ flags: { config: configFile('namespace = n\n') }, env: {} }))).mendableOutside).toBe(true);
    expect((await failure(() => resolveSettings({ flags: { config: configFile('repo = file:///a%zz\nnamespace = n\n') }, env: {} }))).mendableOutside).toBe(
      true,
    );
    const emptyKeys = configFile('');
    expect(
      (await failure(() => resolveSettings({ flags: { repo: 'file:///r', namespace: 'n', 'encryption-key-file': emptyKeys }, env: {} }))).mendableOutside,
    ).toBe(true);
    expect((await failure(() => resolveSettings({ flags: {}, env: {} }))).mendableOutside).toBe(false);
  });

  it('never blocks on a config or key file that is a FIFO: a one-line error at once', async () => {
    const fifo = path.join(dir, `fifo-${Math.random().toString(36).slice(2)}`);
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    const err = await failure(() => resolveSettings({ flags: { config: fifo }, env: {} }));
    expect(err.message).toBe(`cannot read config file ${fifo}: it is not a regular file (a FIFO, a device or a directory?)`);
    const keys = await failure(() => resolveSettings({ flags: { repo: 'file:///r', namespace: 'n', 'encryption-key-file': fifo }, env: {} }));
    expect(keys.message).toMatch(/cannot read it: it is not a regular file/);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
