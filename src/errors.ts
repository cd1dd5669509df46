/**
 * Every way a command can end, and the exit status PostgreSQL sees.
 *
 * PostgreSQL's contracts: archive_command must exit 0 only when the file is safely archived;
 * restore_command's non-zero statuses below 126 mean "not available", while statuses above 125
 * or death by a signal are FATAL for the server. So every failure here has its own status,
 * all below 126, and 1 is kept for "the file is not in the archive" — except stopServer (200),
 * which a waiting restore_command under recovery.signal uses where "not available" would
 * promote the standby (archive/restore/hold.ts).
 */
export const ExitCode = {
  ok: 0,
  notFound: 1,
  usage: 2,
  config: 3,
  badName: 4,
  localIo: 5,
  notWal: 6,
  foreignCluster: 7,
  conflict: 8,
  corrupt: 9,
  storeUnavailable: 10,
  storeAccess: 11,
  storeMissing: 12,
  storeError: 13,
  problems: 14,
  encryptionKey: 15,
  fenced: 16,
  internal: 70,
  stopServer: 200,
} as const;

/** What each status means, one line each (the man pages; the README's table adds what PostgreSQL does with it). */
export const EXIT_MEANING: Readonly<Record<keyof typeof ExitCode, string>> = {
  ok: 'done: archived and verified, restored and verified, or the command did what it was asked',
  notFound: 'restore_command: the file is not in the archive, or a failover was asked for (PostgreSQL: "not available")',
  usage: 'bad command-line arguments',
  config: 'settings missing or invalid (repository, namespace, config file, key file)',
  badName: 'not a WAL file name PostgreSQL would use (or a hostile one)',
  localIo: 'reading %p or writing the destination failed',
  notWal: 'the file is not the WAL it claims to be (size, header, page address)',
  foreignCluster: "the WAL belongs to another cluster than the namespace's",
  conflict: 'different content is already archived under this name',
  corrupt: 'a stored object failed verification (hash, size, header)',
  storeUnavailable: 'the store was unreachable, failing or too slow: an operation did not complete within --timeout',
  storeAccess: 'the store refused the credentials or the permission',
  storeMissing: 'the bucket (or local repository directory) does not exist',
  storeError: 'any other error the store answered with',
  problems: "walbridge verify and status: the archive has problems; walbridge check: a check failed (never a PostgreSQL command's status)",
  encryptionKey: 'an object is encrypted with a key that was not given',
  // archive/repo/timelines.ts
  fenced: 'archive_command, walbridge stream: WAL of a timeline past the point where a newer timeline branched off it (an old primary after a promotion)',
  internal: 'a bug in walbridge, or walbridge is not built or being reinstalled',
  // archive/restore/hold.ts: any status from 1 to 125 would end recovery and promote the standby; above 125 PostgreSQL stops instead.
  stopServer:
    'restore_command under recovery.signal only: a failure the call cannot wait out (bad arguments, a setting given by flag or environment, a bug, its server gone)',
};

export type ExitStatus = (typeof ExitCode)[keyof typeof ExitCode];
export type FailureKind = Exclude<keyof typeof ExitCode, 'ok'>;

/** How a store failed (storage/: every driver maps its SDK's errors to these). */
export type StoreErrorKind =
  /** The object is absent. */
  | 'not-found'
  /** Worth retrying: 5xx, throttling, resets, timeouts, refused connections. */
  | 'transient'
  /** Credentials missing/refused or permission denied. */
  | 'denied'
  /** The bucket or repository directory does not exist. */
  | 'no-bucket'
  /** Anything else the store answered that retrying will not change. */
  | 'permanent';

export class StoreError extends Error {
  constructor(
    readonly kind: StoreErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreError';
  }
}

/** A failure a command reports with a one-line message and its exit status. */
export class WalbridgeError extends Error {
  /**
   * Whether something outside this process can mend it while the process waits: a config or
   * key file it reads again, the installation, the store, the disk. Settings given as flags or
   * environment variables cannot change under a running process.
   */
  readonly mendableOutside: boolean;

  constructor(
    readonly kind: FailureKind,
    message: string,
    options: { mendableOutside?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'WalbridgeError';
    this.mendableOutside = options.mendableOutside ?? !['usage', 'config', 'badName', 'internal', 'stopServer'].includes(kind);
  }

  get exitCode(): ExitStatus {
    return ExitCode[this.kind];
  }
}

/**
 * Whether something outside the process may mend `err` while a process waits and tries again:
 * a store's failure, or a WalbridgeError that says so (restore/hold.ts holds on these).
 */
export function mendableOutside(err: unknown): boolean {
  if (err instanceof StoreError) return true;
  return err instanceof WalbridgeError && err.mendableOutside;
}

/** A table of exit statuses for --help texts and the README. */
export const EXIT_CODE_HELP = `Exit status:
  0   done (archived and verified / restored and verified)
  1   not found: the file is not in the archive (restore_command: "not available")
  2   bad command-line arguments
  3   bad or missing settings (repo, namespace, config file)
  4   not a WAL file name
  5   local file error (reading %p, writing the destination)
  6   not the WAL it claims to be (size, header, page address)
  7   WAL of another cluster than the namespace's
  8   different content already archived under this name
  9   stored object failed verification (corrupt)
  10  store unreachable, failing or too slow: an operation did not complete within --timeout
  11  store refused credentials or permission
  12  bucket or repository directory does not exist
  13  other store error
  14  walbridge verify found problems
  15  encrypted with a key that was not given (add it to the key file)
  16  refused: WAL of a timeline past where a newer timeline was promoted from it (an old primary)
  70  internal error
  200 restore_command under recovery.signal: a failure this call cannot wait out; the server stops
      instead of promoting (every status from 1 to 125 would end recovery)`;

/**
 * The exit status of whatever ended a command, and the one line that says what to fix: a
 * command reports it once; a waiting restore_command that holds on it says it once a minute.
 */
export function describeFailure(err: unknown): { status: ExitStatus; message: string } {
  if (err instanceof WalbridgeError) return { status: err.exitCode, message: err.message };
  if (err instanceof StoreError) {
    switch (err.kind) {
      case 'transient':
        return {
          status: ExitCode.storeUnavailable,
          message: `store unreachable or failing: ${err.message} (check the endpoint and the network; --timeout bounds each operation)`,
        };
      case 'denied':
        return {
          status: ExitCode.storeAccess,
          message: `access denied: ${err.message} (check the credentials and the bucket's permissions for this namespace)`,
        };
      case 'no-bucket':
        return { status: ExitCode.storeMissing, message: `${err.message}: create it (see terraform/) or fix --repo / WALBRIDGE_REPO` };
      case 'not-found':
      case 'permanent':
        return { status: ExitCode.storeError, message: `store error: ${err.message}` };
    }
  }
  if (moduleMissing(err)) {
    return {
      status: ExitCode.internal,
      message: `walbridge's installation is incomplete (${(err as Error).message.split('\n')[0]}): finish or repeat the install ("npm ci")`,
    };
  }
  return { status: ExitCode.internal, message: `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` };
}

/** A module of walbridge or of its dependencies could not be loaded: an install under way, or a broken one. */
export function moduleMissing(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND';
}

/** The failure kind whose exit status is `status` (a background process's answer names only the status). */
export function kindOfStatus(status: number): FailureKind {
  const found = (Object.entries(ExitCode) as [keyof typeof ExitCode, number][]).find(([kind, code]) => code === status && kind !== 'ok');
  return (found?.[0] as FailureKind | undefined) ?? 'internal';
}
