/**
 * `--metrics-file` for `walbridge stream`: the primary's flush position, how far the stream has
 * shipped, the lag between them, whether it is failing, and a heartbeat, written every few seconds
 * while it runs, so that a streamer that died (or hangs) shows as a heartbeat growing old, even
 * while an idle primary gives it nothing to ship.
 */
import type { Logger } from '../log.js';
import { ownLabels, type Owner, type Samples, updateMetricsFile } from './textfile.js';

/** What one pass of the streamer saw: positions as LSNs (bytes), undefined before the first. */
export interface StreamPass {
  readonly flush: bigint | undefined;
  readonly shipped: bigint | undefined;
  readonly failing: boolean;
}

/** Written at most this often (and at once when failing starts or stops). */
const WRITE_EVERY_MS = 5_000;

/** The stream's samples after a pass at `at` (Unix seconds). */
export function withStreamPass(samples: Samples, owner: Owner, pass: StreamPass, at: number): Samples {
  const out = new Map(samples);
  const labels = ownLabels('stream', owner);
  if (pass.flush !== undefined) out.set(`walbridge_stream_flush_position_bytes{${labels}}`, Number(pass.flush));
  if (pass.shipped !== undefined) out.set(`walbridge_stream_shipped_position_bytes{${labels}}`, Number(pass.shipped));
  if (pass.flush !== undefined && pass.shipped !== undefined) {
    out.set(`walbridge_stream_lag_bytes{${labels}}`, Math.max(0, Number(pass.flush - pass.shipped)));
  }
  out.set(`walbridge_stream_failing{${labels}}`, pass.failing ? 1 : 0);
  out.set(`walbridge_stream_heartbeat_timestamp_seconds{${labels}}`, at);
  return out;
}

/** The samples without `owner`'s stream series. */
export function withoutStream(samples: Samples, owner: Owner): Samples {
  const labels = ownLabels('stream', owner);
  return new Map([...samples].filter(([key]) => !(key.startsWith('walbridge_stream_') && key.includes(`{${labels}}`))));
}

/** Reports the streamer's passes into `file` (--metrics-file), if set; `flush()` writes the last one. */
export function streamMeter(file: string | undefined, owner: Owner, log: Logger) {
  let last: StreamPass | undefined;
  let writtenAt = 0;
  let writing: Promise<void> = Promise.resolve();
  const write = (pass: StreamPass) => {
    writtenAt = Date.now();
    writing = writing.then(() => updateMetricsFile(file!, (samples) => withStreamPass(samples, owner, pass, Math.round(Date.now() / 1000)), log));
  };
  return {
    pass(pass: StreamPass): void {
      if (!file) return;
      const changed = last === undefined || last.failing !== pass.failing;
      last = pass;
      if (changed || Date.now() - writtenAt >= WRITE_EVERY_MS) write(pass);
    },
    async flush(): Promise<void> {
      if (file && last) write(last);
      await writing;
    },
    /** This server is no longer the namespace's primary (fenced): its stream series go, rather than age into "streamer down". */
    async retire(): Promise<void> {
      last = undefined;
      await writing;
      if (file) await updateMetricsFile(file, (samples) => withoutStream(samples, owner), log);
    },
  };
}
