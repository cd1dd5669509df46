/**
 * `walbridge stream`: record-based log shipping beside the primary. Every --stream-interval it
 * reads the local primary's flush position and ships the newly flushed bytes of the current
 * segment (streamer.ts). One per data directory; the store failing or the primary restarting is
 * waited out and said once a minute; a wrong server, another cluster or a fenced timeline ends it.
 */
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Settings } from '../../config/settings.js';
import { WalbridgeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { takeInstanceLock } from '../../util/single-instance.js';
import { readControlSystemIdentifier } from '../../wal/datadir.js';
import { connectPrimary } from '../../wal/primary.js';
import { instanceName, pidFile, walbridgeDir } from '../local-layout.js';
import { loadIdentity } from '../repo/identity.js';
import { openRepository } from '../repo/open.js';
import { SegmentStreamer } from './streamer.js';
import { streamMeter } from '../../metrics/stream.js';

/** A failure being waited out is logged again after this long. */
const FAILURE_LOG_EVERY_MS = 60_000;

/** Asked to stop (SIGTERM): one more pass ships what was flushed by then. `sleep` ends early when it is asked. */
export interface StopRequest {
  readonly requested: boolean;
  sleep(ms: number): Promise<void>;
}

/** Streams the primary of `dataDir` until asked to stop; throws what cannot be waited out. */
export async function streamWal(settings: Settings, dataDir: string, log: Logger, stop: StopRequest): Promise<void> {
  const walDir = path.join(dataDir, 'pg_wal');
  const systemIdentifier = await readControlSystemIdentifier(dataDir);
  if (!systemIdentifier) throw new WalbridgeError('config', `${dataDir} is not a PostgreSQL data directory (no readable global/pg_control)`);
  const lockName = instanceName(walDir, 'stream');
  const lock = lockName && (await takeInstanceLock(lockName));
  if (!lock) throw new WalbridgeError('config', `another walbridge stream runs for ${dataDir} (see ${pidFile(walDir, 'stream')})`);
  await mkdir(walbridgeDir(walDir), { mode: 0o700, recursive: true });
  await writeFile(pidFile(walDir, 'stream'), `${process.pid}\n`);

  const { store, retry } = await openRepository(settings, log);
  let primary: Awaited<ReturnType<typeof connectPrimary>> | undefined;
  let streamer: InstanceType<typeof SegmentStreamer> | undefined;
  let failingSince: number | undefined;
  let lastFailureLog = 0;
  let inRecoveryLogged = false;
  const intervalMs = settings.streamInterval * 1000;
  const meter = streamMeter(settings.metricsFile, settings, log);
  let flushed: bigint | undefined;
  try {
    for (;;) {
      const last = stop.requested; // after a stop request: one more pass ships what was flushed by then
      try {
        if (!primary) {
          primary = await connectPrimary(settings.conninfo, Math.min(settings.timeout * 1000, 10_000));
          // The same cluster is not enough: a standby of it, or whatever a VIP points at, has
          // the same system identifier, but its WAL is not the pg_wal read here.
          const local = await runningPostmaster(dataDir);
          const server = { startedAt: primary.info.startedAt, port: primary.info.port };
          // postmaster.pid takes its time first, pg_postmaster_start_time() once shared memory and
          // preloaded libraries are set up: seconds later on a big server.
          const lag = local ? server.startedAt - local.startedAt : NaN;
          if (!local || local.port !== server.port || !(lag >= -1 && lag <= 60)) {
            const describe = (p: typeof server) => `port ${p.port}, started ${new Date(p.startedAt * 1000).toISOString()}`;
            throw new WalbridgeError(
              'config',
              `the server that --conninfo (or libpq's PG* variables) reaches is not the one running in ${dataDir} (${describe(server)}; ${local ? `${dataDir}'s: ${describe(local)}` : `${dataDir} has no postmaster.pid`}): connect to the local primary`,
            );
          }
          if (primary.info.systemIdentifier !== systemIdentifier) {
            throw new WalbridgeError(
              'foreignCluster',
              `the server at --conninfo is the cluster with system identifier ${primary.info.systemIdentifier}, but ${dataDir} belongs to ${systemIdentifier}: connect to the primary whose data directory this is`,
            );
          }
          const identity = await loadIdentity(store, settings.namespace);
          if (identity && identity.systemIdentifier !== systemIdentifier) {
            throw new WalbridgeError(
              'foreignCluster',
              `namespace "${settings.namespace}" belongs to system identifier ${identity.systemIdentifier}, not to this primary (${systemIdentifier})`,
            );
          }
          if (!streamer) {
            streamer = new SegmentStreamer({
              store,
              namespace: settings.namespace,
              walDir,
              segmentSize: primary.info.segmentSize,
              codec: settings.compress,
              level: settings.compressLevel,
              encryption: settings.encryption,
              retry,
              log,
            });
            await streamer.discoverLeftovers();
          }
          log.info(`connected to the primary (system identifier ${systemIdentifier}); shipping flushed WAL every ${settings.streamInterval} s`);
        }
        const position = await primary.flushPosition();
        if (position === 'in-recovery') {
          if (!inRecoveryLogged) log.info('the server is in recovery (a standby): nothing to stream until it is promoted');
          inRecoveryLogged = true;
        } else {
          inRecoveryLogged = false;
          flushed = position.lsn;
          await streamer!.advance(position);
        }
        if (failingSince !== undefined) log.info(`streaming again after ${Math.round((Date.now() - failingSince) / 1000)} s`);
        failingSince = undefined;
      } catch (err) {
        if (err instanceof WalbridgeError && err.kind === 'fenced') await meter.retire();
        if (err instanceof WalbridgeError && ['config', 'foreignCluster', 'notWal', 'encryptionKey', 'fenced'].includes(err.kind)) throw err;
        // The primary restarting, the store failing: keep trying, say so now and then.
        await primary?.close();
        primary = undefined;
        failingSince ??= Date.now();
        if (Date.now() - lastFailureLog >= FAILURE_LOG_EVERY_MS) {
          lastFailureLog = Date.now();
          log.error(`cannot stream: ${(err as Error).message}; retrying every ${settings.streamInterval} s (at ${streamer?.describe() ?? 'nothing yet'})`);
        }
      }
      meter.pass({ flush: flushed, shipped: streamer?.shippedPosition(), failing: failingSince !== undefined });
      if (last) break;
      await stop.sleep(intervalMs);
    }
    await streamer?.cleanUp(true).catch(() => undefined);
    log.info(`stopped (at ${streamer?.describe() ?? 'nothing yet'})`);
  } finally {
    await meter.flush();
    await primary?.close();
    await unlink(pidFile(walDir, 'stream')).catch(() => undefined);
    await lock.release();
  }
}

/** The start time (epoch seconds) and port postmaster.pid records, or undefined without a running server. */
async function runningPostmaster(dataDir: string): Promise<{ startedAt: number; port: number } | undefined> {
  const lines = (await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n');
  const startedAt = Number(lines[2]);
  const port = Number(lines[3]);
  return Number.isInteger(startedAt) && startedAt > 0 && Number.isInteger(port) && port > 0 ? { startedAt, port } : undefined;
}
