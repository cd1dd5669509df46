/**
 * Settings, resolved per key in this order: command-line flag, environment variable, config
 * file (`--config FILE` / WALBRIDGE_CONFIG, else /etc/walbridge/walbridge.conf when present), default. One table defines every setting, so the
 * flags, the environment names, the config keys and the help texts cannot disagree.
 */
import { statSync } from 'node:fs';
import { CODECS, LEVEL_RANGE, isCodec, type CodecName } from '../codec/codecs.js';
import { KEY_ENV, KeyRing, parseKeys, readKeyFile } from '../codec/keys.js';
import type { DriverSetting, RepoLocation } from '../storage/driver.js';
import { driverFor, drivers, parseRepoUrl, repoUrlForms } from '../storage/registry.js';
import { readSmallFile } from '../util/small-file.js';
import { absolutePath, boolean, configError, integer, seconds, type RawValue } from '../util/setting-values.js';
import { JSON_LOG_FIELDS, isLogFormat, type LogFormat } from '../log.js';
import { namespaceProblem } from './namespace.js';

export interface Settings {
  readonly repo: RepoLocation;
  /** '' for a command on the whole repository (ResolveInput.wholeRepository), which uses none. */
  readonly namespace: string;
  readonly compress: CodecName;
  readonly compressLevel: number | undefined;
  /** Seconds a command may spend retrying a store before it gives up. */
  readonly timeout: number;
  /** The repository driver's own options, from its settings (storage/drivers/). */
  readonly storage: unknown;
  /** This standby's name, for triggers that name one standby. */
  readonly standby: string | undefined;
  /** Files one push uploads at once (the one asked for and the next ready ones). */
  readonly pushConcurrency: number;
  /** Prometheus textfile the calls add their counts to, if any. */
  readonly metricsFile: string | undefined;
  /** Seconds the background pusher waits for work before it exits. */
  readonly backgroundIdle: number;
  /** Segments a fetch downloads ahead of the one asked for. */
  readonly prefetch: number;
  /** Seconds between polls of a waiting fetch: the first, and the cap it grows to. */
  readonly pollInterval: number;
  readonly maxPollInterval: number;
  /** Seconds without a new segment after which a waiting fetch fails over; 0 = never. */
  readonly maxWait: number;
  /** Client-side encryption keys: new objects are encrypted when set. */
  readonly encryption: KeyRing | undefined;
  /** walbridge stream: seconds between looks at the primary's flush position. */
  readonly streamInterval: number;
  /** walbridge stream: how to connect to the primary (libpq's PG* variables otherwise). */
  readonly conninfo: string | undefined;
  /** How log lines are written (src/log.ts). */
  readonly logFormat: LogFormat;
}

/** The commands a setting matters to (its flag appears only there). */
export type CommandName = 'push' | 'fetch' | 'trigger' | 'cleanup' | 'status' | 'verify' | 'stream' | 'check';

interface SettingDef {
  /** Config-file key and flag name (`--<key>`). */
  readonly key: string;
  readonly env: string;
  /** commander's value placeholder, or undefined for a boolean switch. */
  readonly value?: string;
  readonly description: string;
  readonly default?: string;
  /** Commands that take it; every command when absent. */
  readonly commands?: readonly CommandName[];
}

/** The commands that write objects: only they take a driver's settings for writing (server-side encryption). */
const WRITING: readonly CommandName[] = ['push', 'trigger', 'stream', 'check'];

