/** `archive-fetch %f %p %r` / `walbridge fetch %f %p %r`: PostgreSQL's restore_command. */
import { Command, Option } from 'commander';
import type { Settings } from '../config/settings.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { callKeyOf } from '../archive/front-end.js';
import { restoreCall } from '../archive/restore/call.js';
import { addSettingOptions, settingsEnvironment, settingsFrom } from './options.js';
import { installSignalHandlers } from './signals.js';
import { meterCall, meterWalFile } from '../metrics/calls.js';

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
    // As the call got it (a driver may add variables of its own), with its flags for a fetcher it starts.
    const env = { ...process.env, ...settingsEnvironment(command) };
    let metered = false;
    const settings = async (): Promise<Settings> => {
      const resolved = await settingsFrom(command, 'fetch');
      if (!metered) {
        meterCall(resolved.metricsFile, 'fetch', resolved, log);
        meterWalFile(destination, walFile);
      }
      metered = true;
      return resolved;
    };
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
      env,
      callKey: callKeyOf(process.env),
    });
    done(outcome === 'restored' ? ExitCode.ok : ExitCode.notFound);
  });
  return command;
}
