/**
 * WAL file names as PostgreSQL writes them (xlog_internal.h), parsed strictly.
 *
 * A name that does not match one of these forms is refused everywhere: it is the
 * only defence needed against hostile `%f` values (`../x`, `/abs`, NUL bytes),
 * because nothing else can ever reach a path or an object key.
 */

import { WalbridgeError } from '../errors.js';

export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

export interface WalFileName {
  readonly name: string;
  readonly kind: WalFileKind;
  readonly timeline: number;
  /** The 16 hex digits after the timeline (log + segment); absent for `.history`. */
  readonly position?: string;
  readonly log?: number;
  readonly seg?: number;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const BACKUP = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

/** Parses a WAL file name; returns undefined for anything PostgreSQL would not archive. */
export function parseWalFileName(name: string): WalFileName | undefined {
  if (name.length > 40) return undefined; // fast reject before running any regex on junk
  const history = HISTORY.exec(name);
  if (history) {
    const timeline = parseInt(history[1]!, 16);
    return timeline === 0 ? undefined : { name, kind: 'history', timeline };
  }
  for (const [kind, pattern] of [
    ['segment', SEGMENT],
    ['partial', PARTIAL],
    ['backup', BACKUP],
  ] as const) {
    const m = pattern.exec(name);
    if (!m) continue;
    const timeline = parseInt(m[1]!, 16);
    if (timeline === 0) return undefined;
    return {
      name,
      kind,
      timeline,
      position: m[2]! + m[3]!,
      log: parseInt(m[2]!, 16),
      seg: parseInt(m[3]!, 16),
    };
  }
  return undefined;
}

/** Segments per "xlogid" (the log part of a name) for a segment size, as XLogSegmentsPerXLogId. */
export function segmentsPerLogId(segmentSize: number): number {
  return 0x1_0000_0000 / segmentSize;
}

/** The segment number (XLogSegNo) a segment/partial/backup name denotes. */
export function segmentNumber(file: WalFileName, segmentSize: number): bigint {
  if (file.log === undefined || file.seg === undefined) {
    throw new Error(`${file.name} does not name a segment`);
  }
  return BigInt(file.log) * BigInt(segmentsPerLogId(segmentSize)) + BigInt(file.seg);
}

/** True when the segment part of a name is valid for this segment size (e.g. <= 0xFF at 16 MiB). */
export function segmentFitsSize(file: WalFileName, segmentSize: number): boolean {
  return file.seg === undefined || file.seg < segmentsPerLogId(segmentSize);
}

/** The name of the segment with this timeline and segment number (XLogFileName). */
export function formatSegmentName(timeline: number, segno: bigint, segmentSize: number): string {
  const perId = BigInt(segmentsPerLogId(segmentSize));
  return hex8(timeline) + hex8(Number(segno / perId)) + hex8(Number(segno % perId));
}

/** The next segment on the same timeline, or undefined if `name` is not a plain segment. */
export function nextSegmentName(name: string, segmentSize: number): string | undefined {
  const file = parseWalFileName(name);
  if (!file || file.kind !== 'segment') return undefined;
  return formatSegmentName(file.timeline, segmentNumber(file, segmentSize) + 1n, segmentSize);
}

/**
 * pg_archivecleanup's rule: `name` is older than `restart` when its log/segment part sorts
 * before the restart file's, whatever the timelines. Only segments and partials qualify;
 * `.backup` files qualify only when asked; `.history` files never do.
 */
export function precedesRestartPoint(name: string, restart: WalFileName, opts: { includeBackup?: boolean } = {}): boolean {
  const file = parseWalFileName(name);
  if (!file || file.position === undefined || restart.position === undefined) return false;
  if (file.kind === 'history') return false;
  if (file.kind === 'backup' && !opts.includeBackup) return false;
  return file.position < restart.position;
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

/** Validates `%f` strictly: only names PostgreSQL itself asks for can reach the store or a path. */
export function parseRequestedName(name: string): WalFileName {
  const file = parseWalFileName(name);
  if (!file) {
    throw new WalbridgeError('badName', `refusing to restore ${JSON.stringify(name)}: not a WAL file name (a segment, .partial, .history or .backup file)`);
  }
  return file;
}
