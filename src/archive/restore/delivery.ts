/**
 * Where a restored segment goes. A call delivers to `%p` (filling the prefetch spool after it:
 * prefetch.ts); the background fetcher delivers into the spool, and the call publishes from
 * there (fetcher.ts), so only a live call ever writes `%p`. The wait (wait.ts) is the same for both.
 */
import type { WalFileName } from '../../wal/names.js';
import type { ClusterIdentity } from '../repo/identity.js';
import type { ChunkRange } from '../repo/stream-chunks.js';
import type { FetchContext } from './download.js';

export interface Delivery {
  /** Restores `file`, archived; 'absent' if it is not (any more). */
  restore(ctx: FetchContext, file: WalFileName, destination: string, identity: ClusterIdentity | undefined): Promise<'restored' | 'absent'>;
  /** The streamed part of a segment never archived whole; 'archived' if it landed whole meanwhile. */
  restoreStreamed(
    ctx: FetchContext,
    file: WalFileName,
    destination: string,
    identity: ClusterIdentity,
    chain: readonly (ChunkRange & { key: string })[],
  ): Promise<'restored' | 'archived'>;
  /** After a segment is delivered to `%p`: the standby's record of how far it got. */
  delivered(file: WalFileName, dataDir: string): Promise<void>;
}
