/** The leak check every runCli call makes (test/support/cli.ts) finds what it must, and only that. */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backgroundLogLeaks, leakedSecrets, rememberBackgroundLogs } from '../support/cli.js';
import { scratchDir } from '../support/scratch.js';

describe('secret leak check', () => {
  const env = {
    AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG',
    AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
    WALBRIDGE_ENCRYPTION_KEY: 'c2VjcmV0LWtleS1ieXRlcw==',
    AWS_SESSION_TOKEN: 'FwoGZXIvYXdzEJr',
  };

  it('finds secret values in output, by the variable that held them', () => {
    expect(leakedSecrets(env, 'ERROR: access denied for wJalrXUtnFEMI/K7MDENG')).toEqual(['AWS_SECRET_ACCESS_KEY']);
    expect(leakedSecrets(env, 'token FwoGZXIvYXdzEJr and key c2VjcmV0LWtleS1ieXRlcw==')).toEqual(['WALBRIDGE_ENCRYPTION_KEY', 'AWS_SESSION_TOKEN']);
  });

  it('does not count identifiers that are not secrets, nor clean output', () => {
    expect(leakedSecrets(env, 'access key AKIAIOSFODNN7EXAMPLE refused')).toEqual([]);
    expect(leakedSecrets(env, 'archive-push: archived 000000010000000000000001')).toEqual([]);
  });

  it("finds other secrets a test names (a key file's content)", () => {
    expect(leakedSecrets({}, 'key is 0123456789abcdef', ['0123456789abcdef'])).toEqual(['secret #1 of the test']);
  });

  it("reads the background processes' logs next to the files the calls named", async () => {
    const pgWal = await scratchDir('wb-secrets-');
    rememberBackgroundLogs([path.join(pgWal, '000000010000000000000001'), 'not-a-path'], env, ['file-key-material']);
    expect(backgroundLogLeaks()).toEqual([]); // no log yet
    await mkdir(path.join(pgWal, 'walbridge'));
    await writeFile(path.join(pgWal, 'walbridge', 'pusher.log'), 'walbridge pusher: using wJalrXUtnFEMI/K7MDENG and file-key-material\n');
    expect(backgroundLogLeaks()).toEqual([`${path.join(pgWal, 'walbridge', 'pusher.log')} holds the value of AWS_SECRET_ACCESS_KEY, secret #1 of the test`]);
    await rm(pgWal, { recursive: true }); // or this file's own end-of-file check would find it
  });
});
