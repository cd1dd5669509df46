/** `walbridge status [--json] [--all]`: what a namespace holds and how fresh it is, or which namespace holds which cluster. */
import { Command, InvalidArgumentError, Option } from 'commander';
import type { NamespaceStatus, RepositoryNamespace, StreamLead } from '../archive/repo/inspect.js';
import { ALL_STANDBYS } from '../archive/repo/trigger.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger, formatAge, formatBytes } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository } from '../archive/repo/open.js';

export function statusCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('status')
    .summary("show a namespace's cluster, timelines, newest segments and triggers")
    .description(
      "Show the namespace's cluster identity, per timeline the segments archived (first, newest, the newest one's age, gaps), " +
        '.partial and .backup files, timeline history files, how far walbridge stream reached past the archive, and failover triggers. --json prints the same for monitoring. ' +
        `Exits ${ExitCode.notFound} if the namespace holds no WAL and no identity (is --namespace right?), ${ExitCode.problems} on a problem the listing shows ` +
        '(missing segments, a timeline without its history file, objects walbridge never writes, with --max-age a newest segment older than that), 0 otherwise. ' +
        `--all lists every namespace of the repository with its cluster instead (exit ${ExitCode.notFound} if there is none).`,
    )
    .addOption(new Option('--json', 'print one JSON object (ages in seconds) instead of text'))
    .addOption(new Option('--all', 'list every namespace of the repository with the cluster it holds (no --namespace needed)'))
    .addOption(
      new Option('--max-age <seconds>', `exit ${ExitCode.problems} when the newest segment is older than this (set it above archive_timeout)`).argParser(
        (v) => {
          const n = Number(v);
          if (!/^\d+$/.test(v) || n < 1) throw new InvalidArgumentError('give a whole number of seconds, 1 or more');
          return n;
        },
      ),
    );
  addSettingOptions(command, 'status').action(async () => {
    const log = createLogger('walbridge status');
    const { json, all, maxAge } = command.opts<{ json?: boolean; all?: boolean; maxAge?: number }>();
    const settings = await settingsFrom(command, 'status', { wholeRepository: all });
    const { store } = await openRepository(settings, log);
    if (all) {
      const { repositoryNamespaces } = await import('../archive/repo/inspect.js');
      const namespaces = await repositoryNamespaces(store);
      process.stdout.write(json ? `${JSON.stringify(namespacesJson(store.location, namespaces), null, 2)}\n` : namespacesText(store.location, namespaces));
      if (namespaces.length === 0) log.error(`no namespace in ${store.location}: is --repo right?`);
      return done(namespaces.length === 0 ? ExitCode.notFound : ExitCode.ok);
    }
    const { archiveReach, emptyNamespace, namespaceStatus, statusProblems, streamLead } = await import('../archive/repo/inspect.js');
    const status = await namespaceStatus(store, settings.namespace);
    const now = new Date();
    const problems = statusProblems(status, now, { maxAgeSeconds: maxAge });
    const lead = streamLead(status);
    if (settings.metricsFile) {
      const { end, at } = archiveReach(status);
      const reading = { namespace: settings.namespace, archivedEnd: end, newestSegmentAt: at, problems: problems.length, triggers: status.triggers };
      await (await import('../metrics/status.js')).recordStatus(settings.metricsFile, reading, log);
    }
    process.stdout.write(json ? `${JSON.stringify(statusJson(status, now, problems, lead), null, 2)}\n` : statusText(status, now, problems, lead));
    // A mistyped namespace must not look like a healthy one that is merely new: "not in the archive".
    const empty = emptyNamespace(status);
    if (empty) log.error(empty);
    done(empty ? ExitCode.notFound : problems.length > 0 ? ExitCode.problems : ExitCode.ok);
  });
  return command;
}

function namespacesJson(location: string, namespaces: readonly RepositoryNamespace[]) {
  return { location, namespaces: namespaces.map((n) => ({ namespace: n.namespace, identity: n.identity ?? null, problem: n.problem ?? null })) };
}

function namespacesText(location: string, namespaces: readonly RepositoryNamespace[]): string {
  const width = Math.max(0, ...namespaces.map((n) => n.namespace.length));
  const lines = [`${namespaces.length} namespace${namespaces.length === 1 ? '' : 's'} in ${location}`];
  for (const { namespace, identity: id, problem } of namespaces) {
    const cluster = problem
      ? `UNREADABLE identity.json (${problem})`
      : id
        ? `system identifier ${id.systemIdentifier}, PostgreSQL ${id.pgVersion ?? 'unknown'}, ${formatBytes(id.segmentSize)} segments, recorded ${id.createdAt} from ${id.recordedFrom}`
        : 'no identity.json (nothing archived yet)';
    lines.push(`${namespace.padEnd(width)}  ${cluster}`);
  }
  return `${lines.join('\n')}\n`;
}

