/**
 * One archive_command call, from `%p` to its answer: from the pusher's marker (no SDK loaded),
 * through the background pusher, or by itself (starting a pusher for the next files). It returns
 * only once the repository holds exactly the file's bytes, verified; anything else throws.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Settings } from '../../config/settings.js';
import type { Logger } from '../../log.js';
import { dataDirOfWalPath } from '../../wal/datadir.js';
import { formatServer, runningServer } from '../../wal/server.js';
import { askBackground, backgroundRunning, fingerprint } from '../background/client.js';
import { prefetchDir, walDirOf } from '../local-layout.js';
import { repositoryId } from '../repo/open.js';
import { clearInFlight, confirmPushed, markInFlight } from './markers.js';
import type { PushAnswer } from './pusher.js';

export interface ArchiveCall {
  /** %p */
  readonly walPath: string;
  readonly settings: Settings;
  readonly log: Logger;
  /** The environment the call got, with its settings flags as variables: what a pusher it starts is given. */
  readonly env: NodeJS.ProcessEnv;
}

export async function archiveCall({ walPath, settings, log, env }: ArchiveCall): Promise<void> {
  const scope = { repository: repositoryId(settings), namespace: settings.namespace };
  const walDir = walDirOf(walPath);
  if (walDir) await removeLeftoverSpool(walDir);
  // Archived ahead by the background pusher: answered from its marker, without loading any SDK.
  if (await confirmPushed(scope, walPath, log)) return;
  const viaPusher = walDir !== undefined && settings.pushConcurrency > 1;
  const dataDir = dataDirOfWalPath(walPath);
  const server = dataDir && viaPusher ? await runningServer(dataDir, { ancestorOnly: true }) : undefined;
  if (viaPusher) {
    // Or stored now by the pusher, which has the SDK loaded and connections open.
    const name = path.basename(walPath);
    const request = {
      walbridge: 1,
      type: 'push',
      fingerprint: fingerprint(settings, env, server && formatServer(server)),
      name,
      path: path.resolve(walPath),
    } as const;
    const answer = await askBackground<PushAnswer>('pusher', walDir, request, log, { timeout: { seconds: settings.timeout, what: `push of ${name}` } });
    // Exit 0 only on the one answer that says the file is stored and verified: anything else, the call pushes it itself.
    if (answer?.status === 'stored') return;
  }
  // Loaded only now: calls answered above never pay for the SDK, compression or child processes.
  const [{ openRepository }, { pushContext, pushWalFile }, { startBackground }] = await Promise.all([
    import('../repo/open.js'),
    import('./push.js'),
    import('../background/spawn.js'),
  ]);
  const { store, retry } = await openRepository(settings, log);
  // Said before a pusher starts: its scan leaves this file to this call.
  if (viaPusher) await markInFlight(walDir, path.basename(walPath), true);
  if (viaPusher && !(await backgroundRunning(walDir, 'pusher'))) {
    // The other ready files are stored by the pusher while the archiver works through them; this call waits only for its own.
    try {
      startBackground('pusher', walDir, env, server);
    } catch (err) {
      log.warn(`could not start the background pusher (only the file asked for is pushed): ${(err as Error).message}`);
    }
  }
  try {
    await pushWalFile(pushContext(settings, store, retry, log), walPath);
  } finally {
    if (viaPusher) await clearInFlight(walDir, path.basename(walPath));
  }
}

/**
 * A promoted standby's prefetch spool can serve nobody: the first archive_command of the new
 * primary removes it if the background fetcher has not. One stat when there is none.
 */
async function removeLeftoverSpool(walDir: string): Promise<void> {
  if (
    !(await stat(prefetchDir(walDir)).then(
      () => true,
      () => false,
    ))
  )
    return;
  const { removeSpoolAfterRecovery } = await import('../restore/spool.js');
  await removeSpoolAfterRecovery(walDir);
}
