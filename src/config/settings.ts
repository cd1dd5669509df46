/**
 * Settings, resolved per key in this order: command-line flag, environment variable, config
 * file (`--config FILE` / WALBRIDGE_CONFIG), default. One table defines every setting, so the
 * flags, the environment names, the config keys and the help texts cannot disagree.
 */
import { CODECS, LEVEL_RANGE, isCodec, type CodecName } from '../codec/codecs.js';
import { WalbridgeError } from '../errors.js';
import { namespaceProblem } from '../archive/repo/layout.js';
import { KEY_ENV, KeyRing, parseKeys, readKeyFile } from '../codec/keys.js';
import { readSmallFile } from '../util/small-file.js';
import { parseRepoUrl, type RepoLocation } from './repo-url.js';

export type S3ChecksumMode = 'when-required' | 'when-supported';
/** S3 server-side encryption: SSE-S3 or SSE-KMS (x-amz-server-side-encryption). */
export type S3SseAlgorithm = 'AES256' | 'aws:kms';

export interface Settings {
  readonly repo: RepoLocation;
  /** '' for a command on the whole repository (ResolveInput.wholeRepository), which uses none. */
  readonly namespace: string;
  readonly compress: CodecName;
  readonly compressLevel: number | undefined;
  /** Seconds a command may spend retrying a store before it gives up. */
  readonly timeout: number;
  readonly s3PathStyle: boolean;
  readonly s3Checksum: S3ChecksumMode;
  readonly s3Endpoint: string | undefined;
  readonly s3Region: string | undefined;
  readonly gcsEndpoint: string | undefined;
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
  /** S3: server-side encryption asked for on every object written; undefined = the bucket's default. */
  readonly s3Sse: S3SseAlgorithm | undefined;
  /** S3: the KMS key for SSE-KMS; undefined = the bucket's default key or AWS's aws/s3. */
  readonly s3SseKmsKeyId: string | undefined;
  /** GCS: the Cloud KMS key (CMEK) every object written is encrypted with; undefined = the bucket's default. */
  readonly gcsKmsKeyName: string | undefined;
}

/** The commands a setting matters to (its flag appears only there). */
export type CommandName = 'push' | 'fetch' | 'trigger' | 'cleanup' | 'status' | 'verify' | 'stream';

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

export const SETTINGS: readonly SettingDef[] = [
  { key: 'repo', env: 'WALBRIDGE_REPO', value: '<url>', description: 'repository: s3://bucket/prefix, gs://bucket/prefix or file:///abs/dir' },
  { key: 'namespace', env: 'WALBRIDGE_NAMESPACE', value: '<name>', description: "this primary's namespace in the repository" },
  { key: 'standby', env: 'WALBRIDGE_STANDBY', value: '<name>', description: "this standby's name, so a trigger can name it", commands: ['fetch', 'trigger'] },
  { key: 'compress', env: 'WALBRIDGE_COMPRESS', value: '<codec>', description: `compression for new objects: ${CODECS.join(', ')}`, default: 'zstd', commands: ['push', 'stream'] },
  { key: 'compress-level', env: 'WALBRIDGE_COMPRESS_LEVEL', value: '<n>', description: "compression level (default: the codec's own)", commands: ['push', 'stream'] },
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
    description: "add each call's outcome, duration and WAL bytes to this Prometheus textfile (node_exporter's textfile collector)",
    commands: ['push', 'fetch'],
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
    commands: ['push', 'fetch', 'verify', 'stream'],
  },
  {
    key: 'encryption-allow-plaintext',
    env: 'WALBRIDGE_ENCRYPTION_ALLOW_PLAINTEXT',
    description: 'with a key set, still accept WAL stored in the clear (archived before encryption was turned on); without it such objects are refused, as a replaced object would be',
    default: 'false',
    commands: ['fetch', 'verify'],
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
    description: 'walbridge stream: the primary, as postgresql://user@host:port/db?host=/socket/dir (default: the PG* environment variables, as libpq)',
    commands: ['stream'],
  },
  { key: 'timeout', env: 'WALBRIDGE_TIMEOUT', value: '<seconds>', description: 'how long one operation (a push, a fetch without waiting, one store request of a waiting fetch, one chunk of walbridge stream) may take, retries included', default: '60' },
  { key: 's3-path-style', env: 'WALBRIDGE_S3_PATH_STYLE', description: 'S3: path-style addressing (most S3-compatible servers need it)', default: 'false' },
  {
    key: 's3-checksum',
    env: 'WALBRIDGE_S3_CHECKSUM',
    value: '<mode>',
    description: "S3: the SDK's checksum mode, when-required (works with S3-compatible stores; walbridge always sends Content-MD5) or when-supported (the SDK's CRC32 default, AWS only)",
    default: 'when-required',
  },
  { key: 's3-endpoint', env: 'WALBRIDGE_S3_ENDPOINT', value: '<url>', description: 'S3: endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS)' },
  { key: 's3-region', env: 'WALBRIDGE_S3_REGION', value: '<region>', description: 'S3: region (default: AWS_REGION / the AWS profile, else us-east-1)' },
  { key: 'gcs-endpoint', env: 'WALBRIDGE_GCS_ENDPOINT', value: '<url>', description: 'GCS: API endpoint (default: STORAGE_EMULATOR_HOST, else Google)' },
  // Server-side encryption: only push and trigger write objects. Each write is checked to be stored as asked.
  {
    key: 's3-sse',
    env: 'WALBRIDGE_S3_SSE',
    value: '<algorithm>',
    description: "S3: server-side encryption of new objects, AES256 (SSE-S3) or aws:kms (SSE-KMS) (default: the bucket's)",
    commands: ['push', 'trigger', 'stream'],
  },
  {
    key: 's3-sse-kms-key-id',
    env: 'WALBRIDGE_S3_SSE_KMS_KEY_ID',
    value: '<key>',
    description: 'S3: KMS key (id, ARN or alias) for SSE-KMS; implies --s3-sse aws:kms',
    commands: ['push', 'trigger', 'stream'],
  },
  {
    key: 'gcs-kms-key-name',
    env: 'WALBRIDGE_GCS_KMS_KEY_NAME',
    value: '<name>',
    description: "GCS: Cloud KMS key (CMEK) for new objects, projects/P/locations/L/keyRings/R/cryptoKeys/K (default: the bucket's)",
    commands: ['push', 'trigger', 'stream'],
  },
];

