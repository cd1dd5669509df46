/** `walbridge stream <pgdata>`: record-based log shipping beside the primary (see archive/stream/run.ts). */
import path from 'node:path';
import { Command } from 'commander';
import { EXIT_CODE_HELP, ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { stopSwitch } from './signals.js';

export function streamCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('stream')
    .summary('ship the segment the primary is writing, as it is flushed (record-based log shipping)')
    .description(
      "Runs beside the primary (in the foreground; SIGTERM stops it cleanly): every --stream-interval it reads the primary's WAL flush position " +
        'and stores the newly flushed bytes of the current segment as a chunk under <namespace>/stream/. A smart failover then restores ' +
        'the streamed part of the segment that was never archived, so it loses at most one interval of commits instead of up to archive_timeout. ' +
        'Chunks of segments that archive-push stored whole are removed. Restart-safe: it resumes where the stored chunks end.',
    )
    .argument('<pgdata>', "the primary's data directory (its pg_wal is read; run as the user that owns it)")
    .addHelpText('after', `\n${EXIT_CODE_HELP}`);
  addSettingOptions(command, 'stream').action(async (pgdata: string) => {
    const log = createLogger('walbridge stream');
    const stop = stopSwitch(); // SIGTERM, SIGINT
    const settings = await settingsFrom(command, 'stream');
    const { streamWal } = await import('../archive/stream/run.js'); // pg and the codecs: only for this command
    await streamWal(settings, path.resolve(pgdata), log, stop);
    done(ExitCode.ok);
  });
  return command;
}
