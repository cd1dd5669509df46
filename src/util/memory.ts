/**
 * Bounded memory for large files. Streaming a 1 GiB segment allocates over 1 GiB of
 * short-lived Buffers outside V8's heap (reads, frames, decoder output); V8 frees them only
 * when its own heap asks for a collection, so the resident set grew far past what was live.
 * The executables run with --expose-gc (bin/ passes it, with a fixed glibc mmap threshold so
 * freed big buffers go back to the system). Once LARGE_BYTES have been processed
 * since the last collection at a file's end, a collection is forced every GC_EVERY_BYTES.
 *
 * A full collection costs 15-25 ms of CPU once the S3 SDK is loaded. The background pusher
 * and fetcher collect after each file they seal or restore (collectAfterFile), so a 16 MiB
 * segment costs them one; counting over their whole lifetime instead had forced two more a
 * segment in the fetcher (29 % of its CPU in a 61-segment restore). A call (one file) and the
 * streamer (chunks of a segment) count over their lifetime.
 */
const LARGE_BYTES = 32 * 1024 * 1024;
const GC_EVERY_BYTES = 8 * 1024 * 1024;
let sinceFileCollection = 0;
let sinceCollection = 0;

/**
 * `bytes` processed (hashed, read for an upload). `large`: they belong to a body stored in a
 * file, which is large by construction (over 16 MiB, or the spill of a bigger file).
 */
export function noteBytesProcessed(bytes: number, large = false): void {
  sinceFileCollection += bytes;
  sinceCollection += bytes;
  if ((!large && sinceFileCollection < LARGE_BYTES) || sinceCollection < GC_EVERY_BYTES) return;
  collect();
}

/** A collection after a whole file (its buffers are garbage, or soon are), where --expose-gc allows it. */
export function collectAfterFile(): void {
  sinceFileCollection = 0;
  collect();
}

function collect(): void {
  sinceCollection = 0;
  (globalThis as { gc?: () => void }).gc?.();
}
