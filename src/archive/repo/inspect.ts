/**
 * The operators' view of a namespace: `walbridge status` (what is there, how fresh) and
 * `walbridge verify` (whether a standby could replay it: gaps, timeline histories, foreign
 * objects, and with `deep` every object's content against its recorded hash and header).
 */
import { describeContent, unseal } from '../../codec/envelope.js';
import type { KeyRing } from '../../codec/keys.js';
import { WalbridgeError } from '../../errors.js';
import { formatAge, formatBytes } from '../../log.js';
import { StoreError, type Store } from '../../storage/store.js';
import { LONG_HEADER_SIZE, formatLsn, headerMismatch, parseLongPageHeader } from '../../wal/header.js';
import { parseWalFileName, segmentNumber } from '../../wal/names.js';
import { clusterMismatch, loadIdentity, type ClusterIdentity } from './identity.js';
import { boundedSink } from '../../util/bounded-sink.js';
import { historyProblems, takeInventory, type Inventory, type ListedWithTime } from './inventory.js';
import { deadBranch, formatTimeline, historyName, parseHistory, readStoredText, type Fork } from './timelines.js';
import { namespacePrefix, namespaceProblem } from './layout.js';
import { listTriggers, type Trigger } from './trigger.js';

/** PostgreSQL's default segment size, for listing a namespace that has no identity yet. */
const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

export interface NamespaceStatus {
  readonly namespace: string;
  readonly location: string;
  readonly identity: ClusterIdentity | undefined;
  readonly inventory: Inventory;
  readonly triggers: readonly Trigger[];
}

export async function namespaceStatus(store: Store, namespace: string): Promise<NamespaceStatus> {
  const [identity, listing, triggers] = await Promise.all([loadIdentity(store, namespace), listAll(store, namespace), listTriggers(store, namespace)]);
  if (listing.length === 0) await store.checkBucket(); // an empty listing may be a missing bucket
  const inventory = takeInventory(namespace, listing, identity?.segmentSize ?? DEFAULT_SEGMENT_SIZE);
  return { namespace, location: store.location, identity, inventory, triggers };
}

async function listAll(store: Store, namespace: string): Promise<ListedWithTime[]> {
  const out: ListedWithTime[] = [];
  for await (const object of store.list(namespacePrefix(namespace))) out.push(object);
  return out;
}

export interface RepositoryNamespace {
  readonly namespace: string;
  /** The cluster whose WAL it holds; undefined before its first push. */
  readonly identity: ClusterIdentity | undefined;
  /** Why its identity.json cannot be used: damaged, another tool's file, or not readable with these credentials. */
  readonly problem?: string;
}

/**
 * Every namespace of the repository and the cluster it holds, in name order: after a
 * major-version upgrade (a new system identifier, a new namespace) or with many primaries in one
 * bucket, which namespace is whose. Top-level prefixes that cannot be namespaces are left out.
 */
export async function repositoryNamespaces(store: Store): Promise<readonly RepositoryNamespace[]> {
  const prefixes = await store.listPrefixes('');
  if (prefixes.length === 0) await store.checkBucket(); // an empty listing may be a missing bucket
  const names = [...new Set(prefixes.map((p) => p.slice(0, -1)))].filter((n) => namespaceProblem(n) === undefined).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: RepositoryNamespace[] = new Array(names.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < names.length; i = next++) {
      const namespace = names[i]!;
      try {
        out[i] = { namespace, identity: await loadIdentity(store, namespace) };
      } catch (err) {
        // One namespace's record damaged, or kept from these credentials (a standby's may read its own
        // namespace only), is that namespace's row; the store failing is the command's failure.
        if (err instanceof WalbridgeError && err.kind === 'corrupt') out[i] = { namespace, identity: undefined, problem: err.message };
        else if (err instanceof StoreError && err.kind === 'denied')
          out[i] = { namespace, identity: undefined, problem: `not readable with these credentials: ${err.message}` };
        else throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, names.length) }, worker));
  return out;
}

export type ProblemKind = 'empty' | 'identity' | 'gap' | 'history' | 'dead-branch' | 'foreign' | 'leftover' | 'corrupt';

