/** `archive-push %p` / `walbridge push %p`: PostgreSQL's archive_command. */
import { Command } from 'commander';
import { confirmPushed, pushWithLookahead } from '../archive/lookahead.js';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository, repositoryId } from './repository.js';
import { removeTempFilesOnSignals } from './signals.js';

export function pushCommand(name: string, done: (status: ExitStatus) => void): Command {
  const command = new Command(name)
    .summary('archive one finished WAL file (archive_command)')
    .description('Archive one finished WAL file (archive_command). Exits 0 only when the repository holds exactly its bytes, verified.')
    .argument('<path>', 'the WAL file to archive (%p)')
    .addHelpText(
      'after',
      `\nUse in postgresql.conf:\n  archive_command = '${name === 'push' ? 'walbridge push' : 'archive-push'} %p'\n\n${EXIT_CODE_HELP}`,
    );
  addSettingOptions(command, 'push').action(async (walPath: string) => {
    const log = createLogger(name === 'push' ? 'walbridge push' : name);
    removeTempFilesOnSignals(); // a large body may be spilled to a temp file in pg_wal
    const settings = settingsFrom(command);
    const scope = { repository: repositoryId(settings), namespace: settings.namespace };
    // Archived ahead by an earlier call: answered from the marker, without loading any SDK.
    if (await confirmPushed(scope, walPath, log)) return done(ExitCode.ok);
    const { store } = await openRepository(settings, log);
    const ctx = { store, namespace: settings.namespace, codec: settings.compress, level: settings.compressLevel, log };
    await pushWithLookahead(ctx, scope, walPath, settings.pushConcurrency);
    done(ExitCode.ok);
  });
  return command;
}
