/** `walbridge stream` beside a test or benchmark primary, as its cluster's OS user. */
import { clusterEnv, runAsClusterUser, type PgCluster, type RunResult } from '../servers/postgres.js';

export interface Streamer {
  readonly exited: Promise<RunResult>;
  /** SIGTERM, as systemd stops it; resolves with its result (runuser, in between, reports the signal as its own end). */
  stop(): Promise<RunResult>;
}

/** Streamers not stopped yet: a test that fails midway must not leave one running. */
const running = new Set<Streamer>();

/** Stops every streamer still running (afterAll of a test file, before its clusters go). */
export async function stopAllStreamers(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop().catch(() => undefined)));
}

export function startStream(primary: PgCluster, env: Record<string, string>, intervalSeconds: number): Streamer {
  let signal: (s: NodeJS.Signals) => void = () => undefined;
  const exited = runAsClusterUser('walbridge', ['stream', primary.dataDir], {
    env: clusterEnv({ ...env, ...primary.connectionEnv(), WALBRIDGE_STREAM_INTERVAL: String(intervalSeconds) }),
    timeoutMs: 600_000,
    started: (s) => (signal = s),
  });
  const streamer: Streamer = {
    exited,
    stop: async () => {
      signal('SIGTERM');
      return exited;
    },
  };
  running.add(streamer);
  void exited.finally(() => running.delete(streamer)).catch(() => undefined);
  return streamer;
}
