/** Reading a request body that may live in a file, in bounded pieces, for the drivers. */
import { open } from 'node:fs/promises';
import { noteBytesProcessed } from '../util/memory.js';
import type { Body } from './store.js';

/** Bodies up to this size are sent in one request; bigger ones in parts (multipart, resumable). */
export const SINGLE_REQUEST_LIMIT = 16 * 1024 * 1024;

/** The whole body in memory (only for bodies up to SINGLE_REQUEST_LIMIT). */
export async function bodyBuffer(body: Body): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body;
  if (body.size > SINGLE_REQUEST_LIMIT) throw new Error(`internal: a ${body.size}-byte body must be sent in parts`);
  const buf = Buffer.allocUnsafe(body.size);
  const fh = await open(body.path, 'r');
  try {
    let filled = 0;
    while (filled < body.size) {
      const { bytesRead } = await fh.read(buf, filled, body.size - filled, filled);
      if (bytesRead === 0) throw new Error(`${body.path} is shorter than ${body.size} bytes`);
      filled += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return buf;
}

/** The body in consecutive pieces of `partSize` bytes (the last may be shorter). */
export async function* bodyParts(body: Body, partSize: number): AsyncGenerator<Buffer> {
  if (Buffer.isBuffer(body)) {
    for (let at = 0; at < body.length; at += partSize) yield body.subarray(at, at + partSize);
    return;
  }
  const fh = await open(body.path, 'r');
  try {
    for (let at = 0; at < body.size; at += partSize) {
      const part = Buffer.allocUnsafe(Math.min(partSize, body.size - at));
      const { bytesRead } = await fh.read(part, 0, part.length, at);
      if (bytesRead !== part.length) throw new Error(`${body.path} is shorter than ${body.size} bytes`);
      noteBytesProcessed(part.length, true);
      yield part;
    }
  } finally {
    await fh.close();
  }
}
