/**
 * Client-side encryption keys: where they come from, and the ids that name them in stored
 * objects, so keys can rotate while objects written with older ones stay readable.
 *
 * A key is 32 random bytes written as base64 (`openssl rand -base64 32`) or 64 hex digits. A key
 * file holds one key per line: the first encrypts new objects, the others only decrypt (rotate
 * by adding a new first line; drop an old line once nothing written with it is needed).
 * WALBRIDGE_ENCRYPTION_KEY holds the same list, separated by whitespace or commas.
 * Key material never leaves this module but as a Buffer handed to the cipher: the ring prints
 * and serialises as its ids only.
 */
import { createHmac } from 'node:crypto';
import { readSmallFile } from '../util/small-file.js';

const KEY_BYTES = 32;
export const KEY_ENV = 'WALBRIDGE_ENCRYPTION_KEY';

export interface EncryptionKey {
  /** 16 hex digits derived from the key (HMAC): the same key always has the same id. */
  readonly id: string;
  readonly material: Buffer;
}

/** Parses a list of keys; a string is what is wrong (never quoting the text, which may be a key). */
export function parseKeys(text: string): EncryptionKey[] | string {
  const keys: EncryptionKey[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, '').trim();
    for (const word of line.split(/[\s,]+/).filter((w) => w !== '')) {
      const material = decodeKey(word);
      if (!material) return `line ${i + 1}: not a key (expected 32 bytes as base64, e.g. from "openssl rand -base64 32", or 64 hex digits)`;
      const key = { id: keyId(material), material };
      if (!keys.some((k) => k.id === key.id)) keys.push(key);
    }
  }
  if (keys.length === 0) return 'no key in it';
  return keys;
}

function decodeKey(word: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(word)) return Buffer.from(word, 'hex');
  if (/^[A-Za-z0-9+/]{43}=?$/.test(word)) {
    const bytes = Buffer.from(word, 'base64');
    if (bytes.length === KEY_BYTES) return bytes;
  }
  return undefined;
}

export function keyId(material: Buffer): string {
  return createHmac('sha256', material).update('walbridge key id v1').digest('hex').slice(0, 16);
}

/** Where the keys were given, for messages (never the keys themselves). */
export type KeySource = { readonly file: string } | { readonly env: typeof KEY_ENV };

export class KeyRing {
  constructor(
    readonly source: KeySource,
    private readonly keys: EncryptionKey[],
    /** Whether objects stored in the clear (before encryption was turned on) are still accepted. */
    readonly acceptsPlaintext = false,
  ) {}

  /** The key new objects are encrypted with. */
  get current(): EncryptionKey {
    return this.keys[0]!;
  }

  get ids(): string[] {
    return this.keys.map((k) => k.id);
  }

  /**
   * The key with this id. (A key added to the key file reaches a waiting standby through its
   * settings, read again at every try: see archive/restore/hold.ts.)
   */
  find(id: string): EncryptionKey | undefined {
    return this.keys.find((k) => k.id === id);
  }

  describeSource(): string {
    return 'file' in this.source ? `encryption-key-file ${this.source.file}` : KEY_ENV;
  }

  /** Serialised (settings fingerprints, logs) as ids only. */
  toJSON(): { keyIds: string[]; source: KeySource; acceptsPlaintext: boolean } {
    return { keyIds: this.ids, source: this.source, acceptsPlaintext: this.acceptsPlaintext };
  }

  toString(): string {
    return `keys ${this.ids.join(', ')} from ${this.describeSource()}`;
  }
}

/** The keys in a file, or what is wrong with it (never its content). */
export async function readKeyFile(file: string): Promise<EncryptionKey[] | string> {
  let text: string;
  try {
    text = await readSmallFile(file);
  } catch (err) {
    return `cannot read it: ${(err as Error).message}`;
  }
  return parseKeys(text);
}