/** Why a namespace holds nothing a standby could use (a mistyped --namespace, most often), or undefined. */
export function emptyNamespace(status: NamespaceStatus): string | undefined {
  const { identity, inventory, namespace, location } = status;
  if (identity || inventory.walKeys.length > 0) return undefined;
  if (inventory.objects === 0) return `namespace "${namespace}" holds nothing in ${location}: is --namespace right?`;
  return `namespace "${namespace}" holds no WAL and no identity.json in ${location}, only ${inventory.objects} other object${inventory.objects === 1 ? '' : 's'}: is --namespace right?`;
}

/** How far `walbridge stream` reached past the newest archived segment of its timeline. */
export interface StreamLead {
  readonly timeline: number;
  readonly newestLsn: string;
  readonly newestAt?: Date;
  /** WAL only the streamed chunks hold: what a smart failover restores beyond the archive. */
  readonly bytesAhead: number;
  /** How much later the newest chunk was shipped than the newest archived segment was stored. */
  readonly secondsAhead: number | undefined;
}

/**
 * How far the archive reaches: the end (LSN) of its furthest segment, of any timeline (segment
 * numbers are positions in the WAL, whatever the timeline), and when its newest segment was stored.
 */
export function archiveReach(status: NamespaceStatus): { end: bigint; at: Date | undefined } {
  const segmentSize = status.identity?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  let end = 0n;
  let at: Date | undefined;
  for (const t of status.inventory.timelines) {
    const newest = t.newest ? parseWalFileName(t.newest) : undefined;
    const reach = newest ? (segmentNumber(newest, segmentSize) + 1n) * BigInt(segmentSize) : 0n;
    if (reach > end) end = reach;
    if (t.newestAt && (!at || t.newestAt > at)) at = t.newestAt;
  }
  return { end, at };
}

/**
 * Undefined without chunks, or when they are a timeline's that a newer one (archived, or named by
 * a history file) replaced: a failover never restores those (README: a standby never replays past a fork).
 */
export function streamLead(status: NamespaceStatus): StreamLead | undefined {
  const { inventory } = status;
  const streamed = inventory.newestStreamed;
  if (!streamed) return undefined;
  const newestTimeline = Math.max(0, ...inventory.timelines.map((t) => t.timeline), ...inventory.histories.map((h) => parseInt(h.slice(0, 8), 16)));
  if (streamed.timeline < newestTimeline) return undefined;
  const { end: archivedEnd, at: archivedAt } = archiveReach(status);
  const at = streamed.at;
  return {
    timeline: streamed.timeline,
    newestLsn: formatLsn(streamed.lsn),
    newestAt: at,
    bytesAhead: Number(streamed.lsn > archivedEnd ? streamed.lsn - archivedEnd : 0n),
    secondsAhead: at && archivedAt ? Math.max(0, Math.round((at.getTime() - archivedAt.getTime()) / 1000)) : undefined,
  };
}

/**
 * What `walbridge status` counts as a problem from the listing alone (verify looks deeper): gaps,
 * a newer timeline without its history file, objects walbridge never writes, and with `maxAgeSeconds`
 * a newest segment older than that (archiving stalled, or a primary without traffic: archive_timeout).
 */
export function statusProblems(status: NamespaceStatus, now: Date, opts: { maxAgeSeconds?: number } = {}): string[] {
  const problems: string[] = [];
  const empty = emptyNamespace(status);
  if (empty) problems.push(empty);
  const { inventory } = status;
  // The first timeline archived needs no history file: a cluster already on timeline N when walbridge came never archived it.
  const first = inventory.timelines[0]?.timeline;
  for (const t of inventory.timelines) {
    const missing = t.gaps.reduce((n, g) => n + g.missing, 0);
    if (missing > 0) problems.push(`timeline ${t.timeline}: ${missing} segment${missing === 1 ? '' : 's'} missing (walbridge verify names them)`);
    if (t.timeline > 1 && t.timeline !== first && !t.hasHistory)
      problems.push(`timeline ${t.timeline}: no ${historyName(t.timeline)} (a standby cannot follow it)`);
  }
  if (inventory.foreign.length > 0)
    problems.push(`${inventory.foreign.length} object${inventory.foreign.length === 1 ? '' : 's'} walbridge never writes (walbridge verify names them)`);
  // The newest segment of any timeline: a new timeline may hold only a .partial or a .backup yet.
  const newest = inventory.timelines
    .filter((t) => t.newestAt)
    .sort((a, b) => a.newestAt!.getTime() - b.newestAt!.getTime())
    .at(-1);
  if (opts.maxAgeSeconds !== undefined && newest?.newestAt) {
    const age = Math.round((now.getTime() - newest.newestAt.getTime()) / 1000);
    if (age > opts.maxAgeSeconds) problems.push(`the newest segment, ${newest.newest}, is ${formatAge(age)} old (--max-age ${opts.maxAgeSeconds})`);
  }
  return problems;
}

