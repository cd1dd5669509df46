/** The README's configuration and exit-code tables must name every setting and status there is. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config/settings.js';
import { ExitCode } from '../../src/errors.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it.each(SETTINGS.map((d) => [d.key, d.env]))('documents --%s and %s', (key, env) => {
    expect(readme).toContain(`| \`--${key}\` | \`${env}\` |`);
  });

  it.each(Object.entries(ExitCode))('documents exit status %s (%i)', (_kind, code) => {
    expect(readme).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
  });

  it('has the two set-up commands, and CI runs the test one', () => {
    const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');
    const testCommand = './scripts/install-deps test && npm ci && npm test';
    expect(readme).toContain('./scripts/install-deps demo && npm ci && npm run demo');
    expect(readme).toContain(testCommand);
    expect(ci).toContain(testCommand);
  });
});
