/** `walbridge promote [pgdata]`: fast failover of the standby on this host, without the bucket. */
import path from 'node:path';
import { Command, Option } from 'commander';
import { WalbridgeError, type ExitStatus, ExitCode } from '../errors.js';
import { createLogger } from '../log.js';

export function promoteCommand(done: (status: ExitStatus) => void): Command {
  return new Command('promote')
    .summary('fail over the standby on this host now (fast), as pg_ctl promote does, and answer its waiting archive-fetch at once')
    .description(
      "Asks the standby running in <pgdata> to end recovery: writes the data directory's promote file and signals the postmaster, as " +
        '"pg_ctl promote" does, and sends SIGUSR1 to exactly the archive-fetch call that waits for a segment (pg_wal/walbridge/waiting.pid), ' +
        'so that it answers "not found" at once. Segments not restored yet are not replayed (a fast failover); for a smart one use "walbridge trigger smart". ' +
        'Run it as the user that runs the server. Waits until the server has left recovery (exit 0), at most --wait seconds (exit 1 if it has not).',
    )
    .argument('[pgdata]', "the standby's data directory (default: $PGDATA)")
    .addOption(new Option('--wait <seconds>', 'how long to wait for the server to leave recovery (0: do not wait)').default('60'))
    .action(async (pgdata: string | undefined, opts: { wait: string }) => {
      const log = createLogger('walbridge promote');
      const dataDir = pgdata ?? process.env['PGDATA'];
      if (!dataDir) throw new WalbridgeError('usage', "give the standby's data directory (or set PGDATA)");
      const waitSeconds = Number(opts.wait);
      if (!Number.isFinite(waitSeconds) || waitSeconds < 0 || waitSeconds > 86_400)
        throw new WalbridgeError('usage', `bad --wait "${opts.wait}": expected seconds from 0 to 86400`);
      const { promoteStandby } = await import('../archive/restore/promote.js');
      const outcome = await promoteStandby(path.resolve(dataDir), { waitMs: waitSeconds * 1000, log });
      if (outcome.promoted === false) {
        log.error(`the server in ${dataDir} is still in recovery after ${waitSeconds} s: see its log`);
        return done(ExitCode.notFound);
      }
      if (outcome.promoted) log.info(`the server in ${dataDir} has left recovery`);
      done(ExitCode.ok);
    });
}
