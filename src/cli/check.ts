/** `walbridge check [--json]`: does this server's set-up work with walbridge, end to end? (archive/check/check.ts) */
import path from 'node:path';
import { Command, Option } from 'commander';
import type { Finding, ServerCall } from '../archive/check/check.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { shellWords } from '../util/shell-words.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository } from '../archive/repo/open.js';

export function checkCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('check')
    .summary('check the set-up end to end: the store and its permissions, the server, archive_command or restore_command')
    .description(
      'Check, as the server would use walbridge: the repository is reachable, lists and reads the namespace, honours create-if-absent and checks uploads (Content-MD5), ' +
        "with the permissions this role needs; the server (libpq PG* variables or --conninfo) is the namespace's cluster, and its archive_command or restore_command " +
        "calls walbridge with this repository and namespace (resolved with the server's own environment and config file). " +
        'On a primary it forces a segment switch and waits (up to --timeout) for that segment to be archived and verified; on a standby it checks the signal file ' +
        'against the wait mode, reads back and verifies the newest archived segment, and looks for triggers that would fail it over. ' +
        `Exits 0 when everything holds, ${ExitCode.problems} otherwise. Run it as the server's OS user, on its host.`,
    )
    .addOption(new Option('--json', 'print one JSON object instead of text'));
  addSettingOptions(command, 'check').action(async () => {
    const log = createLogger('walbridge check');
    const { json } = command.opts<{ json?: boolean }>();
    const settings = await settingsFrom(command, 'check');
    const { store } = await openRepository(settings, log);
    const [{ checkSetup }, { connectServer }] = await Promise.all([import('../archive/check/check.js'), import('../wal/server-facts.js')]);
    const findings = await checkSetup({
      settings,
      store,
      openStore: (other) => openRepository(other, log),
      connect: () => connectServer(settings.conninfo, settings.timeout * 1000),
      resolveCall,
      archiveWaitMs: settings.timeout * 1000,
      ownEnv: process.env,
    });
    const failed = findings.filter((f) => f.verdict === 'fail').length;
    process.stdout.write(json ? `${JSON.stringify({ ok: failed === 0, findings }, null, 2)}\n` : report(findings));
    done(failed === 0 ? ExitCode.ok : ExitCode.problems);
  });
  return command;
}

function report(findings: readonly Finding[]): string {
  const label = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' } as const;
  const failed = findings.filter((f) => f.verdict === 'fail').length;
  const warned = findings.filter((f) => f.verdict === 'warn').length;
  const lines = findings.map((f) => `${label[f.verdict]}  ${f.subject}: ${f.message}`);
  lines.push(
    failed === 0 ? `all checks passed${warned ? ` (${warned} warning${warned === 1 ? '' : 's'})` : ''}` : `${failed} check${failed === 1 ? '' : 's'} failed`,
  );
  return `${lines.join('\n')}\n`;
}

/** How an archive_command or restore_command calls walbridge, with the settings its call would resolve. */
export async function resolveCall(commandLine: string, serverEnv: NodeJS.ProcessEnv, cwd: string): Promise<ServerCall> {
  const words = shellWords(commandLine);
  if (!words || words.length === 0) return { calls: 'other', why: 'it is empty or more than one simple command (expansions, pipes, lists)' };
  const env = { ...serverEnv };
  let i = 0;
  const assignments = () => {
    for (let m: RegExpExecArray | null; i < words.length && (m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(words[i]!)); i++) env[m[1]!] = m[2]!;
  };
  assignments();
  if (words[i] === 'exec') i++;
  if ((words[i] === 'env' || words[i] === '/usr/bin/env') && !words[i + 1]?.startsWith('-')) {
    i++;
    assignments();
  }
  const called = walbridgeAt(words, i);
  if (!called) {
    // Through nice, timeout, flock...: their options are theirs, so the call's are not told apart here.
    const wrapper = path.basename(words[i] ?? '');
    for (let j = i + 1; WRAPPERS.has(wrapper) && j < words.length; j++) {
      const wrapped = walbridgeAt(words, j);
      if (wrapped) return { calls: 'wrapped', runs: wrapped.calls, exe: wrapped.exe, wrapper };
    }
    return { calls: 'other', why: `it runs ${words[i] ?? 'nothing'}` };
  }
  const { calls } = called;
  const args = words.slice(called.argsAt);
  const noop = () => undefined;
  const command =
    calls === 'push' ? (await import('./push.js')).pushCommand('archive-push', noop) : (await import('./fetch.js')).fetchCommand('archive-fetch', noop);
  command.exitOverride().configureOutput({ writeErr: noop, writeOut: noop });
  try {
    const { unknown } = command.parseOptions(args);
    if (unknown.length > 0) return { calls, problem: `unknown option ${unknown[0]!.split('=')[0]}` };
    // PostgreSQL runs the command in the data directory: a relative config file is found from there.
    const config = command.getOptionValue('config') as string | undefined;
    if (config && !path.isAbsolute(config)) command.setOptionValue('config', path.resolve(cwd, config));
    if (env['WALBRIDGE_CONFIG'] && !path.isAbsolute(env['WALBRIDGE_CONFIG'])) env['WALBRIDGE_CONFIG'] = path.resolve(cwd, env['WALBRIDGE_CONFIG']);
    const settings = await settingsFrom(command, calls, { env });
    const opts = command.opts<{ wait?: boolean; cleanup?: boolean }>();
    return { calls, settings, wait: calls === 'fetch' && opts.wait !== false, cleanup: !!opts.cleanup };
  } catch (err) {
    return { calls, problem: (err as Error).message.replace(/^error: /, '') };
  }
}

/** Programs that run the command they are given (with options of their own): env with options, nice, timeout... */
const WRAPPERS = new Set([
  'env',
  'nice',
  'ionice',
  'timeout',
  'flock',
  'chrt',
  'taskset',
  'nohup',
  'stdbuf',
  'setpriv',
  'sudo',
  'runuser',
  'chpst',
  'systemd-run',
]);

/** Whether words[i] runs walbridge's push or fetch (archive-push, archive-fetch, walbridge push|fetch), and where its arguments start. */
function walbridgeAt(words: readonly string[], i: number): { calls: 'push' | 'fetch'; exe: string; argsAt: number } | undefined {
  const exe = path.basename(words[i] ?? '');
  if (exe === 'archive-push' || exe === 'archive-fetch') return { calls: exe === 'archive-push' ? 'push' : 'fetch', exe, argsAt: i + 1 };
  const sub = words[i + 1];
  if (exe === 'walbridge' && (sub === 'push' || sub === 'fetch')) return { calls: sub, exe: `walbridge ${sub}`, argsAt: i + 2 };
  return undefined;
}
