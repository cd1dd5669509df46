/**
 * Timeline histories in a namespace, and the fence they put up.
 *
 * A promotion creates timeline N+1 and archives `N+1.history`, whose lines say where each
 * ancestor timeline ended. WAL of an older timeline past that point is a dead branch: an old
 * primary started again after the failover writes it, and a standby still following the old
 * timeline would replay it (a split brain carried into the archive). So once a newer history is
 * in the namespace, archive-push and `walbridge stream` refuse an older timeline's WAL past its
 * fork point (exit 16), and `walbridge verify` reports any that is stored.
 *
 * Newer timelines are found as PostgreSQL finds them (findNewestTimeLine): by probing
 * `N+1.history`, `N+2.history`, … until one is absent. A healthy primary pays one lookup of an
 * absent object per push, made alongside its other lookups.
 */
import { describeContent, unseal, type ContentDescription } from '../../codec/envelope.js';
import type { KeyRing } from '../../codec/keys.js';
import { WalbridgeError } from '../../errors.js';
import { getIfPresent, StoreError, type Store } from '../../storage/store.js';
import { boundedSink } from '../../util/bounded-sink.js';
import { formatLsn } from '../../wal/header.js';
import { parseWalFileName, segmentNumber, type WalFileName } from '../../wal/names.js';
import { historyPrefix } from './layout.js';

/** One line of a timeline history file: the parent timeline and where this one branched off it. */
export interface HistoryEntry {
  readonly parent: number;
  readonly switchpoint: bigint;
}

/** Parses a `.history` file (`parentTLI <tab> X/X <tab> reason` lines, `#` comments); a string says what is wrong. */
export function parseHistory(text: string): HistoryEntry[] | string {
  const entries: HistoryEntry[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\d+)\s+([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})(\s|$)/.exec(line);
    if (!m) return `line ${i + 1} is not "parentTLI switchpoint reason": ${JSON.stringify(line.slice(0, 80))}`;
    entries.push({ parent: Number(m[1]), switchpoint: (BigInt(`0x${m[2]}`) << 32n) | BigInt(`0x${m[3]}`) });
  }
  return entries;
}

export function formatTimeline(timeline: number): string {
  return timeline.toString(16).toUpperCase().padStart(8, '0');
}

export function historyName(timeline: number): string {
  return `${formatTimeline(timeline)}.history`;
}

/**
 * A stored text object (a history file) decoded: its text, undefined if absent, or the problem
 * that keeps it from being read (damaged, encrypted with a key not given). Store failures throw.
 */
export async function readStoredText(store: Store, key: string, keys: KeyRing | undefined): Promise<string | { problem: string } | undefined> {
  const opened = await getIfPresent(store, key);
  if (!opened) return undefined;
  const described = describeContent(opened.info.metadata);
  // Without a usable description the bytes are read as they are: the history's parser judges them.
  const promised: ContentDescription = typeof described === 'string' ? { sha256: '', size: 0, codec: 'none' } : described;
  const chunks: Buffer[] = [];
  try {
    await unseal(opened.body, promised, () => boundedSink(chunks, 64 * 1024), { fileName: key.slice(key.lastIndexOf('/') + 1), keys });
  } catch (err) {
    opened.body.destroy();
    if (err instanceof StoreError) throw err;
    return { problem: (err as Error).message };
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Where `timeline` ended: the earliest switch point a newer timeline's history gives it. */
export interface Fork {
  readonly timeline: number;
  /** The newer timeline whose history says so. */
  readonly newer: number;
  readonly switchpoint: bigint;
}

/** Most newer timelines probed: far beyond any real namespace, a bound against a loop. */
const MAX_PROBES = 1000;

/**
 * The fork of `timeline` in the namespace, if a newer timeline branched off it. A newer
 * history that cannot be read or parsed fails closed (exit 16): it proves a promotion
 * happened, just not where, and guessing could let a dead branch in.
 */
export async function findFork(store: Store, namespace: string, timeline: number, keys: KeyRing | undefined): Promise<Fork | undefined> {
  let fork: Fork | undefined;
  for (let newer = timeline + 1; newer <= timeline + MAX_PROBES; newer++) {
    const name = historyName(newer);
    const text = await readStoredText(store, historyPrefix(namespace) + name, keys);
    if (text === undefined) break;
    const entries = typeof text === 'string' ? parseHistory(text) : text.problem;
    if (typeof entries === 'string') {
      throw new WalbridgeError(
        'fenced',
        `${name} in namespace "${namespace}" shows that a newer timeline exists, but it cannot be read (${entries}): where timeline ${timeline} ended cannot be told, so its WAL is neither archived nor waited for until it can (repair the object, or give its key)`,
      );
    }
    const own = entries.find((e) => e.parent === timeline);
    if (own && (!fork || own.switchpoint < fork.switchpoint)) fork = { timeline, newer, switchpoint: own.switchpoint };
  }
  return fork;
}

/**
 * True when `file` of the fork's timeline holds WAL past the fork: a segment whose end lies
 * beyond the switch point, a `.backup` label that starts at or after it. A `.partial` is what
 * a promotion archives of the old timeline's last segment, and `.history` files name the
 * timelines themselves: both always pass.
 */
export function pastFork(file: WalFileName, segmentSize: number, fork: Fork): boolean {
  if (file.timeline !== fork.timeline || (file.kind !== 'segment' && file.kind !== 'backup')) return false;
  const start = segmentNumber(file, segmentSize) * BigInt(segmentSize);
  if (file.kind === 'segment') return start + BigInt(segmentSize) > fork.switchpoint;
  return start + BigInt(parseInt(file.name.slice(25, 33), 16)) >= fork.switchpoint;
}

export function fencedError(namespace: string, name: string, fork: Fork): WalbridgeError {
  return new WalbridgeError(
    'fenced',
    `refusing ${name}: timeline ${fork.timeline} ended at ${formatLsn(fork.switchpoint)} when timeline ${fork.newer} was promoted from it (${historyName(fork.newer)} in namespace "${namespace}"), so this WAL is a dead branch: this server is an old primary. Stop it, and rejoin it as a standby of the new primary (pg_rewind; see the README's runbook)`,
  );
}

/** The stored segments of `timeline` (names from a listing) that start at or after its fork: a dead branch a standby would replay. */
export function deadBranch(names: readonly string[], segmentSize: number, fork: Fork): string[] {
  return names.filter((name) => {
    const file = parseWalFileName(name);
    return file?.kind === 'segment' && file.timeline === fork.timeline && segmentNumber(file, segmentSize) * BigInt(segmentSize) >= fork.switchpoint;
  });
}
