/** `archive-fetch %f %p %r` / `walbridge fetch %f %p %r`: PostgreSQL's restore_command. */
import { Command } from 'commander';
import { fetchWalFile } from '../archive/fetch.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { openStore } from '../storage/open.js';
import { retryPolicy, withRetries } from '../storage/retry.js';
import { addSettingOptions, settingsFrom } from './options.js';

export function fetchCommand(name: string, done: (status: ExitStatus) => void): Command {
  const command = new Command(name)
    .summary('restore one WAL file (restore_command)')
    .description(
      'Restore one WAL file from the repository (restore_command). Writes the destination only after verifying the content, atomically; exits 1 if the file is not archived.',
    )
    .argument('<walfile>', 'the WAL file name PostgreSQL asks for (%f)')
    .argument('<destination>', 'where to write it (%p)')
    .argument('[restartwalfile]', 'the oldest file still needed (%r)')
    .addHelpText(
      'after',
      `\nUse in postgresql.conf (standby):\n  restore_command = '${name === 'fetch' ? 'walbridge fetch' : 'archive-fetch'} %f %p %r'\n\n${EXIT_CODE_HELP}`,
    );
  addSettingOptions(command).action(async (walFile: string, destination: string) => {
    const log = createLogger(name === 'fetch' ? 'walbridge fetch' : name);
    const settings = settingsFrom(command);
    const retry = retryPolicy(settings.timeout, (what, err, attempt) => log.warn(`${what}: attempt ${attempt} failed (${err.message}); retrying`));
    const store = withRetries(await openStore(settings.repo, settings), retry);
    const outcome = await fetchWalFile({ store, namespace: settings.namespace, log, retry }, walFile, destination);
    done(outcome === 'restored' ? ExitCode.ok : ExitCode.notFound);
  });
  return command;
}
