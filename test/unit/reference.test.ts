/**
 * deploy/'s reference documents are made from the command definitions and the settings table
 * (src/cli/reference.ts): the committed files must be what they make. After a change to a
 * command or a setting: npx vitest run test/unit/reference.test.ts -u
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildProgram, type Executable } from '../../src/cli/main.js';
import { manPage, sampleConfig } from '../../src/cli/reference.js';
import { resolveSettings } from '../../src/config/settings.js';
import { scratchDir } from '../support/scratch.js';

const deploy = (file: string) => path.resolve(import.meta.dirname, '../../deploy', file);
const version = (JSON.parse(readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string }).version;

describe('deploy/', () => {
  it.each([
    'walbridge',
    'archive-push',
    'archive-fetch',
  ] as Executable[])('man/%s.1 is made from the commands, and man reads it without a warning', async (executable) => {
    const page = manPage(await buildProgram(executable, () => undefined), version);
    await expect(page).toMatchFileSnapshot(deploy(`man/${executable}.1`));
    const check = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z'], { input: page, encoding: 'utf8' });
    expect(check.error).toBeUndefined();
    expect(check.stderr).toBe('');
  });

  it('walbridge.conf lists every setting, and its defaults, uncommented, are a valid config file', async () => {
    const text = sampleConfig();
    await expect(text).toMatchFileSnapshot(deploy('walbridge.conf'));
    const defaults = text
      .split('\n')
      .filter((l) => /^# [a-z0-9-]+ = [^<]/.test(l))
      .map((l) => l.slice(2));
    const file = path.join(await scratchDir('wb-sample-'), 'walbridge.conf');
    writeFileSync(file, `repo = file:///tmp/x\nnamespace = n\n${defaults.join('\n')}\n`);
    const settings = await resolveSettings({ flags: { config: file }, env: {} });
    expect(settings).toMatchObject({ compress: 'zstd', timeout: 60, prefetch: 8 });
  });
});
