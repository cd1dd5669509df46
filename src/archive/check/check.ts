/**
 * `walbridge check`, as `pgbackrest check` works: is this server's set-up one walbridge can keep?
 * Each finding names what holds or what to fix. Nothing is written that walbridge would not write
 * anyway, but for a probe that a store which checks uploads refuses:
 *
 * - the store: reachable; the namespace listed and read; on a primary, create-if-absent honoured
 *   (identity.json offered again with its own bytes: a store that ignores If-None-Match /
 *   ifGenerationMatch rewrites it with what it holds, nothing is lost) and Content-MD5 checked (a
 *   probe under <ns>/check/ with a wrong digest, which such a store refuses); delete permission where the set-up
 *   deletes (an absent key is deleted: a store answers that as it would a real delete);
 * - the server (libpq's PG* variables, or --conninfo): the namespace's cluster is the server's;
 *   archive_command / restore_command call walbridge with this repository and namespace (the
 *   server's own environment and config file resolve the call's settings);
 * - a primary: archive_mode, then a forced segment switch, waited for in the bucket and read back;
 * - a standby: its signal file agrees with the wait mode, the newest archived segment reads back
 *   and verifies, and no trigger is there that would fail it over.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describeContent } from '../../codec/envelope.js';
import { sha256Hex } from '../../codec/hash.js';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import type { RetryPolicy } from '../../storage/retry.js';
import { StoreError, type Store } from '../../storage/store.js';
import { readRecoverySignal } from '../../wal/datadir.js';
import { parseWalFileName } from '../../wal/names.js';
import type { ServerConnection, ServerFacts } from '../../wal/server-facts.js';
import { repositoryId } from '../repo/open.js';
import { checkContent, namespaceStatus, type NamespaceStatus } from '../repo/inspect.js';
import { checkPrefix, identityKey, triggerPrefix, walFileKey, walPrefix } from '../repo/layout.js';
import { ALL_STANDBYS, triggerId } from '../repo/trigger.js';
import { readStandbyState } from '../restore/standby-state.js';
import { pushContext, pushWalFile } from '../push/push.js';

export type Verdict = 'ok' | 'warn' | 'fail';

export interface Finding {
  readonly verdict: Verdict;
  /** What was checked: store, server, archive_command, restore_command, archiving, restore, triggers. */
  readonly subject: string;
  readonly message: string;
}

/** How the server calls walbridge, as its archive_command or restore_command would resolve it. */
export type ServerCall =
  | { readonly calls: 'other'; readonly why: string }
  /** walbridge run through another program (nice, timeout, flock...): its settings cannot be told from here. */
  | { readonly calls: 'wrapped'; readonly runs: 'push' | 'fetch'; readonly exe: string; readonly wrapper: string }
  | { readonly calls: 'push' | 'fetch'; readonly settings: Settings; readonly wait: boolean; readonly cleanup: boolean }
  | { readonly calls: 'push' | 'fetch'; readonly problem: string };

export interface CheckInput {
  readonly settings: Settings;
  readonly store: Store;
  /** Opens the store another call's settings name (what archive_command itself would reach). */
  readonly openStore: (settings: Settings) => Promise<{ store: Store; retry: RetryPolicy }>;
  /** Connects to the server; throws (a one-line message) when it cannot. */
  readonly connect: () => Promise<ServerConnection>;
  /** `commandLine` (archive_command, restore_command) resolved with the server's environment. */
  readonly resolveCall: (commandLine: string, serverEnv: NodeJS.ProcessEnv, cwd: string) => Promise<ServerCall>;
  /** How long to wait for the switched segment to be archived. */
  readonly archiveWaitMs: number;
  /** The environment to assume for the server when its own cannot be read. */
  readonly ownEnv: NodeJS.ProcessEnv;
}

