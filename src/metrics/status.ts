/**
 * `walbridge status --metrics-file`: the bucket's own view, for a timer to write every minute or
 * so: how far the archive reaches and when its newest segment was stored, the problems the listing
 * shows, and every failover trigger present (a trigger left behind fails over the next standby that
 * reaches it).
 */
import type { Logger } from '../log.js';
import { ownLabels, type Samples, updateMetricsFile } from './textfile.js';

export interface StatusReading {
  readonly namespace: string;
  /** End (LSN, in bytes) of the furthest archived segment. */
  readonly archivedEnd: bigint;
  readonly newestSegmentAt: Date | undefined;
  readonly problems: number;
  readonly triggers: readonly { readonly mode: string; readonly target: string }[];
}

/** The status samples at `at` (Unix seconds); triggers gone since the last reading go with their series. */
export function withStatus(samples: Samples, reading: StatusReading, at: number): Samples {
  const out = new Map(samples);
  const labels = ownLabels('status', reading);
  for (const key of out.keys()) if (key.startsWith(`walbridge_trigger_present{${labels},`)) out.delete(key);
  // A trigger's fields come from the bucket: only characters a label value needs no escaping for.
  const label = (value: string) => value.replace(/[^A-Za-z0-9._-]/g, '_');
  for (const t of reading.triggers) out.set(`walbridge_trigger_present{${labels},mode="${label(t.mode)}",target="${label(t.target)}"}`, 1);
  if (reading.archivedEnd > 0n) out.set(`walbridge_archived_position_bytes{${labels}}`, Number(reading.archivedEnd));
  if (reading.newestSegmentAt) out.set(`walbridge_newest_segment_timestamp_seconds{${labels}}`, Math.round(reading.newestSegmentAt.getTime() / 1000));
  out.set(`walbridge_status_problems{${labels}}`, reading.problems);
  out.set(`walbridge_status_timestamp_seconds{${labels}}`, at);
  return out;
}

/** Writes the reading into `file`. Never throws. */
export function recordStatus(file: string, reading: StatusReading, log: Logger): Promise<void> {
  return updateMetricsFile(file, (samples) => withStatus(samples, reading, Math.round(Date.now() / 1000)), log);
}
