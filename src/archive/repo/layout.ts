/**
 * The one place that names object keys. Everything else — the commands, the tests and the
 * Terraform lifecycle rules — derives keys and prefixes from here, so they cannot drift apart.
 *
 *   <namespace>/identity.json      the cluster the namespace belongs to (written by the first push)
 *   <namespace>/wal/<name>         segments, .partial and .backup files (what WAL expiry removes)
 *   <namespace>/history/<name>     timeline .history files (kept: timeline selection needs them)
 *   <namespace>/stream/<segment>/<start>-<end>
 *                                  bytes [start, end) of a segment not yet archived, shipped by
 *                                  `walbridge stream` (see stream-chunks.ts); removed once archived
 *   <namespace>/check/<probe>      what `walbridge check` uploads to see that the store checks
 *                                  uploads (refused there); removed at once where it was stored, and
 *                                  expired after a day by the Terraform rules (a role may not delete)
 *
 * Keys are relative to the repository root (the prefix in the repo URL).
 */
import type { WalFileName } from '../../wal/names.js';

// A namespace is a setting first: its rule lives with the settings, and the key layout relies on it.
export { namespaceProblem } from '../../config/namespace.js';

export function namespacePrefix(namespace: string): string {
  return `${namespace}/`;
}

export function identityKey(namespace: string): string {
  return `${namespace}/identity.json`;
}

/** Where segments, partial segments and backup labels live: the prefix WAL expiry applies to. */
export function walPrefix(namespace: string): string {
  return `${namespace}/wal/`;
}

export function historyPrefix(namespace: string): string {
  return `${namespace}/history/`;
}

export function walFileKey(namespace: string, file: WalFileName): string {
  return (file.kind === 'history' ? historyPrefix(namespace) : walPrefix(namespace)) + file.name;
}

/** Trigger objects: one per standby name, and `all` for every standby of the namespace. */
export function triggerPrefix(namespace: string): string {
  return `${namespace}/trigger/`;
}

export function triggerKey(namespace: string, target: string): string {
  return triggerPrefix(namespace) + target;
}

/** Streamed chunks of unfinished segments (walbridge stream). */
export function streamPrefix(namespace: string): string {
  return `${namespace}/stream/`;
}

export function streamSegmentPrefix(namespace: string, segment: string): string {
  return `${streamPrefix(namespace)}${segment}/`;
}

/** Probes of `walbridge check` (never WAL): outside every prefix the other commands read. */
export function checkPrefix(namespace: string): string {
  return `${namespace}/check/`;
}