export async function checkSetup(input: CheckInput): Promise<Finding[]> {
  const findings: Finding[] = [];
  const note = (verdict: Verdict, subject: string, message: string) => findings.push({ verdict, subject, message });
  const { settings, store } = input;
  const ns = settings.namespace;

  try {
    await store.checkBucket();
    note('ok', 'store', `${store.location} is reachable`);
  } catch (err) {
    note('fail', 'store', storeProblem(err, `reach ${store.location}`));
    return findings;
  }
  let status: NamespaceStatus;
  try {
    status = await namespaceStatus(store, ns);
    note(
      'ok',
      'store',
      `namespace "${ns}" listed and read: ${status.inventory.objects} objects${status.identity ? `, cluster ${status.identity.systemIdentifier}` : ', no cluster recorded yet'}`,
    );
  } catch (err) {
    note(
      'fail',
      'store',
      storeProblem(
        err,
        `list and read the objects under ${ns}/ (list: s3:ListBucket on the prefix, storage.objects.list; read: s3:GetObject, storage.objects.get)`,
      ),
    );
    return findings;
  }

  let server: ServerConnection;
  try {
    server = await input.connect();
  } catch (err) {
    note('fail', 'server', `${(err as Error).message}`);
    return findings;
  }
  try {
    const facts = server.facts;
    const role = facts.inRecovery ? 'standby' : 'primary';
    note('ok', 'server', `a ${role}, cluster ${facts.systemIdentifier}, data directory ${facts.dataDirectory}`);
    if (status.identity && status.identity.systemIdentifier !== facts.systemIdentifier) {
      note(
        'fail',
        'server',
        `namespace "${ns}" holds cluster ${status.identity.systemIdentifier}, this server is cluster ${facts.systemIdentifier}: set the namespace of this cluster`,
      );
    }
    const serverEnv = await serverEnvironment(facts.dataDirectory);
    if (!serverEnv) note('warn', 'server', "cannot read the server's environment (run check as the server's OS user): assumed to be this one's");
    const env = serverEnv ?? input.ownEnv;
    const foreign = status.identity !== undefined && status.identity.systemIdentifier !== facts.systemIdentifier;
    if (role === 'primary' && foreign) note('warn', 'store', "nothing written to probe the store: the namespace is not this cluster's");
    else if (role === 'primary') await checkPrimary(input, status, facts, server, env, serverEnv !== undefined, note);
    else await checkStandby(input, status, facts, env, note);
  } finally {
    await server.close();
  }
  return findings;
}

type Note = (verdict: Verdict, subject: string, message: string) => void;

