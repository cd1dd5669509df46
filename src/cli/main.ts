/**
 * Entry point of the three executables. Whatever happens, the process ends with one of the
 * statuses in errors.ts: commander's own usage errors would otherwise exit 1, which
 * restore_command's caller reads as "file not found".
 */
import { Command, CommanderError } from 'commander';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { reportFailure } from './failure.js';
import { cleanupCommand } from './cleanup.js';
import { fetchCommand } from './fetch.js';
import { pushCommand } from './push.js';
import { triggerCommand } from './trigger.js';

export type Executable = 'archive-push' | 'archive-fetch' | 'walbridge';

export async function main(executable: Executable, argv: string[] = process.argv.slice(2)): Promise<never> {
  let status: ExitStatus | undefined;
  const done = (s: ExitStatus) => {
    status = s;
  };
  const program = buildProgram(executable, done);
  try {
    await program.parseAsync(argv, { from: 'user' });
    status ??= ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      const benign = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
      status = benign ? ExitCode.ok : ExitCode.usage;
    } else {
      status = reportFailure(err, createLogger(executable));
    }
  }
  process.exit(status);
}

function buildProgram(executable: Executable, done: (s: ExitStatus) => void): Command {
  let program: Command;
  if (executable === 'archive-push') program = pushCommand('archive-push', done);
  else if (executable === 'archive-fetch') program = fetchCommand('archive-fetch', done);
  else {
    program = new Command('walbridge')
      .description('PostgreSQL WAL archiving and a waiting restore_command through S3, GCS or a local directory.')
      .addCommand(pushCommand('push', done))
      .addCommand(fetchCommand('fetch', done))
      .addCommand(triggerCommand(done))
      .addCommand(cleanupCommand(done));
  }
  return configure(program);
}

/** Usage errors exit through main (status 2), on one line. */
function configure(command: Command): Command {
  command.exitOverride().configureOutput({
    outputError: (text, write) => write(text.replace(/\n+$/, '').replace(/\n/g, ' ') + '\n'),
  });
  for (const sub of command.commands) configure(sub);
  return command;
}
