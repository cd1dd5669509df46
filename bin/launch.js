// What the three executables share: load the bundled CLI (dist/bundle/, built by "npm ci" /
// "npm run build") and run it. Kept free of the bundle: it must work when the bundle does not.
import { existsSync } from 'node:fs';
import path from 'node:path';

const STOP_SERVER = 200; // src/errors.ts ExitCode.stopServer

export async function launch(executable) {
  const parent = process.ppid;
  for (let attempt = 0; ; attempt++) {
    let cli;
    try {
      // A new URL per attempt: a module that failed to load is not retried under the same one.
      cli = await import(`../dist/bundle/main.js${attempt ? `?attempt=${attempt}` : ''}`);
    } catch (err) {
      const why = `walbridge is not built, or being reinstalled (${err.code ?? err.message}): run "npm ci" or "npm run build" in ${new URL('..', import.meta.url).pathname}`;
      // A waiting restore_command under recovery.signal must not exit 1-125 (the standby would
      // promote): it holds while an install may be under way, as src/archive/hold.ts holds.
      if (!waitsUnderRecoverySignal(executable)) {
        process.stderr.write(`${executable}: ERROR: ${why}\n`);
        process.exit(70);
      }
      if (attempt % 30 === 0) process.stderr.write(`${executable}: ERROR: ${why}; holding: under recovery.signal any other answer would promote this standby\n`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      if (process.ppid !== parent) process.exit(STOP_SERVER); // whoever asked is gone
      continue;
    }
    return cli.main(executable);
  }
}

/** src/archive/hold.ts waitsUnderRecoverySignal, for when the bundle cannot be loaded. */
function waitsUnderRecoverySignal(executable) {
  const argv = process.argv.slice(2);
  if (!(executable === 'archive-fetch' || (executable === 'walbridge' && argv[0] === 'fetch')) || argv.includes('--no-wait')) return false;
  const walPath = argv.find((arg) => !arg.startsWith('-') && path.basename(path.dirname(path.resolve(arg))) === 'pg_wal');
  const dataDir = walPath ? path.dirname(path.dirname(path.resolve(walPath))) : process.cwd();
  return existsSync(path.join(dataDir, 'recovery.signal')) && !existsSync(path.join(dataDir, 'standby.signal'));
}
