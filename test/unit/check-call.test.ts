/**
 * How `walbridge check` reads an archive_command / restore_command (src/cli/check.ts resolveCall):
 * the settings the call would resolve, with the server's environment and its data directory for
 * relative config files; walbridge run through another program is told apart from a command that
 * does not run it at all.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveCall } from '../../src/cli/check.js';
import { scratchDir } from '../support/scratch.js';

const env = { WALBRIDGE_CONFIG: '', WALBRIDGE_REPO: 'file:///srv/wal', WALBRIDGE_NAMESPACE: 'db1' };

describe('resolveCall', () => {
  it('resolves archive-push and walbridge push with the server environment, assignments and flags', async () => {
    const plain = await resolveCall('/usr/local/bin/archive-push %p', env, '/');
    expect(plain).toMatchObject({ calls: 'push', settings: { namespace: 'db1' } });
    expect(await resolveCall('exec archive-push --namespace db2 %p', env, '/')).toMatchObject({ calls: 'push', settings: { namespace: 'db2' } });
    expect(await resolveCall('WALBRIDGE_NAMESPACE=db3 env WALBRIDGE_PREFETCH=2 walbridge push %p', env, '/')).toMatchObject({
      calls: 'push',
      settings: { namespace: 'db3' },
    });
  });

  it('tells the wait mode and cleanup of archive-fetch', async () => {
    expect(await resolveCall('archive-fetch %f %p %r', env, '/')).toMatchObject({ calls: 'fetch', wait: true, cleanup: false });
    expect(await resolveCall('archive-fetch --no-wait --cleanup %f %p %r', env, '/')).toMatchObject({ calls: 'fetch', wait: false, cleanup: true });
  });

  it('finds a relative config file from the data directory, as PostgreSQL runs the command there', async () => {
    const dataDir = await scratchDir('wb-check-call-');
    await writeFile(path.join(dataDir, 'walbridge.conf'), 'namespace = from-config\n');
    const env = { WALBRIDGE_CONFIG: '', WALBRIDGE_REPO: 'file:///srv/wal' }; // a namespace variable would win over the file
    expect(await resolveCall('archive-push --config walbridge.conf %p', env, dataDir)).toMatchObject({ settings: { namespace: 'from-config' } });
    expect(await resolveCall('WALBRIDGE_CONFIG=walbridge.conf archive-push %p', env, dataDir)).toMatchObject({ settings: { namespace: 'from-config' } });
  });

  it('names walbridge run through another program as wrapped, not as a command that does not call it', async () => {
    expect(await resolveCall('nice -n 10 archive-push %p', env, '/')).toEqual({ calls: 'wrapped', runs: 'push', exe: 'archive-push', wrapper: 'nice' });
    expect(await resolveCall('/usr/bin/timeout 60 walbridge fetch %f %p', env, '/')).toEqual({
      calls: 'wrapped',
      runs: 'fetch',
      exe: 'walbridge fetch',
      wrapper: 'timeout',
    });
    expect(await resolveCall('env -i PATH=/usr/bin archive-push %p', env, '/')).toEqual({
      calls: 'wrapped',
      runs: 'push',
      exe: 'archive-push',
      wrapper: 'env',
    });
    expect(await resolveCall('cp %p /mnt/archive/%f', env, '/')).toEqual({ calls: 'other', why: 'it runs cp' });
    // Only a program that runs a command: a path that names walbridge is not a call of it.
    expect(await resolveCall('cp %p /srv/archive-push', env, '/')).toEqual({ calls: 'other', why: 'it runs cp' });
    expect(await resolveCall('archive-push %p || true', env, '/')).toMatchObject({ calls: 'other' });
    expect(await resolveCall('', env, '/')).toMatchObject({ calls: 'other' });
  });

  it('says what does not resolve, without quoting the command line', async () => {
    const unknown = await resolveCall('SECRET=hunter2 archive-push --bogus %p', env, '/');
    expect(unknown).toEqual({ calls: 'push', problem: 'unknown option --bogus' });
    const noRepo = await resolveCall('archive-push %p', { WALBRIDGE_CONFIG: '' }, '/');
    expect(noRepo).toMatchObject({ calls: 'push', problem: expect.stringMatching(/repo/i) });
    expect(JSON.stringify([unknown, noRepo])).not.toContain('hunter2');
  });
});
