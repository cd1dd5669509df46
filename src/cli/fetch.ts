/** `archive-fetch %f %p %r` / `walbridge fetch %f %p %r`: PostgreSQL's restore_command. */
import { Command, Option } from 'commander';
import { cleanupBefore } from '../archive/cleanup.js';
import { readStandbyState, writeStandbyState } from '../archive/standby-state.js';
import { fetchWalFile, waitForWalFile } from '../archive/wait.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import type { Store } from '../storage/store.js';
import { dataDirOfWalPath } from '../wal/datadir.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository, repositoryId } from './repository.js';
import { serveSpooled } from '../archive/prefetch.js';
import { parseRequestedName } from '../archive/fetch.js';
import { installSignalHandlers } from './signals.js';

export function fetchCommand(name: string, done: (status: ExitStatus) => void): Command {
  const invocation = name === 'fetch' ? 'walbridge fetch' : 'archive-fetch';
  const command = new Command(name)
    .summary('restore one WAL file (restore_command), waiting for segments not archived yet')
    .description(
      'Restore one WAL file from the repository (restore_command). The destination is written only after its content is verified, atomically. ' +
        'A segment that is not archived yet is waited for (polling with growing waits) until it lands or a failover is asked for: ' +
        'a trigger object ("walbridge trigger"), SIGUSR1, "pg_ctl promote" or --max-wait; then the answer is "not found" (exit 1), which ends recovery. ' +
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
        'With recovery.signal, a waiting fetch never exits with a failure status: every non-zero status would end recovery, so\n' +
        'failures (store unreachable, access denied, corrupt object) are logged and waited out instead.',
    );
  addSettingOptions(command, 'fetch').action(async (walFile: string, destination: string, restart: string | undefined) => {
    const log = createLogger(invocation);
    const flags = command.opts<{ wait: boolean; cleanup?: boolean; includeBackup?: boolean }>();
    const failover = installSignalHandlers();
    const settings = settingsFrom(command);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace, log };
    // Without waiting there is no trigger to consult: a prefetched segment is answered from
    // the spool before any SDK is loaded. (Waiting, every call must see the triggers first.)
    if (!flags.wait && !flags.cleanup && (await serveSpooled(scope, parseRequestedName(walFile), destination))) return done(ExitCode.ok);
    const { store, retry } = await openRepository(settings, log);
    const ctx = { ...scope, store, retry, prefetch: settings.prefetch };
    const outcome = flags.wait
      ? await waitForWalFile(ctx, walFile, destination, {
          pollIntervalMs: settings.pollInterval * 1000,
          maxPollIntervalMs: settings.maxPollInterval * 1000,
          maxWaitMs: settings.maxWait * 1000,
          standby: settings.standby,
          failover,
        })
      : await fetchWalFile(ctx, walFile, destination);
    if (outcome === 'restored' && flags.cleanup) {
      await cleanupAfterRestore(store, settings.namespace, restart, destination, !!flags.includeBackup, log);
    }
    done(outcome === 'restored' ? ExitCode.ok : ExitCode.notFound);
  });
  return command;
}

/** Cleanup runs only when %r moved since the last one; its failure never fails the restore. */
async function cleanupAfterRestore(store: Store, namespace: string, restart: string | undefined, destination: string, includeBackup: boolean, log: Logger) {
  if (!restart) {
    log.warn('--cleanup needs %r (restore_command = \'archive-fetch %f %p %r --cleanup\'); nothing cleaned up');
    return;
  }
  const dataDir = dataDirOfWalPath(destination);
  const state = dataDir ? await readStandbyState(dataDir) : {};
  if (state.cleanedUpTo === restart) return;
  try {
    await cleanupBefore(store, namespace, restart, { includeBackup, dryRun: false }, log);
    if (dataDir) await writeStandbyState(dataDir, { ...(await readStandbyState(dataDir)), cleanedUpTo: restart });
  } catch (err) {
    log.warn(`cleanup before ${restart} failed (the restore itself succeeded): ${(err as Error).message}`);
  }
}