async function checkPrimary(
  input: CheckInput,
  status: NamespaceStatus,
  facts: ServerFacts,
  server: ServerConnection,
  env: NodeJS.ProcessEnv,
  local: boolean,
  note: Note,
) {
  const { settings, store } = input;
  const ns = settings.namespace;
  if (facts.archiveMode !== 'on' && facts.archiveMode !== 'always')
    note('fail', 'archive_command', `archive_mode is ${facts.archiveMode}: set archive_mode = on (a restart applies it)`);
  const call = await input.resolveCall(facts.archiveCommand, env, facts.dataDirectory);
  // A wrapped call is tried end to end: the switched segment lands here, or not (its settings are not known).
  const callOk = sameRepository('archive_command', 'push', call, settings, note) ? ('settings' in call ? call : { settings, wrapped: true }) : undefined;

  // Create-if-absent: identity.json offered again, with its own bytes, verified first against its
  // recorded hash. Not where the store does not encrypt it as asked: a driver takes back an object it
  // believes it just created unencrypted, and that object would then be the identity.
  if (status.identity) {
    try {
      const { body, info } = await store.get(identityKey(ns));
      const bytes = await readAll(body);
      const promised = describeContent(info.metadata);
      if (info.notEncryptedAsAsked)
        note('warn', 'store', `create-if-absent not probed: ${identityKey(ns)} is not encrypted as asked (${info.notEncryptedAsAsked})`);
      else if (typeof promised === 'string' || promised.sha256 !== sha256Hex(bytes))
        note('fail', 'store', `${identityKey(ns)} does not match its recorded hash: inspect it`);
      else {
        const outcome = await store.putIfAbsent(identityKey(ns), { body: bytes, md5: createHash('md5').update(bytes).digest(), metadata: info.metadata });
        if (outcome === 'exists') note('ok', 'store', 'create-if-absent is honoured (an existing object was not replaced)');
        else
          note(
            'fail',
            'store',
            `the store replaced ${identityKey(ns)} although it exists: it ignores If-None-Match / ifGenerationMatch, and walbridge's never-overwrite rule depends on it (the object was rewritten with its own verified bytes: nothing was lost). Use a store or version that honours conditional writes`,
          );
      }
    } catch (err) {
      note(
        'fail',
        'store',
        storeProblem(err, `read ${identityKey(ns)} and create objects under ${ns}/ with If-None-Match (s3:PutObject; storage.objects.create)`),
      );
    }
  } else note('warn', 'store', `create-if-absent not checked: namespace "${ns}" has no identity yet (the first archived segment writes it)`);

  // Content-MD5: a probe whose digest does not match its body must be refused.
  const probe = `${checkPrefix(ns)}walbridge-check-${randomBytes(6).toString('hex')}`;
  try {
    const outcome = await store.putIfAbsent(probe, {
      body: Buffer.from('walbridge check\n'),
      md5: createHash('md5').update('not this body').digest(),
      metadata: {},
    });
    const removed = await store.deleteMany([probe]).then(
      () => 'it was removed',
      () => `remove ${probe}, or let the Terraform modules' rule expire it after a day`,
    );
    note(
      'fail',
      'store',
      `the store ${outcome === 'created' ? 'stored' : 'accepted'} an upload whose Content-MD5 does not match its body: it does not check what it receives (${removed})`,
    );
  } catch (err) {
    if (err instanceof StoreError && (err.kind === 'denied' || err.kind === 'no-bucket' || err.kind === 'transient'))
      note('fail', 'store', storeProblem(err, `create objects under ${checkPrefix(ns)} (s3:PutObject; storage.objects.create)`));
    // Only a refusal of the digest itself tells; any other (a checksum mode the store rejects, say) is the store's answer to every upload.
    else if (/digest|md5/i.test((err as Error).message)) note('ok', 'store', 'uploads are checked (an upload with a wrong Content-MD5 was refused)');
    else
      note(
        'fail',
        'store',
        `an upload was refused for another reason than its digest: ${(err as Error).message} (on S3-compatible stores, try s3-checksum = when-required)`,
      );
  }

  if (!callOk || (facts.archiveMode !== 'on' && facts.archiveMode !== 'always')) {
    note('warn', 'archiving', 'no segment switch: archiving does not reach this repository');
    return;
  }
  let segment: string;
  try {
    segment = await server.switchSegment();
  } catch (err) {
    note(
      'fail',
      'archiving',
      `cannot switch segments: ${(err as Error).message} (run as a superuser, or grant EXECUTE on pg_create_restore_point and pg_switch_wal)`,
    );
    return;
  }
  const key = walFileKey(ns, parseWalFileName(segment)!);
  const started = Date.now();
  let info;
  try {
    while (!(info = await store.head(key)) && Date.now() - started < input.archiveWaitMs) await new Promise((r) => setTimeout(r, 250));
  } catch (err) {
    note('fail', 'archiving', storeProblem(err, `look for ${segment} in the store`));
    return;
  }
  if (!info) {
    note(
      'fail',
      'archiving',
      `${segment} was not archived within ${Math.round(input.archiveWaitMs / 1000)} s of pg_switch_wal(): ${await whyNotArchived(input, callOk, server, facts, segment, local)}`,
    );
    return;
  }
  const wrong = await checkContent(store, ns, key, status.identity, callOk.settings.encryption).catch((err: Error) => err.message);
  if (wrong) note('fail', 'archiving', `${segment} was archived but does not verify: ${wrong}`);
  else note('ok', 'archiving', `${segment} archived ${((Date.now() - started) / 1000).toFixed(1)} s after pg_switch_wal(), read back and verified`);
  if (info.notEncryptedAsAsked) note('fail', 'archiving', `${segment} is not encrypted at rest as asked: ${info.notEncryptedAsAsked}`);
}

