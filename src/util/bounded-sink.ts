import { Writable } from 'node:stream';

/** A sink that keeps the first `limit` bytes in `chunks` and drops the rest (a header, a small text). */
export function boundedSink(chunks: Buffer[], limit: number): Writable {
  let kept = 0;
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (kept < limit) {
        chunks.push(chunk.subarray(0, limit - kept));
        kept += Math.min(chunk.length, limit - kept);
      }
      callback();
    },
  });
}
