import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { SINGLE_REQUEST_LIMIT } from '../../src/storage/body.js';
import { PART_BYTES, S3Store } from '../../src/storage/s3.js';

/**
 * The real S3 driver with its SDK client replaced by a slow one (each part takes 20 ms to
 * "send"), counting the parts of all uploads in flight at once.
 */
function slowStore(seen: { inFlight: number; most: number; uploads: Set<string> }) {
  const store = new S3Store({ bucket: 'b', prefix: '', region: 'eu-west-1', pathStyle: false, checksum: 'when-required' });
  if (!('client' in store)) throw new Error('S3Store has no "client" any more: adapt this test');
  let ids = 0;
  const client = {
    send: async (command: unknown): Promise<unknown> => {
      if (command instanceof CreateMultipartUploadCommand) return { UploadId: `upload-${++ids}` };
      if (command instanceof UploadPartCommand) {
        seen.uploads.add(command.input.UploadId!);
        seen.most = Math.max(seen.most, ++seen.inFlight);
        await new Promise((resolve) => setTimeout(resolve, 20));
        seen.inFlight--;
        return { ETag: `"part-${command.input.PartNumber}"` };
      }
      if (command instanceof CompleteMultipartUploadCommand) return {};
      throw new Error(`unexpected ${(command as object).constructor.name}`);
    },
    destroy: () => undefined,
  };
  Object.assign(store, { client });
  return store;
}

describe('bodies sent in parts', () => {
  it('one upload in parts at a time in a process: the pusher uploading four big files holds one set of parts, not four', async () => {
    const body = Buffer.alloc(SINGLE_REQUEST_LIMIT + 1, 0x5a);
    const put = { body, md5: createHash('md5').update(body).digest(), metadata: {} };
    expect(Math.ceil(body.length / PART_BYTES)).toBeGreaterThan(2); // enough parts for two in flight
    const seen = { inFlight: 0, most: 0, uploads: new Set<string>() };
    const store = slowStore(seen);
    const outcomes = await Promise.all(['a', 'b', 'c', 'd'].map((key) => store.putIfAbsent(key, put)));
    expect(outcomes).toEqual(['created', 'created', 'created', 'created']);
    expect(seen.uploads.size).toBe(4);
    expect(seen.most).toBe(2); // PARTS_IN_FLIGHT of one upload
  });
});
