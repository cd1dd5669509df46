import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
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
  },
});
