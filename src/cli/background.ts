/** `walbridge pusher|fetcher <pg_wal>`: the background processes the calls start (not for direct use). */
import path from 'node:path';
import { Command, Option } from 'commander';
import { fingerprint } from '../archive/background/client.js';
import { callKeyOf } from '../archive/front-end.js';
import type { BackgroundRole } from '../archive/local-layout.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { formatServer, parseServer } from '../wal/server.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { installSignalHandlers, removeTempFilesOnSignals } from './signals.js';

const ROLES = {
  pusher: {
    settingsOf: 'push',
    description: 'Background pusher started by archive-push: stores the files marked .ready in <pg_wal>; exits when idle or when its server stops.',
    run: async () => (await import('../archive/push/pusher.js')).runPusher,
  },
  fetcher: {
    settingsOf: 'fetch',
    description:
      'Background fetcher started by archive-fetch: serves its calls for <pg_wal> and keeps the prefetch spool filled; exits when idle or when its server stops.',
    run: async () => (await import('../archive/restore/fetcher.js')).runFetcher,
  },
} as const satisfies Record<BackgroundRole, unknown>;

export function backgroundCommand(role: BackgroundRole, done: (status: ExitStatus) => void): Command {
  const { settingsOf, description, run } = ROLES[role];
  const command = new Command(role)
    .description(description)
    .argument('<pg_wal>', 'the pg_wal directory')
    .addOption(new Option('--server <pid:start>', 'the postmaster whose call started it: it stops when that postmaster does').hideHelp());
  addSettingOptions(command, settingsOf).action(async (walDir: string) => {
    const log = createLogger(`walbridge ${role}`, { stamped: true });
    if (role === 'pusher') removeTempFilesOnSignals();
    else installSignalHandlers();
    const settings = await settingsFrom(command, settingsOf);
    const server = parseServer(command.opts<{ server?: string }>().server ?? '');
    // Taken before a driver is opened: the S3 driver sets an AWS_ variable of its own.
    const configuration = fingerprint(settings, process.env, server && formatServer(server));
    await (await run())(settings, path.resolve(walDir), server, configuration, log, callKeyOf(process.env));
    done(ExitCode.ok);
  });
  return command;
}