const CORE_SETTINGS: readonly SettingDef[] = [
  { key: 'repo', env: 'WALBRIDGE_REPO', value: '<url>', description: `repository: ${repoUrlForms()}` },
  { key: 'namespace', env: 'WALBRIDGE_NAMESPACE', value: '<name>', description: "this primary's namespace in the repository" },
  {
    key: 'standby',
    env: 'WALBRIDGE_STANDBY',
    value: '<name>',
    description: "this standby's name, so a trigger can name it",
    commands: ['fetch', 'trigger', 'check'],
  },
  {
    key: 'compress',
    env: 'WALBRIDGE_COMPRESS',
    value: '<codec>',
    description: `compression for new objects: ${CODECS.join(', ')}`,
    default: 'zstd',
    commands: ['push', 'stream'],
  },
  {
    key: 'compress-level',
    env: 'WALBRIDGE_COMPRESS_LEVEL',
    value: '<n>',
    description: "compression level (default: the codec's own)",
    commands: ['push', 'stream'],
  },
  {
    key: 'push-concurrency',
    env: 'WALBRIDGE_PUSH_CONCURRENCY',
    value: '<n>',
    description: 'files uploaded at once: the one asked for plus the next ones PostgreSQL marked ready (1 = only the one asked for, no background pusher)',
    default: '4',
    commands: ['push'],
  },
  {
    key: 'metrics-file',
    env: 'WALBRIDGE_METRICS_FILE',
    value: '<path>',
    description:
      "write metrics to this Prometheus textfile (node_exporter's textfile collector): each call's outcome, duration and WAL bytes, positions archived and restored, a waiting call's state, walbridge stream's progress, what walbridge status sees",
    commands: ['push', 'fetch', 'stream', 'status'],
  },
  {
    key: 'background-idle',
    env: 'WALBRIDGE_BACKGROUND_IDLE',
    value: '<seconds>',
    description: 'how long the background pusher or fetcher stays without work; while it runs, calls are served with its SDK loaded and connections open',
    default: '60',
    commands: ['push', 'fetch'],
  },
  {
    key: 'prefetch',
    env: 'WALBRIDGE_PREFETCH',
    value: '<n>',
    description: 'segments after the one asked for to download ahead into pg_wal/walbridge/prefetch (0 = none)',
    default: '8',
    commands: ['fetch'],
  },
  {
    key: 'poll-interval',
    env: 'WALBRIDGE_POLL_INTERVAL',
    value: '<seconds>',
    description: 'waiting fetch: first wait between polls for a segment not yet archived',
    default: '0.05',
    commands: ['fetch'],
  },
  {
    key: 'max-poll-interval',
    env: 'WALBRIDGE_MAX_POLL_INTERVAL',
    value: '<seconds>',
    description: 'waiting fetch: the cap the wait between polls grows to; trigger objects are read at most every twice this',
    default: '0.25',
    commands: ['fetch'],
  },
  {
    key: 'max-wait',
    env: 'WALBRIDGE_MAX_WAIT',
    value: '<seconds>',
    description: 'waiting fetch: fail over (fast) when no new segment arrives for this long; 0 = never',
    default: '0',
    commands: ['fetch'],
  },
  {
    key: 'encryption-key-file',
    env: 'WALBRIDGE_ENCRYPTION_KEY_FILE',
    value: '<path>',
    description: `encrypt new objects (AES-256-GCM) with the first key in this file, one key per line (openssl rand -base64 32); later lines only decrypt. Or give the keys themselves in ${KEY_ENV}`,
    commands: ['push', 'fetch', 'verify', 'stream', 'check'],
  },
  {
    key: 'encryption-allow-plaintext',
    env: 'WALBRIDGE_ENCRYPTION_ALLOW_PLAINTEXT',
    description:
      'with a key set, still accept WAL stored in the clear (archived before encryption was turned on); without it such objects are refused, as a replaced object would be',
    default: 'false',
    commands: ['fetch', 'verify', 'check'],
  },
  {
    key: 'stream-interval',
    env: 'WALBRIDGE_STREAM_INTERVAL',
    value: '<seconds>',
    description: "walbridge stream: how often to ship the primary's newly flushed WAL (the most a smart failover can lose)",
    default: '0.2',
    commands: ['stream'],
  },
  {
    key: 'conninfo',
    env: 'WALBRIDGE_CONNINFO',
    value: '<url>',
    description:
      'walbridge stream and check: the server, as postgresql://user@host:port/db?host=/socket/dir (default: the PG* environment variables, as libpq)',
    commands: ['stream', 'check'],
  },
  {
    key: 'log-format',
    env: 'WALBRIDGE_LOG_FORMAT',
    value: '<format>',
    description: `log lines: text (one line each, as PostgreSQL's log shows them) or json (one object per line: ${JSON_LOG_FIELDS}); in the environment it also covers errors in the other settings`,
    default: 'text',
  },
  {
    key: 'timeout',
    env: 'WALBRIDGE_TIMEOUT',
    value: '<seconds>',
    description:
      'how long one operation (a push, a fetch without waiting, one store request of a waiting fetch, one chunk of walbridge stream) may take, retries included',
    default: '60',
  },
];

