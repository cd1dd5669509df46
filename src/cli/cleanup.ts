/** `walbridge cleanup %r`: archive_cleanup_command, as pg_archivecleanup does it. */
import { Command, Option } from 'commander';
import { cleanupBefore } from '../archive/repo/cleanup.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository } from '../archive/repo/open.js';

export function cleanupCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('cleanup')
    .summary('delete archived WAL that precedes a restart file (archive_cleanup_command)')
    .description(
      "Delete the namespace's segments (and .partial files) whose position precedes <restartwalfile>, whatever their timeline, as pg_archivecleanup does. " +
        '.history files are never deleted; .backup files only with --include-backup. Never point this at a namespace that is also the long-term archive.',
    )
    .argument('<restartwalfile>', 'the oldest file still needed (%r)')
    .addOption(new Option('--dry-run', 'list what would be deleted, delete nothing'))
    .addOption(new Option('--include-backup', 'also delete .backup files that precede it'))
    .addHelpText('after', "\nUse in postgresql.conf (standby):\n  archive_cleanup_command = 'walbridge cleanup %r'");
  addSettingOptions(command, 'cleanup').action(async (restart: string) => {
    const log = createLogger('walbridge cleanup');
    const flags = command.opts<{ dryRun?: boolean; includeBackup?: boolean }>();
    const settings = await settingsFrom(command, 'cleanup');
    const { store } = await openRepository(settings, log);
    const keys = await cleanupBefore(store, settings.namespace, restart, { dryRun: !!flags.dryRun, includeBackup: !!flags.includeBackup }, log);
    if (flags.dryRun) for (const key of keys) process.stdout.write(`${key}\n`);
    done(ExitCode.ok);
  });
  return command;
}
