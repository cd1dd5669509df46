/** Runs in every test file: what the background processes logged since the last call is checked too. */
import { afterAll, expect } from 'vitest';
import { backgroundLogLeaks } from '../support/cli.js';

afterAll(() => {
  expect(backgroundLogLeaks()).toEqual([]);
});