/**
 * The repository driver's options. Every driver checks its own settings, whichever the
 * repository: a mistyped value never passes silently because it does not apply today.
 */
function driverOptions(raw: (key: string) => Raw | undefined, repo: RepoLocation): unknown {
  let options: unknown;
  for (const driver of drivers()) {
    const own = driver.options(raw, repo);
    if (driver.scheme === repo.scheme) options = own;
  }
  return options;
}

/** A driver's row in the settings table. */
function driverRow(row: DriverSetting): SettingDef {
  return { key: row.key, env: row.env, value: row.value, description: row.description, default: row.default, commands: row.forWrites ? WRITING : undefined };
}

/** Every setting: the core rows, then each driver's. */
export const SETTINGS: readonly SettingDef[] = [...CORE_SETTINGS, ...drivers().flatMap((d) => d.settings.map(driverRow))];

export const CONFIG_ENV = 'WALBRIDGE_CONFIG';
/**
 * Read when neither --config nor WALBRIDGE_CONFIG names a file and it exists (as pgBackRest reads
 * /etc/pgbackrest/pgbackrest.conf); WALBRIDGE_CONFIG set empty reads none. bin/archive-push and
 * bin/archive-fetch hash the same file into their call key.
 */
export const DEFAULT_CONFIG = '/etc/walbridge/walbridge.conf';

/** Raw values per key from one source. */
export type RawSettings = Readonly<Record<string, string | boolean | undefined>>;

export interface ResolveInput {
  /** Flag values keyed by setting key (`repo`, `s3-path-style`, ...), plus `config`. */
  readonly flags: RawSettings;
  readonly env: NodeJS.ProcessEnv;
  /**
   * The command being run: only the settings it takes are read and checked (a push-only
   * setting mistyped in a shared config file must not stop a standby's restore_command); the
   * others keep their defaults. Every command when absent.
   */
  readonly command?: CommandName;
  /** A command on every namespace (`status --all`): no namespace is read or needed; Settings.namespace is ''. */
  readonly wholeRepository?: boolean;
  /** The file read when none is named: DEFAULT_CONFIG (another in the unit tests). */
  readonly defaultConfig?: string;
}

type Raw = RawValue;

/**
 * Resolves the settings. Reads the config file and the key file (each time: a waiting
 * restore_command resolves again at every attempt, so mending a file resumes it). A failure is
 * a WalbridgeError 'config' that is mendableOutside when its cause is in one of those files.
 */