export const CONFIG_ENV = 'WALBRIDGE_CONFIG';

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
}

/** A raw value and where it came from: a file can be mended under a running process, a flag or the environment cannot. */
interface Raw {
  readonly value: string | boolean;
  readonly from: string;
  readonly inFile: boolean;
}

/**
 * Resolves the settings. Reads the config file and the key file (each time: a waiting
 * restore_command resolves again at every attempt, so mending a file resumes it). A failure is
 * a WalbridgeError 'config' that is mendableOutside when its cause is in one of those files.
 */
export async function resolveSettings({ flags, env, command, wholeRepository = false }: ResolveInput): Promise<Settings> {
  const configPath = str(flags['config']) ?? env[CONFIG_ENV];
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
  if (!repoRaw) throw missing('no repository: set --repo or WALBRIDGE_REPO (s3://bucket/prefix, gs://bucket/prefix or file:///dir)');
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
  const checksumRaw = raw('s3-checksum')!;
  const s3Checksum = String(checksumRaw.value);
  if (s3Checksum !== 'when-required' && s3Checksum !== 'when-supported') {
    throw configError(`bad ${checksumRaw.from} "${s3Checksum}": use when-required or when-supported`, checksumRaw);
  }
  return {
    repo,
    namespace,
    compress,
    compressLevel,
    timeout: integer(raw('timeout')!, 1, 86_400),
    s3PathStyle: boolean(raw('s3-path-style')!),
    s3Checksum,
    s3Endpoint: url(raw('s3-endpoint')),
    s3Region: optional(raw('s3-region')),
    gcsEndpoint: url(raw('gcs-endpoint')),
    standby: standbyName(raw('standby')),
    pushConcurrency: integer(raw('push-concurrency')!, 1, 64),
    metricsFile: absolutePath(raw('metrics-file')),
    backgroundIdle: seconds(raw('background-idle')!, 0, 86_400),
    prefetch: integer(raw('prefetch')!, 0, 64),
    pollInterval: seconds(raw('poll-interval')!, 0.001, 60),
    maxPollInterval: seconds(raw('max-poll-interval')!, 0.001, 600),
    maxWait: seconds(raw('max-wait')!, 0, 31_536_000),
    encryption: await keyRing(raw('encryption-key-file'), takes(SETTINGS.find((d) => d.key === 'encryption-key-file')!) ? env[KEY_ENV] : undefined, boolean(raw('encryption-allow-plaintext')!)),
    streamInterval: seconds(raw('stream-interval')!, 0.01, 60),
    conninfo: conninfo(raw('conninfo')),
    ...serverEncryption(repo, raw('s3-sse'), raw('s3-sse-kms-key-id'), raw('gcs-kms-key-name')),
  };
}

