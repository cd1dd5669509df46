/** A background process serves only calls configured as it is; a decline says what differs. */
import { describe, expect, it } from 'vitest';
import { fingerprint, fingerprintDifference } from '../../src/archive/background/client.js';

describe('fingerprint', () => {
  const settings = { namespace: 'a', timeout: 60 };
  const env = { AWS_REGION: 'eu-west-1', HOME: '/var/lib/postgresql', PGDATA: '/x' };
  const base = fingerprint(settings, env, '100:5');

  it('is the same for the same configuration, whatever else the environment holds', () => {
    expect(fingerprint({ ...settings }, { ...env, PGDATA: '/y', WALBRIDGE_CALL_KEY: 'k' }, '100:5')).toBe(base);
  });

  it('names each part that differs, and holds no setting or variable in the clear', () => {
    expect(fingerprintDifference(base, fingerprint({ ...settings, timeout: 61 }, env, '100:5'))).toBe('settings');
    expect(fingerprintDifference(base, fingerprint(settings, { ...env, AWS_REGION: 'us-east-1' }, '100:5'))).toBe('environment');
    expect(fingerprintDifference(base, fingerprint(settings, env, undefined))).toBe('PostgreSQL server');
    expect(fingerprintDifference(base, fingerprint({ ...settings, namespace: 'b' }, { ...env, HOME: '/root' }, '101:5'))).toBe(
      'settings, environment and PostgreSQL server',
    );
    expect(fingerprintDifference(base, base)).toBe('nothing');
    expect(base).not.toMatch(/eu-west-1|postgresql/);
  });
});
