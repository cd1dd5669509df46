/** Small JSON records (identity.json, triggers): what a failing read is taken for. */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readJsonObject } from '../../src/archive/repo/json-object.js';
import { sealBuffer } from '../../src/codec/envelope.js';
import { StoreError } from '../../src/errors.js';
import type { Store } from '../../src/storage/store.js';

/** A store whose one object's body yields `first`, then fails as a reset socket does (S3 hands such errors on as they are). */
function storeWithBrokenBody(first: Buffer): Store {
  const sealed = sealBuffer(Buffer.from('{"format":1}\n'));
  return {
    location: 's3://bucket/prefix',
    get: async (key: string) => ({
      info: { key, size: sealed.size, metadata: sealed.metadata },
      body: Readable.from(
        (async function* () {
          yield first;
          throw Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
        })(),
      ),
    }),
  } as unknown as Store;
}

describe('readJsonObject', () => {
  it('takes a body that breaks off for the store failing (transient: retried or held), not for a damaged record or a bug', async () => {
    const err = await readJsonObject(storeWithBrokenBody(Buffer.from('{"form')), 'ns/identity.json').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect(err).toMatchObject({ kind: 'transient', message: 'reading s3://bucket/prefix/ns/identity.json broke off: aborted' });
  });
});
