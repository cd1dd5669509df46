// Node's half of bin/walbridge, which starts it as: MALLOC_MMAP_THRESHOLD_=131072 node --expose-gc
// --inspect-port=192.0.2.1:65535 this-file ARGS; the background pusher and fetcher run it so
// themselves (src/archive/background/spawn.ts). SIGUSR1 is walbridge's (a failover request to a
// waiting `walbridge fetch`), from this first line on: one that arrives before the command's own
// handler is counted (src/cli/signals.ts), and so is one the front-end caught before it started
// Node (WALBRIDGE_SIGUSR1). Node's default would open its inspector, which the address above
// (TEST-NET-1, never this host's) keeps from ever listening.
const early = { count: Number(process.env.WALBRIDGE_SIGUSR1) || 0, listener: () => early.count++ };
delete process.env.WALBRIDGE_SIGUSR1;
globalThis[Symbol.for('walbridge.sigusr1')] = early;
process.on('SIGUSR1', early.listener);
import('../launch.js').then(
  ({ launch }) => launch('walbridge', early),
  (err) => {
    // Never 1-125 for a restore_command: under recovery.signal that would promote the standby.
    process.stderr.write(`walbridge: ERROR: walbridge's installation is incomplete (${err.code ?? err.message}): reinstall it\n`);
    process.exit(process.argv[2] === 'fetch' ? 200 : 70); // walbridge fetch may be a restore_command
  },
);