async function checkStandby(input: CheckInput, status: NamespaceStatus, facts: ServerFacts, env: NodeJS.ProcessEnv, note: Note) {
  const { settings, store } = input;
  const ns = settings.namespace;
  const call = await input.resolveCall(facts.restoreCommand, env, facts.dataDirectory);
  sameRepository('restore_command', 'fetch', call, settings, note);
  const fetch = 'settings' in call && call.calls === 'fetch' ? call : undefined;

  const signal = await readRecoverySignal(facts.dataDirectory).catch(() => undefined);
  if (!signal)
    note('warn', 'restore_command', `no recovery.signal or standby.signal seen in ${facts.dataDirectory} (run check on the standby's host as its OS user)`);
  else if (fetch && signal.mode === 'recovery' && !fetch.wait)
    note(
      'fail',
      'restore_command',
      'recovery.signal with archive-fetch --no-wait: the first segment not archived yet ends recovery and promotes this standby; drop --no-wait',
    );
  else if (fetch && signal.mode === 'standby' && fetch.wait)
    note(
      'warn',
      'restore_command',
      'standby.signal with a waiting archive-fetch: PostgreSQL polls by itself there; use --no-wait (README: recovery.signal vs standby.signal)',
    );
  else if (fetch) note('ok', 'restore_command', `${signal.mode}.signal with ${fetch.wait ? 'a waiting' : 'a --no-wait'} archive-fetch`);

  // The newest archived segment, read back and verified.
  const newest = status.inventory.timelines
    .filter((t) => t.newest)
    .map((t) => t.newest!)
    .sort()
    .at(-1);
  if (!newest) note('fail', 'restore', `namespace "${ns}" holds no segment: nothing to restore (is the namespace right? is the primary archiving?)`);
  else {
    const wrong = await checkContent(store, ns, walFileKey(ns, parseWalFileName(newest)!), status.identity, (fetch?.settings ?? settings).encryption).catch(
      (err: Error) => err.message,
    );
    note(
      wrong ? 'fail' : 'ok',
      'restore',
      wrong ? `the newest archived segment does not verify: ${wrong}` : `the newest archived segment, ${newest}, reads back and verifies`,
    );
  }

  // Triggers that would fail this standby over: a waiting archive-fetch obeys the trigger for every
  // standby and the one naming its own --standby, unless it was there when this recovery first looked.
  if (fetch && !fetch.wait) note('ok', 'triggers', 'archive-fetch --no-wait obeys no trigger (pg_ctl promote fails this standby over)');
  else if (fetch) {
    const concerning = status.triggers.filter((t) => t.target === ALL_STANDBYS || t.target === fetch.settings.standby);
    let leftovers: ReadonlySet<string> | undefined;
    try {
      const state = await readStandbyState(facts.dataDirectory);
      // Another recovery's list (a signal file written since) says nothing: this one's first look takes every present trigger for a leftover.
      leftovers = state.recovery && signal && state.recovery.signal === signal.identity ? new Set(state.recovery.leftoverTriggers) : undefined;
    } catch (err) {
      note('warn', 'triggers', `cannot tell leftover triggers: ${(err as Error).message}`);
    }
    for (const t of concerning) {
      const who = t.target === ALL_STANDBYS ? 'every standby' : `standby "${t.target}"`;
      if (!leftovers || leftovers.has(triggerId(t)))
        note(
          'warn',
          'triggers',
          `a ${t.mode} trigger for ${who} (written ${t.createdAt}) is a leftover this recovery ignores; a new standby would obey it: walbridge trigger clear`,
        );
      else
        note(
          'fail',
          'triggers',
          `a ${t.mode} trigger for ${who} (written ${t.createdAt}) would fail this standby over: walbridge trigger clear, unless that is wanted`,
        );
    }
    if (concerning.length === 0) note('ok', 'triggers', 'no trigger concerns this standby');
  }

  // Deletes the set-up makes: an absent key deleted answers as a real delete would.
  const deletes: [string, string][] = [];
  if (fetch?.cleanup) deletes.push([walPrefix(ns), 'archive-fetch --cleanup']);
  if (/\btrigger\s+clear\b/.test(facts.recoveryEndCommand)) deletes.push([triggerPrefix(ns), 'recovery_end_command (walbridge trigger clear)']);
  for (const [prefix, why] of deletes) {
    try {
      await store.deleteMany([`${prefix}walbridge-check-absent-${randomBytes(6).toString('hex')}`]);
      note('ok', 'store', `may delete under ${prefix}, as ${why} needs`);
    } catch (err) {
      note('fail', 'store', storeProblem(err, `delete objects under ${prefix} (s3:DeleteObject; storage.objects.delete), which ${why} needs`));
    }
  }
}