const ageSeconds = (at: Date | undefined, now: Date) => (at ? Math.max(0, Math.round((now.getTime() - at.getTime()) / 1000)) : null);

export function statusJson(s: NamespaceStatus, now: Date, problems: readonly string[] = [], lead?: StreamLead) {
  const { inventory: inv } = s;
  return {
    namespace: s.namespace,
    location: s.location,
    checkedAt: now.toISOString(),
    identity: s.identity ?? null,
    objects: inv.objects,
    storedBytes: inv.bytes,
    newestAt: inv.newestAt?.toISOString() ?? null,
    newestAgeSeconds: ageSeconds(inv.newestAt, now),
    timelines: inv.timelines.map((t) => ({
      timeline: t.timeline,
      segments: t.segments,
      first: t.first ?? null,
      newest: t.newest ?? null,
      newestAt: t.newestAt?.toISOString() ?? null,
      newestAgeSeconds: ageSeconds(t.newestAt, now),
      missingSegments: t.gaps.reduce((n, g) => n + g.missing, 0),
      gaps: t.gaps,
      partials: t.partials,
      backups: t.backups,
      history: t.hasHistory,
    })),
    histories: inv.histories,
    foreignObjects: inv.foreign,
    streamChunks: inv.streamChunks,
    stream: lead
      ? {
          timeline: lead.timeline,
          newestLsn: lead.newestLsn,
          newestAt: lead.newestAt?.toISOString() ?? null,
          newestAgeSeconds: ageSeconds(lead.newestAt, now),
          bytesAheadOfArchive: lead.bytesAhead,
          secondsAheadOfArchive: lead.secondsAhead ?? null,
        }
      : null,
    triggers: s.triggers,
    problems,
  };
}

function statusText(s: NamespaceStatus, now: Date, problems: readonly string[], lead: StreamLead | undefined): string {
  const lines: string[] = [`namespace "${s.namespace}" in ${s.location}`];
  const id = s.identity;
  lines.push(
    id
      ? `cluster: system identifier ${id.systemIdentifier}, PostgreSQL ${id.pgVersion ?? 'unknown'}, ${formatBytes(id.segmentSize)} segments (recorded ${id.createdAt} from ${id.recordedFrom})`
      : 'cluster: none recorded yet (nothing archived)',
  );
  const inv = s.inventory;
  const age = (at: Date | undefined) => (at ? `${formatAge(ageSeconds(at, now)!)} ago (${at.toISOString()})` : 'age unknown');
  lines.push(`objects: ${inv.objects} (${formatBytes(inv.bytes)} stored)${inv.objects > 0 ? `, newest ${age(inv.newestAt)}` : ''}`);
  for (const t of inv.timelines) {
    const parts = [t.segments > 0 ? `${t.segments} segment${t.segments === 1 ? '' : 's'} ${t.first} … ${t.newest}, newest ${age(t.newestAt)}` : 'no segments'];
    const missing = t.gaps.reduce((n, g) => n + g.missing, 0);
    if (missing > 0) parts.push(`${missing} MISSING (run walbridge verify)`);
    if (t.partials.length > 0) parts.push(`${t.partials.length} .partial`);
    if (t.backups.length > 0) parts.push(`${t.backups.length} .backup`);
    if (t.timeline > 1 && !t.hasHistory) parts.push('no .history');
    lines.push(`timeline ${t.timeline}: ${parts.join('; ')}`);
  }
  if (inv.histories.length > 0) lines.push(`history files: ${inv.histories.join(' ')}`);
  if (inv.streamChunks > 0) lines.push(`streamed chunks of unarchived segments: ${inv.streamChunks} (walbridge stream)`);
  if (lead)
    lines.push(
      `streamed up to ${lead.newestLsn} on timeline ${lead.timeline}, ${formatBytes(lead.bytesAhead)} past the newest archived segment, shipped ${age(lead.newestAt)}`,
    );
  if (inv.foreign.length > 0) lines.push(`foreign objects: ${inv.foreign.length} (run walbridge verify)`);
  if (s.triggers.length === 0) lines.push('triggers: none');
  for (const t of s.triggers)
    lines.push(`trigger: ${t.mode} for ${t.target === ALL_STANDBYS ? 'every standby' : `standby "${t.target}"`}, written at ${t.createdAt} by ${t.createdBy}`);
  for (const p of problems) lines.push(`PROBLEM: ${p}`);
  return `${lines.join('\n')}\n`;
}
