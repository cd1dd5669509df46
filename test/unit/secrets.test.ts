/** The leak check every runCli call makes (test/support/cli.ts) finds what it must, and only that. */
import { describe, expect, it } from 'vitest';
import { leakedSecrets } from '../support/cli.js';

describe('secret leak check', () => {
  const env = { AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG', AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE', WALBRIDGE_ENCRYPTION_KEY: 'c2VjcmV0LWtleS1ieXRlcw==', AWS_SESSION_TOKEN: 'FwoGZXIvYXdzEJr' };

  it('finds secret values in output, by the variable that held them', () => {
    expect(leakedSecrets(env, 'ERROR: access denied for wJalrXUtnFEMI/K7MDENG')).toEqual(['AWS_SECRET_ACCESS_KEY']);
    expect(leakedSecrets(env, 'token FwoGZXIvYXdzEJr and key c2VjcmV0LWtleS1ieXRlcw==')).toEqual(['WALBRIDGE_ENCRYPTION_KEY', 'AWS_SESSION_TOKEN']);
  });

  it('does not count identifiers that are not secrets, nor clean output', () => {
    expect(leakedSecrets(env, 'access key AKIAIOSFODNN7EXAMPLE refused')).toEqual([]);
    expect(leakedSecrets(env, 'archive-push: archived 000000010000000000000001')).toEqual([]);
  });
});