/**
 * Why archive_command did not store `segment`. Where it is safe to, the push of it is made here as
 * the call would make it (the call's own settings and store; idempotent: the same bytes already
 * stored are a success): it fails with the cause, or it succeeds, and the cause is in how the
 * server runs the command (PATH, environment). Safe only for this host's server (its environment
 * was read from /proc) and a segment PostgreSQL has marked ready: never a standby's half-received file.
 */
async function whyNotArchived(
  input: CheckInput,
  call: { settings: Settings; wrapped?: boolean },
  server: ServerConnection,
  facts: ServerFacts,
  segment: string,
  local: boolean,
): Promise<string> {
  const failure = await server.lastArchiveFailure().catch(() => undefined);
  const archiver = failure ? `pg_stat_archiver: last failed ${failure.wal} at ${failure.at}` : 'pg_stat_archiver records no failure';
  const walDir = path.join(facts.dataDirectory, 'pg_wal');
  const ready = await stat(path.join(walDir, 'archive_status', `${segment}.ready`)).then(
    () => true,
    () => false,
  );
  // A wrapped command's own settings are unknown: pushing with check's could store the segment where it never goes.
  if (!local || !ready || call.wrapped) return `${archiver}; the server log says why`;
  try {
    const { store, retry } = await input.openStore(call.settings);
    await pushWalFile(pushContext(call.settings, store, retry, silent), path.join(walDir, segment));
    return `pushed from here as archive_command would, it was stored: see the server log for how the server runs archive_command (PATH, environment); ${archiver}`;
  } catch (err) {
    return `pushed from here as archive_command would, it fails: ${(err as Error).message} (${archiver})`;
  }
}

const silent: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** Whether `call` reaches the repository and namespace of `settings`; notes what it found. */
function sameRepository(setting: string, expected: 'push' | 'fetch', call: ServerCall, settings: Settings, note: Note): boolean {
  const exe = expected === 'push' ? 'archive-push' : 'archive-fetch';
  if (call.calls === 'other') {
    // The command line is not quoted: it may hold a secret (VAR=... before the command).
    note('fail', setting, `${setting} does not call ${exe}: ${call.why}`);
    return false;
  }
  if (call.calls === 'wrapped' && call.runs === expected) {
    note(
      'warn',
      setting,
      `${setting} runs ${call.exe} through ${call.wrapper}: its repository and namespace are not resolved here${expected === 'push' ? ' (the segment switch below shows where archiving lands)' : ''}`,
    );
    return expected === 'push';
  }
  if (call.calls === 'wrapped' || call.calls !== expected) {
    note('fail', setting, `${setting} calls walbridge ${call.calls === 'wrapped' ? call.runs : call.calls}, not ${expected}`);
    return false;
  }
  if ('problem' in call) {
    note('fail', setting, `${setting} calls ${exe}, but its settings do not resolve: ${call.problem}`);
    return false;
  }
  const theirs = `${repositoryId(call.settings)}, namespace "${call.settings.namespace}"`;
  const ours = `${repositoryId(settings)}, namespace "${settings.namespace}"`;
  if (theirs !== ours) {
    note('fail', setting, `${setting} reaches ${theirs}, not ${ours}`);
    return false;
  }
  note('ok', setting, `${setting} calls ${exe} with this repository and namespace`);
  return true;
}

/** The postmaster's environment (what archive_command and restore_command get), if this user may read it. */
async function serverEnvironment(dataDir: string): Promise<NodeJS.ProcessEnv | undefined> {
  try {
    const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const text = await readFile(`/proc/${pid}/environ`, 'utf8');
    const env: NodeJS.ProcessEnv = {};
    for (const entry of text.split('\0')) {
      const at = entry.indexOf('=');
      if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1);
    }
    return env;
  } catch {
    return undefined;
  }
}

function storeProblem(err: unknown, what: string): string {
  if (err instanceof StoreError && err.kind === 'denied') return `may not ${what}: ${err.message}`;
  return `cannot ${what}: ${(err as Error).message}`;
}

async function readAll(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
