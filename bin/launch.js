// What the three executables share: load the bundled CLI (dist/bundle/, built by "npm ci" /
// "npm run build") and run it. Kept free of the bundle: it must work when the bundle does not.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const STOP_SERVER = 200; // src/errors.ts ExitCode.stopServer
// Between a holding launcher and the process it tries: the bundle did not load (PostgreSQL never sees it).
const NOT_LOADABLE = 199;
const CHILD = 'WALBRIDGE_LAUNCH_TRY';

/** Runs `executable`'s command; `early` counts the SIGUSR1s caught by the executable's first line. */
export async function launch(executable, early) {
  const tryOnly = process.env[CHILD] === '1';
  delete process.env[CHILD]; // not for the processes the command starts
  let cli;
  try {
    cli = await import('../dist/bundle/main.js');
  } catch (err) {
    if (tryOnly) process.exit(NOT_LOADABLE);
    const root = new URL('..', import.meta.url).pathname;
    // A clone builds itself; an installed package or release is reinstalled whole.
    const mend = existsSync(path.join(root, 'src')) ? `run "npm ci" or "npm run build" in ${root}` : `reinstall walbridge (${root})`;
    const why = `walbridge is not built, or being reinstalled (${err.code ?? err.message}): ${mend}`;
    const dataDir = waitingUnderRecoverySignal(executable);
    if (dataDir === undefined) {
      process.stderr.write(`${executable}: ERROR: ${why}\n`);
      process.exit(70);
    }
    return holdUntilLoadable(executable, why, dataDir, early);
  }
  return cli.main(executable);
}

/**
 * src/archive/restore/hold.ts's rule where the bundle cannot be loaded: a waiting restore_command under
 * recovery.signal must not exit 1-125 (the standby would promote) unless a failover was asked
 * for. It holds while an install may be under way, and tries the whole command again in a new
 * process each time (Node keeps a failed import for the life of a process).
 */
async function holdUntilLoadable(executable, why, dataDir, early) {
  const parent = process.ppid;
  const server = postmaster(dataDir);
  for (let attempt = 0; ; attempt++) {
    if (attempt % 30 === 0)
      process.stderr.write(`${executable}: ERROR: ${why}; holding: under recovery.signal any other answer would end recovery and promote this standby\n`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    if (early.count > 0 || existsSync(path.join(dataDir, 'promote'))) {
      process.stderr.write(
        `${executable}: WARNING: failover requested (SIGUSR1, walbridge promote or pg_ctl promote) while walbridge cannot be loaded: answering "not found" so that recovery ends\n`,
      );
      process.exit(1);
    }
    if (process.ppid !== parent || (server && !running(server))) process.exit(STOP_SERVER); // whoever asked is gone
    const tried = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, [CHILD]: '1' } });
    if (tried.status === NOT_LOADABLE) continue;
    if (tried.signal) {
      process.removeAllListeners(tried.signal);
      process.kill(process.pid, tried.signal); // ended as it was (a SIGTERM is how PostgreSQL knows a shutdown)
    }
    process.exit(tried.status ?? STOP_SERVER);
  }
}

/** The data directory if `executable` is a restore_command waiting under recovery.signal (src/archive/restore/hold.ts waitsUnderRecoverySignal). */
export function waitingUnderRecoverySignal(executable, argv = process.argv.slice(2), cwd = process.cwd()) {
  if (!(executable === 'archive-fetch' || (executable === 'walbridge' && argv[0] === 'fetch')) || argv.includes('--no-wait')) return undefined;
  const walPath = argv.find((arg) => !arg.startsWith('-') && path.basename(path.dirname(path.resolve(arg))) === 'pg_wal');
  const dataDir = walPath ? path.dirname(path.dirname(path.resolve(walPath))) : cwd;
  return existsSync(path.join(dataDir, 'recovery.signal')) && !existsSync(path.join(dataDir, 'standby.signal')) ? dataDir : undefined;
}

/** The postmaster of `dataDir` (pid, start time) if it runs (src/wal/server.ts). */
function postmaster(dataDir) {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const start = startTime(pid);
    return start ? { pid, start } : undefined;
  } catch {
    return undefined;
  }
}

function running(server) {
  return startTime(server.pid) === server.start;
}

function startTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}
