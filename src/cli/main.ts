/**
 * Entry point of the three executables. Whatever happens, the process ends with one of the
 * statuses in errors.ts: commander's own usage errors would otherwise exit 1, which
 * restore_command's caller reads as "file not found".
 */
import { Command, CommanderError } from 'commander';
import { stopServer, waitsUnderRecoverySignal } from '../archive/restore/hold.js';
import { ExitCode, WalbridgeError, type ExitStatus } from '../errors.js';
import { createLogger, logFormat } from '../log.js';
import { removeTempFilesSync } from '../util/temp-files.js';
import { buildInfo } from './build-info.js';
import { reportFailure } from './failure.js';
import { finishMetering } from '../metrics/calls.js';

export type Executable = 'archive-push' | 'archive-fetch' | 'walbridge';

export async function main(executable: Executable, argv: string[] = process.argv.slice(2)): Promise<never> {
  let status: ExitStatus | undefined;
  const done = (s: ExitStatus) => {
    status = s;
  };
  // Temp files of work a process abandons as it ends (a background process whose server is gone).
  process.once('exit', removeTempFilesSync);
  const log = createLogger(executable === 'walbridge' && argv[0] === 'fetch' ? 'walbridge fetch' : executable);
  // A waiting restore_command under recovery.signal must never end with a status from 2 to 125:
  // PostgreSQL would end recovery and promote (see archive/restore/hold.ts). Whatever fails, even parsing
  // its arguments, ends it with 200 there.
  const holding = () => (executable === 'archive-fetch' || (executable === 'walbridge' && argv[0] === 'fetch')) && waitsUnderRecoverySignal(argv);
  // Node's own end for these is exit 1, "not found" to PostgreSQL: the same rule instead.
  const crashed = (err: unknown) => process.exit(reportFailure(holding() ? stopServer(err) : err, log));
  process.on('uncaughtException', crashed);
  process.on('unhandledRejection', crashed);
  try {
    const program = await buildProgram(executable, done);
    await program.parseAsync(argv, { from: 'user' });
    status ??= ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; help shown because a subcommand is missing is a usage error.
      status = err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
      if (status !== ExitCode.ok && holding())
        status = reportFailure(stopServer(new WalbridgeError('usage', `bad arguments: ${err.message.replace(/^error: /, '')}`)), log);
    } else {
      status = reportFailure(holding() ? stopServer(err) : err, log);
    }
  }
  await finishMetering(status);
  process.exit(status);
}

/** Loads only the modules of the command being run: every WAL file pays for what is imported. */
export async function buildProgram(executable: Executable, done: (s: ExitStatus) => void): Promise<Command> {
  let program: Command;
  const version = buildInfo().then((info) => info.walbridge);
  if (executable === 'archive-push') program = (await import('./push.js')).pushCommand('archive-push', done);
  else if (executable === 'archive-fetch') program = (await import('./fetch.js')).fetchCommand('archive-fetch', done);
  else {
    const [
      { pushCommand },
      { fetchCommand },
      { triggerCommand },
      { cleanupCommand },
      { statusCommand },
      { verifyCommand },
      { streamCommand },
      { promoteCommand },
      { backgroundCommand },
      { versionCommand },
      { checkCommand },
    ] = await Promise.all([
      import('./push.js'),
      import('./fetch.js'),
      import('./trigger.js'),
      import('./cleanup.js'),
      import('./status.js'),
      import('./verify.js'),
      import('./stream.js'),
      import('./promote.js'),
      import('./background.js'),
      import('./version.js'),
      import('./check.js'),
    ]);
    program = new Command('walbridge')
      .description('PostgreSQL WAL archiving and a waiting restore_command through S3, GCS or a local directory.')
      .addCommand(pushCommand('push', done))
      .addCommand(fetchCommand('fetch', done))
      .addCommand(triggerCommand(done))
      .addCommand(cleanupCommand(done))
      .addCommand(statusCommand(done))
      .addCommand(verifyCommand(done))
      .addCommand(streamCommand(done))
      .addCommand(promoteCommand(done))
      .addCommand(checkCommand(done))
      .addCommand(versionCommand(done))
      .addCommand(backgroundCommand('pusher', done), { hidden: true })
      .addCommand(backgroundCommand('fetcher', done), { hidden: true });
  }
  return configure(program.version(await version, '-V, --version'));
}

/** Usage errors exit through main (status 2), on one line (a JSON object with WALBRIDGE_LOG_FORMAT=json: flags are not read then). */
function configure(command: Command): Command {
  command.exitOverride().configureOutput({
    outputError: (text, write) => {
      const line = text.replace(/\n+$/, '').replace(/\n/g, ' ');
      if (logFormat() === 'json') createLogger(commandPath(command)).error(line.replace(/^error: /, ''));
      else write(`${line}\n`);
    },
  });
  for (const sub of command.commands) configure(sub);
  return command;
}

/** "walbridge fetch", "archive-push": the command as typed, for a log line's program. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}