/** A temp file not written to for this long, by a writer on another host, is taken for left over. */
const FOREIGN_WRITER_IDLE_MS = 5 * 60 * 1000;

export interface Problem {
  readonly kind: ProblemKind;
  readonly message: string;
}

export interface VerifyReport {
  readonly status: NamespaceStatus;
  readonly problems: readonly Problem[];
  /** Objects whose content was read and checked (deep only). */
  readonly contentChecked: number;
}

export interface VerifyOptions {
  readonly deep: boolean;
  /** Objects read at once in a deep check. */
  readonly concurrency?: number;
  /** Called as the deep check goes (for a progress bar). */
  readonly progress?: (done: number, total: number) => void;
  /** Keys for encrypted objects (histories are read in any case, contents with `deep`). */
  readonly keys?: KeyRing;
}

export async function verifyNamespace(store: Store, namespace: string, opts: VerifyOptions): Promise<VerifyReport> {
  const status = await namespaceStatus(store, namespace);
  const { identity, inventory } = status;
  const problems: Problem[] = [];
  const empty = emptyNamespace(status);
  if (empty) problems.push({ kind: 'empty', message: empty });
  const segmentSize = identity?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  const walObjects = inventory.timelines.reduce((n, t) => n + t.segments + t.partials.length + t.backups.length, 0);
  if (!identity && walObjects > 0)
    problems.push({ kind: 'identity', message: `namespace "${namespace}" holds WAL but no identity.json: fetch cannot check what it restores` });
  for (const t of inventory.timelines) {
    for (const gap of t.gaps) {
      problems.push({
        kind: 'gap',
        message: `timeline ${t.timeline}: ${gap.missing} segment${gap.missing === 1 ? '' : 's'} missing, ${gap.from}${gap.missing > 1 ? ` … ${gap.to}` : ''}: a standby stops there`,
      });
    }
    if (t.timeline > 1 && !t.hasHistory)
      problems.push({ kind: 'history', message: `timeline ${t.timeline} has WAL but no ${formatTimeline(t.timeline)}.history: standbys cannot follow it` });
  }
  const forks = new Map<number, Fork>();
  for (const history of inventory.histories) {
    const timeline = parseInt(history.slice(0, 8), 16);
    const text = await readStoredText(store, `${namespacePrefix(namespace)}history/${history}`, opts.keys);
    if (text === undefined) continue; // removed while we looked
    if (typeof text !== 'string') {
      problems.push({ kind: 'history', message: `${history}: cannot be read: ${text.problem}` });
      continue;
    }
    const entries = parseHistory(text);
    if (typeof entries === 'string') problems.push({ kind: 'history', message: `${history}: ${entries}` });
    else {
      for (const message of historyProblems(timeline, entries, inventory, segmentSize)) problems.push({ kind: 'history', message });
      for (const e of entries) {
        const known = forks.get(e.parent);
        if (!known || e.switchpoint < known.switchpoint) forks.set(e.parent, { timeline: e.parent, newer: timeline, switchpoint: e.switchpoint });
      }
    }
  }
  const walNames = inventory.walKeys.map((key) => key.slice(key.lastIndexOf('/') + 1));
  for (const fork of forks.values()) {
    const dead = deadBranch(walNames, segmentSize, fork).sort();
    if (dead.length === 0) continue;
    problems.push({
      kind: 'dead-branch',
      message: `timeline ${fork.timeline}: ${dead.length} segment${dead.length === 1 ? '' : 's'} stored past its end at ${formatLsn(fork.switchpoint)}, where timeline ${fork.newer} branched off (${historyName(fork.newer)}): ${dead[0]}${dead.length > 1 ? ` … ${dead[dead.length - 1]}` : ''}, WAL of an old primary after the promotion, which a standby still on timeline ${fork.timeline} would replay`,
    });
  }
  for (const key of inventory.foreign) problems.push({ kind: 'foreign', message: `${key} is not an object walbridge writes here` });
  for (const message of await leftoverProblems(store, namespace)) problems.push({ kind: 'leftover', message });

  let contentChecked = 0;
  if (opts.deep) {
    const keys = inventory.walKeys;
    let next = 0;
    opts.progress?.(0, keys.length);
    const worker = async () => {
      while (next < keys.length) {
        const key = keys[next++]!;
        const problem = await checkContent(store, namespace, key, identity, opts.keys);
        if (problem) problems.push({ kind: 'corrupt', message: problem });
        contentChecked++;
        opts.progress?.(contentChecked, keys.length);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 4) }, worker));
  }
  return { status, problems, contentChecked };
}