/** The keys from the key file or the environment (never both: which one encrypts would be unclear). */
async function keyRing(fileRaw: Raw | undefined, envKeys: string | undefined, acceptsPlaintext: boolean): Promise<KeyRing | undefined> {
  if (fileRaw && envKeys) throw configError(`both ${fileRaw.from} and ${KEY_ENV} are set: give the keys one way`, fileRaw);
  if (fileRaw) {
    // Never quoted: a key given where its file's path goes would be printed.
    if (!String(fileRaw.value).startsWith('/')) throw configError(`bad ${fileRaw.from}: give the absolute path of the key file (the value is not shown: it may be a key)`, fileRaw);
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
 * Server-side encryption settings, refused when they do not fit the repository: an encryption
 * setting that silently did nothing would leave the archive unencrypted.
 */
function serverEncryption(repo: RepoLocation, sseRaw: Raw | undefined, kmsKeyRaw: Raw | undefined, gcsKeyRaw: Raw | undefined): Pick<Settings, 's3Sse' | 's3SseKmsKeyId' | 'gcsKmsKeyName'> {
  for (const [r, scheme] of [[sseRaw, 's3'], [kmsKeyRaw, 's3'], [gcsKeyRaw, 'gs']] as const) {
    if (r && repo.scheme !== scheme) throw configError(`${r.from} is set, but the repository is ${repo.scheme}://; it applies to ${scheme}:// repositories only`, r);
  }
  const sse = sseRaw === undefined ? undefined : String(sseRaw.value);
  if (sse !== undefined && sse !== 'AES256' && sse !== 'aws:kms') throw configError(`bad ${sseRaw!.from} ${JSON.stringify(sse)}: use AES256 (SSE-S3) or aws:kms (SSE-KMS)`, sseRaw);
  const s3SseKmsKeyId = kmsKeyRaw === undefined ? undefined : String(kmsKeyRaw.value);
  if (s3SseKmsKeyId !== undefined) {
    // Key ids, ARNs and aliases on AWS; S3-compatible servers take other names. It travels in a header.
    if (!/^[\x21-\x7e]{1,2048}$/.test(s3SseKmsKeyId)) throw configError(`bad ${kmsKeyRaw!.from} ${JSON.stringify(s3SseKmsKeyId)}: expected a KMS key id, key ARN or alias (printable ASCII, no spaces)`, kmsKeyRaw);
    if (sse === 'AES256') throw configError(`${kmsKeyRaw!.from} names a KMS key, but ${sseRaw!.from} is AES256: use aws:kms or leave it unset`, kmsKeyRaw);
  }
  const gcsKmsKeyName = gcsKeyRaw === undefined ? undefined : String(gcsKeyRaw.value);
  if (gcsKmsKeyName !== undefined && !CRYPTO_KEY_NAME.test(gcsKmsKeyName)) {
    const version = /\/cryptoKeyVersions\//.test(gcsKmsKeyName) ? ' without /cryptoKeyVersions/N (Cloud Storage uses the primary version)' : '';
    throw configError(`bad ${gcsKeyRaw!.from} ${JSON.stringify(gcsKmsKeyName)}: expected projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY${version}`, gcsKeyRaw);
  }
  return { s3Sse: s3SseKmsKeyId !== undefined ? 'aws:kms' : (sse as S3SseAlgorithm | undefined), s3SseKmsKeyId, gcsKmsKeyName };
}

/** A Cloud KMS crypto key's resource name (project ids may be domain-scoped: example.com:proj). */
const CRYPTO_KEY_NAME = /^projects\/[a-z0-9][a-z0-9.:-]*\/locations\/[a-z0-9-]+\/keyRings\/[A-Za-z0-9_-]{1,63}\/cryptoKeys\/[A-Za-z0-9_-]{1,63}$/;

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

/** A settings error; mendable from outside when its cause is in a file walbridge reads again. */
function configError(message: string, cause?: { readonly inFile: boolean }): WalbridgeError {
  return new WalbridgeError('config', message, { mendableOutside: cause?.inFile ?? false });
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function optional(r: Raw | undefined): string | undefined {
  return r === undefined ? undefined : String(r.value);
}

function url(r: Raw | undefined): string | undefined {
  if (!r) return undefined;
  const value = String(r.value);
  if (!/^https?:\/\/[^\s/]+/.test(value)) throw configError(`bad ${r.from} "${value}": expected an http:// or https:// URL`, r);
  return value;
}

function integer(r: Raw, min: number, max: number): number {
  const n = Number(r.value);
  if (!Number.isInteger(n) || n < min || n > max) throw configError(`bad ${r.from} "${String(r.value)}": expected an integer from ${min} to ${max}`, r);
  return n;
}

function seconds(r: Raw, min: number, max: number): number {
  const n = Number(r.value);
  if (!Number.isFinite(n) || n < min || n > max) throw configError(`bad ${r.from} "${String(r.value)}": expected seconds from ${min} to ${max}`, r);
  return n;
}

function absolutePath(r: Raw | undefined): string | undefined {
  if (!r) return undefined;
  const file = String(r.value);
  if (!file.startsWith('/')) throw configError(`bad ${r.from} "${file}": give an absolute path`, r);
  return file;
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

function boolean(r: Raw): boolean {
  if (typeof r.value === 'boolean') return r.value;
  const v = r.value.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw configError(`bad ${r.from} "${r.value}": expected true or false`, r);
}