export async function resolveSettings({ flags, env, command, wholeRepository = false, defaultConfig = DEFAULT_CONFIG }: ResolveInput): Promise<Settings> {
  const configPath = str(flags['config']) ?? (env[CONFIG_ENV] === undefined ? presentFile(defaultConfig) : env[CONFIG_ENV] || undefined);
  const file = configPath ? await readConfigFile(configPath) : {};
  const takes = (def: SettingDef) => command === undefined || def.commands === undefined || def.commands.includes(command);
  const raw = (key: string): Raw | undefined => {
    const def = SETTINGS.find((d) => d.key === key)!;
    if (takes(def)) {
      if (flags[key] !== undefined) return { value: flags[key]!, from: `--${key}`, inFile: false };
      if (env[def.env] !== undefined && env[def.env] !== '') return { value: env[def.env]!, from: def.env, inFile: false };
      if (file[key] !== undefined) return { value: file[key]!, from: `${key} in ${configPath}`, inFile: true };
    }
    return def.default === undefined ? undefined : { value: def.default, from: `default ${key}`, inFile: false };
  };
  // A setting that is missing could be added to the config file, if there is one.
  const missing = (message: string) => configError(message, { inFile: configPath !== undefined });

  if (env['NODE_TLS_REJECT_UNAUTHORIZED'] === '0') {
    // Node's switch turns every certificate check off: WAL would go to whoever answers.
    throw configError('refusing to run with NODE_TLS_REJECT_UNAUTHORIZED=0 (no TLS certificate checks): name the CA in NODE_EXTRA_CA_CERTS instead');
  }
  const repoRaw = raw('repo');
  if (!repoRaw) throw missing(`no repository: set --repo or WALBRIDGE_REPO (${repoUrlForms()})`);
  const repo = parseRepoUrl(String(repoRaw.value));
  if (typeof repo === 'string') throw configError(`bad repository ${JSON.stringify(String(repoRaw.value))} (${repoRaw.from}): ${repo}`, repoRaw);

  // A command on every namespace ignores the one set (WALBRIDGE_NAMESPACE is often in the environment anyway).
  const nsRaw = wholeRepository ? undefined : raw('namespace');
  if (!nsRaw && !wholeRepository) throw missing("no namespace: set --namespace or WALBRIDGE_NAMESPACE to this primary's name");
  const namespace = nsRaw ? String(nsRaw.value) : '';
  const nsProblem = nsRaw && namespaceProblem(namespace);
  if (nsProblem) throw configError(`bad ${nsRaw.from}: ${nsProblem}`, nsRaw);

  const codecRaw = raw('compress')!;
  const compress = String(codecRaw.value);
  if (!isCodec(compress)) throw configError(`bad ${codecRaw.from} "${compress}": use one of ${CODECS.join(', ')}`, codecRaw);
  const levelRaw = raw('compress-level');
  let compressLevel: number | undefined;
  if (levelRaw) {
    const range = LEVEL_RANGE[compress];
    if (!range) throw configError(`${levelRaw.from} is set, but codec ${compress} has no levels`, levelRaw);
    compressLevel = integer(levelRaw, range[0], range[1]);
  }
  const driver = driverFor(repo.scheme)!;
  // A setting for writing that another scheme's driver owns would silently do nothing here.
  for (const other of drivers().filter((d) => d !== driver)) {
    for (const row of other.settings.filter((r) => r.forWrites)) {
      const r = raw(row.key);
      if (r && r.from !== `default ${row.key}`)
        throw configError(`${r.from} is set, but the repository is ${repo.scheme}://; it applies to ${other.scheme}:// repositories only`, r);
    }
  }
  return {
    repo,
    namespace,
    compress,
    compressLevel,
    timeout: integer(raw('timeout')!, 1, 86_400),
    storage: driverOptions(raw, repo),
    standby: standbyName(raw('standby')),
    pushConcurrency: integer(raw('push-concurrency')!, 1, 64),
    metricsFile: absolutePath(raw('metrics-file')),
    backgroundIdle: seconds(raw('background-idle')!, 0, 86_400),
    prefetch: integer(raw('prefetch')!, 0, 64),
    pollInterval: seconds(raw('poll-interval')!, 0.001, 60),
    maxPollInterval: seconds(raw('max-poll-interval')!, 0.001, 600),
    maxWait: seconds(raw('max-wait')!, 0, 31_536_000),
    encryption: await keyRing(
      raw('encryption-key-file'),
      takes(SETTINGS.find((d) => d.key === 'encryption-key-file')!) ? env[KEY_ENV] : undefined,
      boolean(raw('encryption-allow-plaintext')!),
    ),
    streamInterval: seconds(raw('stream-interval')!, 0.01, 60),
    conninfo: conninfo(raw('conninfo')),
    logFormat: logFormat(raw('log-format')!),
  };
}

function logFormat(r: Raw): LogFormat {
  const value = String(r.value);
  if (!isLogFormat(value)) throw configError(`bad ${r.from} "${value}": use text or json`, r);
  return value;
}