/**
 * Temp files of writes that will never finish (a push killed by SIGKILL, a crashed host). A write
 * in progress is none: its writer runs (this host), or it was written to lately (another host).
 */
async function leftoverProblems(store: Store, namespace: string): Promise<string[]> {
  const now = Date.now();
  const problems: string[] = [];
  for (const l of (await store.leftovers?.(namespacePrefix(namespace))) ?? []) {
    const idle = now - l.modified.getTime();
    if (l.writerAlive === true || (l.writerAlive === undefined && l.pid !== undefined && idle < FOREIGN_WRITER_IDLE_MS)) continue;
    const what = `${l.path}: temp file (${formatBytes(l.size)}, last written ${formatAge(Math.max(0, Math.round(idle / 1000)))} ago) of an unfinished write${l.key ? ` of ${l.key}` : ''}`;
    const remove = `rm ${JSON.stringify(l.path)}`;
    if (l.pid === undefined) problems.push(`${what}, not named by walbridge: remove it (${remove})`);
    else if (l.writerAlive === false)
      problems.push(`${what} by pid ${l.pid} on host ${l.host}, which is gone: remove it (${remove}), or let the next push on ${l.host} do it`);
    else problems.push(`${what} by pid ${l.pid} on host ${l.host}: if no walbridge process ${l.pid} runs on ${l.host}, remove it (${remove})`);
  }
  return problems;
}

/** Reads one object whole and checks it as a restore would; returns what is wrong, or undefined. */
export async function checkContent(
  store: Store,
  namespace: string,
  key: string,
  identity: ClusterIdentity | undefined,
  keys: KeyRing | undefined,
): Promise<string | undefined> {
  const name = key.slice(key.lastIndexOf('/') + 1);
  const file = parseWalFileName(name)!;
  let opened;
  try {
    opened = await store.get(key);
  } catch (err) {
    if (err instanceof StoreError && err.kind === 'not-found') return undefined; // expired while we looked
    throw err;
  }
  const promised = describeContent(opened.info.metadata);
  if (typeof promised === 'string') {
    opened.body.destroy();
    return `${key}: ${promised}`;
  }
  const head: Buffer[] = [];
  let seen;
  try {
    seen = await unseal(opened.body, promised, () => boundedSink(head, LONG_HEADER_SIZE), { fileName: name, keys });
  } catch (err) {
    opened.body.destroy();
    if (err instanceof StoreError) throw err;
    if (err instanceof WalbridgeError) return `${key}: ${err.message}`;
    return `${key}: does not decode: ${(err as Error).message}`;
  }
  if (seen.size !== promised.size || seen.sha256 !== promised.sha256) {
    return `${key}: content is ${seen.size} bytes with sha256 ${seen.sha256.slice(0, 12)}…, its metadata promises ${promised.size} bytes with ${promised.sha256.slice(0, 12)}…`;
  }
  if (file.kind === 'segment' || file.kind === 'partial') {
    const header = parseLongPageHeader(Buffer.concat(head));
    if (typeof header === 'string') return `${key}: not a WAL segment (${header})`;
    const mismatch = headerMismatch(header, file) ?? (identity ? clusterMismatch(identity, header, namespace) : undefined);
    if (mismatch) return `${key}: ${mismatch}`;
  }
  return undefined;
}
