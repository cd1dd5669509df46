/**
 * Bounded memory for large files. Streaming a 1 GiB segment allocates over 1 GiB of
 * short-lived Buffers outside V8's heap (reads, frames, decoder output); V8 frees them only
 * when its own heap asks for a collection, so the resident set grew far past what was live.
 * The executables run with --expose-gc (their shebang passes it, with a fixed glibc mmap
 * threshold so freed big buffers go back to the system). Past the first LARGE_FILE_BYTES of a
 * file a collection is forced every GC_EVERY_BYTES: about a millisecond each, and never for a
 * 16 MiB segment.
 */
const LARGE_FILE_BYTES = 32 * 1024 * 1024;
const GC_EVERY_BYTES = 8 * 1024 * 1024;
let processed = 0;
let sinceCollection = 0;

export function noteBytesProcessed(bytes: number): void {
  processed += bytes;
  sinceCollection += bytes;
  if (processed < LARGE_FILE_BYTES || sinceCollection < GC_EVERY_BYTES) return;
  collectGarbage();
}

/** A collection now (a file is done: its buffers are garbage), where --expose-gc allows it. */
export function collectGarbage(): void {
  sinceCollection = 0;
  (globalThis as { gc?: () => void }).gc?.();
}
