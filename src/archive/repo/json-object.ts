/**
 * Small JSON records in the repository (the namespace identity, triggers): stored with a
 * content hash like any WAL file, so a damaged record is refused instead of misread.
 */
import { describeContent, sealBuffer } from '../../codec/envelope.js';
import { sha256Hex } from '../../codec/hash.js';
import { WalbridgeError } from '../../errors.js';
import { getIfPresent, StoreError, type Store } from '../../storage/store.js';

/** The parsed record, or undefined if there is none. Throws 'corrupt' if it cannot be trusted. */
export async function readJsonObject(store: Store, key: string): Promise<unknown> {
  const opened = await getIfPresent(store, key);
  if (!opened) return undefined;
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of opened.body) chunks.push(chunk as Buffer);
  } catch (err) {
    // S3 hands on its socket's errors as they are: a reset is the store failing, to be retried or held, not a bug.
    if (err instanceof StoreError || err instanceof WalbridgeError) throw err;
    throw new StoreError('transient', `reading ${store.location}/${key} broke off: ${(err as Error).message}`, { cause: err });
  }
  const data = Buffer.concat(chunks);
  const promised = describeContent(opened.info.metadata);
  if (typeof promised === 'string' || promised.sha256 !== sha256Hex(data)) {
    throw new WalbridgeError('corrupt', `${store.location}/${key} is corrupt (its content does not match its hash); inspect it before going on`);
  }
  try {
    return JSON.parse(data.toString('utf8')) as unknown;
  } catch {
    throw new WalbridgeError('corrupt', `${store.location}/${key} is not valid JSON`);
  }
}

/** Creates the record unless one exists; 'exists' leaves the existing one untouched. */
export async function createJsonObject(store: Store, key: string, value: unknown): Promise<'created' | 'exists'> {
  return store.putIfAbsent(key, sealBuffer(Buffer.from(`${JSON.stringify(value, null, 2)}\n`)));
}