/** The keys from the key file or the environment (never both: which one encrypts would be unclear). */
async function keyRing(fileRaw: Raw | undefined, envKeys: string | undefined, acceptsPlaintext: boolean): Promise<KeyRing | undefined> {
  if (fileRaw && envKeys) throw configError(`both ${fileRaw.from} and ${KEY_ENV} are set: give the keys one way`, fileRaw);
  if (fileRaw) {
    // Never quoted: a key given where its file's path goes would be printed.
    if (!String(fileRaw.value).startsWith('/'))
      throw configError(`bad ${fileRaw.from}: give the absolute path of the key file (the value is not shown: it may be a key)`, fileRaw);
    const file = String(fileRaw.value);
    const keys = await readKeyFile(file);
    // The key file can be mended (or finish being rotated) under a waiting call, wherever its path came from.
    if (typeof keys === 'string') throw configError(`bad key file ${file} (${fileRaw.from}): ${keys}`, { inFile: true });
    return new KeyRing({ file }, keys, acceptsPlaintext);
  }
  if (envKeys === undefined || envKeys === '') return undefined;
  const keys = parseKeys(envKeys);
  if (typeof keys === 'string') throw configError(`bad ${KEY_ENV}: ${keys}`);
  return new KeyRing({ env: KEY_ENV }, keys, acceptsPlaintext);
}

/**
 * A config file: `key = value` lines, `#` comments, keys as the long flags without `--`.
 * Unknown keys are errors, so a typo never silently falls back to a default.
 */
async function readConfigFile(file: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readSmallFile(file);
  } catch (err) {
    throw configError(`cannot read config file ${file}: ${(err as Error).message}`, { inFile: true });
  }
  return parseConfigText(text, file);
}

function parseConfigText(text: string, file: string): Record<string, string> {
  const values: Record<string, string> = {};
  text.split('\n').forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const match = /^([a-z0-9-]+)\s*=\s*(.*)$/.exec(trimmed);
    if (!match) throw configError(`${file}:${index + 1}: expected "key = value"`, { inFile: true });
    const [, key, rawValue] = match as unknown as [string, string, string];
    if (!SETTINGS.some((d) => d.key === key)) {
      throw configError(`${file}:${index + 1}: unknown setting "${key}" (known: ${SETTINGS.map((d) => d.key).join(', ')})`, { inFile: true });
    }
    values[key] = rawValue.replace(/^"(.*)"$|^'(.*)'$/, '$1$2');
  });
  return values;
}

/** `file` unless nothing is at that path: one that is there but cannot be read is an error, never skipped. */
function presentFile(file: string): string | undefined {
  try {
    return statSync(file, { throwIfNoEntry: false }) ? file : undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTDIR' ? undefined : file;
  }
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function conninfo(r: Raw | undefined): string | undefined {
  if (!r) return undefined;
  const value = String(r.value);
  // Not quoted back: a URL may hold a password.
  if (!/^postgres(ql)?:\/\//.test(value)) throw configError(`bad ${r.from}: expected a postgresql:// URL (put a password in ~/.pgpass, not here)`, r);
  // (Not new URL(): libpq's URLs may leave the host empty, as in postgresql://user@/db?host=/run/postgresql.)
  const userInfo = /^postgres(?:ql)?:\/\/([^@/?#]*)@/.exec(value)?.[1] ?? '';
  const query = value.includes('?') ? value.slice(value.indexOf('?') + 1).split('#')[0]! : '';
  let queryKeys: string[];
  try {
    queryKeys = [...new URLSearchParams(query).keys()];
  } catch {
    throw configError(`bad ${r.from}: its parameters are not URL-encoded`, r);
  }
  const hasPassword = userInfo.includes(':') || queryKeys.includes('password');
  // A long-running process's arguments are readable by every local user (/proc/PID/cmdline).
  if (hasPassword) throw configError(`bad ${r.from}: it holds a password; put it in ~/.pgpass (or PGPASSFILE) instead`, r);
  return value;
}

function standbyName(r: Raw | undefined): string | undefined {
  if (!r) return undefined;
  const name = String(r.value);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name) || name === 'all') {
    throw configError(`bad ${r.from} "${name}": a standby name is 1-63 characters of A-Z a-z 0-9 . _ - (and not "all")`, r);
  }
  return name;
}
