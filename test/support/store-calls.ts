/** Store calls the driver tests share: an object read whole, and the StoreError a call ends with. */
import { StoreError, type Store } from '../../src/storage/store.js';

export async function readObject(store: Store, key: string): Promise<{ data: Buffer; metadata: Record<string, string> }> {
  const { info, body } = await store.get(key);
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return { data: Buffer.concat(chunks), metadata: { ...info.metadata } };
}

export async function storeError(promise: Promise<unknown>): Promise<StoreError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error('expected a StoreError');
}
