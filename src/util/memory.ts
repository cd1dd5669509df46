/**
 * Bounded memory for large files. Streaming a 1 GiB segment allocates over 1 GiB of
 * short-lived Buffers outside V8's heap (reads, frames, decoder output); V8 frees them only
 * when its own heap asks for a collection, so the resident set grew far past what was live.
 * The executables run with --expose-gc (their shebang passes it, with a fixed glibc mmap
 * threshold so freed big buffers go back to the system). Past the first LARGE_FILE_BYTES of a
 * file a collection is forced every GC_EVERY_BYTES, never for a 16 MiB segment. A full
 * collection costs 15-25 ms of CPU once the S3 SDK is loaded: the count is per file, not per
 * process (the background pusher and fetcher hash every segment, and a count over their
 * lifetime forced two more a segment: half the fetcher's CPU in a 61-segment restore).
 */
const LARGE_FILE_BYTES = 32 * 1024 * 1024;
const GC_EVERY_BYTES = 8 * 1024 * 1024;
let sinceCollection = 0;

/** `bytes` of a file processed, starting `offset` bytes into it. */
export function noteBytesProcessed(offset: number, bytes: number): void {
  sinceCollection += bytes;
  if (offset + bytes <= LARGE_FILE_BYTES || sinceCollection < GC_EVERY_BYTES) return;
  collectGarbage();
}

/** A collection now (a file is done: its buffers are garbage), where --expose-gc allows it. */
export function collectGarbage(): void {
  sinceCollection = 0;
  (globalThis as { gc?: () => void }).gc?.();
}
