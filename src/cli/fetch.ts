/** `archive-fetch %f %p %r` / `walbridge fetch %f %p %r`: PostgreSQL's restore_command. */
import path from 'node:path';
import { Command, Option } from 'commander';
import type { Settings } from '../config/settings.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { formatServer, parseServer } from '../wal/server.js';
import { fingerprint } from '../archive/background/client.js';
import { restoreCall } from '../archive/restore/call.js';
import { repositoryId } from '../archive/repo/open.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { startBackground } from './background.js';
import { installSignalHandlers } from './signals.js';
import { meterCall, meterWalFile } from './metrics.js';

export function fetchCommand(name: string, done: (status: ExitStatus) => void): Command {
  const invocation = name === 'fetch' ? 'walbridge fetch' : 'archive-fetch';
  const command = new Command(name)
    .summary('restore one WAL file (restore_command), waiting for segments not archived yet')
    .description(
      'Restore one WAL file from the repository (restore_command). The destination is written only after its content is verified, atomically. ' +
        'A segment that is not archived yet is waited for (polling with growing waits) until it lands or a failover is asked for: ' +
        'a trigger object ("walbridge trigger"), SIGUSR1 ("walbridge promote"), "pg_ctl promote" or --max-wait; then the answer is "not found" (exit 1), which ends recovery. ' +
        'Other files (.history, .backup) answer at once.',
    )
    .argument('<walfile>', 'the WAL file name PostgreSQL asks for (%f)')
    .argument('<destination>', 'where to write it (%p)')
    .argument('[restartwalfile]', 'the oldest file still needed (%r), for --cleanup')
    .addOption(new Option('--no-wait', 'answer "not found" at once for anything not archived (for standby.signal setups, where PostgreSQL polls)'))
    .addOption(new Option('--cleanup', 'after a restore, delete archived segments that precede %r (off by default: never on a long-term archive)'))
    .addOption(new Option('--include-backup', 'with --cleanup, also delete .backup files that precede %r'))
    .addHelpText(
      'after',
      `\nUse in postgresql.conf (standby):\n  restore_command = '${invocation} %f %p %r'\n\n${EXIT_CODE_HELP}\n\n` +
        'With recovery.signal, a waiting fetch answers "not found" only for a failover someone asked for: any status from 1 to 125 would end\n' +
        'recovery. Other failures are held (logged once a minute, tried again, resumed once mended) or, where nothing can mend them while\n' +
        'it waits, end the call with 200, which stops the server instead of promoting it.',
    );
  addSettingOptions(command, 'fetch').action(async (walFile: string, destination: string, restart: string | undefined) => {
    const log = createLogger(invocation);
    const flags = command.opts<{ wait: boolean; cleanup?: boolean; includeBackup?: boolean }>();
    const failover = installSignalHandlers();
    let metered = false;
    const settings = async (): Promise<Settings> => {
      const resolved = await settingsFrom(command, 'fetch');
      if (!metered) {
        meterCall(resolved.metricsFile, 'fetch');
        meterWalFile(destination);
      }
      metered = true;
      return resolved;
    };
    const callEnv = { ...process.env }; // as the call got it: drivers may add variables of their own
    const outcome = await restoreCall({
      walFile,
      destination,
      restart,
      wait: flags.wait,
      cleanup: !!flags.cleanup,
      includeBackup: !!flags.includeBackup,
      log,
      failover,
      settings,
      env: callEnv,
      startFetcher: (walDir, server) => startBackground('fetcher', walDir, command, callEnv, server),
    });
    done(outcome === 'restored' ? ExitCode.ok : ExitCode.notFound);
  });
  return command;
}

/** `walbridge fetch-ahead <pg_wal>`: the background fetcher archive-fetch starts (not for direct use). */
export function fetchAheadCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('fetch-ahead')
    .description('Background fetcher started by archive-fetch: serves its calls for <pg_wal> and keeps the prefetch spool filled; exits when idle or when its server stops.')
    .argument('<pg_wal>', 'the pg_wal directory')
    .addOption(new Option('--server <pid:start>', 'the postmaster whose call started it: the fetcher stops when it does').hideHelp());
  addSettingOptions(command, 'fetch').action(async (walDir: string) => {
    const log = createLogger('walbridge fetch-ahead');
    installSignalHandlers();
    const settings = await settingsFrom(command, 'fetch');
    const server = parseServer(command.opts<{ server?: string }>().server ?? '');
    // Taken before a driver is opened: the S3 driver sets an AWS_ variable of its own.
    const configuration = fingerprint(settings, process.env, server && formatServer(server));
    const [{ openRepository }, { fetchAhead }, { tellingConnectedCalls }] = await Promise.all([
      import('../archive/repo/open.js'),
      import('../archive/restore/fetcher.js'),
      import('../archive/background/server.js'),
    ]);
    const { store, retry } = await openRepository(settings, tellingConnectedCalls(log));
    const ctx = { repository: repositoryId(settings), namespace: settings.namespace, log, store, retry, prefetch: settings.prefetch, keys: settings.encryption };
    await fetchAhead(ctx, path.resolve(walDir), {
      idleMs: settings.backgroundIdle * 1000,
      fingerprint: configuration,
      server,
      wait: {
        pollIntervalMs: settings.pollInterval * 1000,
        maxPollIntervalMs: settings.maxPollInterval * 1000,
        maxWaitMs: settings.maxWait * 1000,
        standby: settings.standby,
      },
    });
    done(ExitCode.ok);
  });
  return command;
}
