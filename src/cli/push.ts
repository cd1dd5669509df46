/** `archive-push %p` / `walbridge push %p`: PostgreSQL's archive_command. */
import { Command } from 'commander';
import { archiveCall } from '../archive/push/call.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { meterCall, meterWalFile } from '../metrics/calls.js';
import { addSettingOptions, settingsEnvironment, settingsFrom } from './options.js';
import { removeTempFilesOnSignals } from './signals.js';

export function pushCommand(name: string, done: (status: ExitStatus) => void): Command {
  const invocation = name === 'push' ? 'walbridge push' : 'archive-push';
  const command = new Command(name)
    .summary('archive one finished WAL file (archive_command)')
    .description('Archive one finished WAL file (archive_command). Exits 0 only when the repository holds exactly its bytes, verified.')
    .argument('<path>', 'the WAL file to archive (%p)')
    .addHelpText('after', `\nUse in postgresql.conf:\n  archive_command = '${invocation} %p'\n\n${EXIT_CODE_HELP}`);
  addSettingOptions(command, 'push').action(async (walPath: string) => {
    const log = createLogger(invocation);
    removeTempFilesOnSignals(); // a large body may be spilled to a temp file in pg_wal
    // As the call got it (a driver may add variables of its own), with its flags for a pusher it starts.
    const env = { ...process.env, ...settingsEnvironment(command) };
    const settings = await settingsFrom(command, 'push');
    meterCall(settings.metricsFile, 'push', settings, log);
    meterWalFile(walPath);
    await archiveCall({ walPath, settings, log, env });
    done(ExitCode.ok);
  });
  return command;
}
