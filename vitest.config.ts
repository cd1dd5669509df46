import { defineConfig } from 'vitest/config';

/**
 * Files that load the machine with many PostgreSQL servers at once (a dozen standbys, ten demo
 * runs, kill -9 and signal trials). They run first, two at a time among themselves, and never beside the
 * files that measure how soon something happens (a timeout kept, a standby caught up), which
 * a machine of two cores under that load would make late.
 */
const HEAVY = ['test/e2e/standby-holds.test.ts', 'test/e2e/lifetimes.test.ts', 'test/e2e/demo.test.ts'];
/** Loads the machine (pgbench at 500 tps) and measures how soon a standby catches up: alone, last. */
const ALONE = ['test/e2e/s3-restart.test.ts'];

export default defineConfig({
  test: {
    globalSetup: ['test/setup/global.ts'],
    setupFiles: ['test/setup/each-file.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Real servers (radosgw, PostgreSQL) are shared; two cores: keep parallelism modest.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
    // The S3 SDK's multi-line Node 20 notice, once per test file, buries real output.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    projects: [
      { extends: true, test: { name: 'heavy', include: HEAVY, sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'suite', include: ['test/**/*.test.ts'], exclude: [...HEAVY, ...ALONE], sequence: { groupOrder: 1 } } },
      { extends: true, test: { name: 'alone', include: ALONE, sequence: { groupOrder: 2 } } },
    ],
  },
});
