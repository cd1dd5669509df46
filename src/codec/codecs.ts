/**
 * The codec names and levels, apart from the codecs themselves: settings are parsed on every
 * call, and loading zlib and the stream machinery for that would tax the calls that never
 * compress anything (answered from a marker or the prefetch spool).
 */
export const CODECS = ['zstd', 'lz4', 'gzip', 'none'] as const;
export type CodecName = (typeof CODECS)[number];

/**
 * zstd level 3, by measurement on pgbench WAL (-c4 -j2, 1 MiB frames, CPU per 16 MiB segment):
 * zstd-1 9.3 % of the input in 20-24 ms, zstd-3 8.6 % in 22-27 ms, zstd-6 8.0 % in 99 ms,
 * lz4 16.8 % in 27 ms, gzip-6 10.5 % in 126 ms. Level 3 buys 8 % fewer bytes than level 1 for
 * a few ms; beyond it, CPU grows fourfold for a few percent.
 */
export const DEFAULT_LEVEL: Record<CodecName, number | undefined> = { zstd: 3, lz4: undefined, gzip: 6, none: undefined };
export const LEVEL_RANGE: Record<CodecName, [number, number] | undefined> = { zstd: [1, 19], lz4: undefined, gzip: [1, 9], none: undefined };

export function isCodec(name: string): name is CodecName {
  return (CODECS as readonly string[]).includes(name);
}
