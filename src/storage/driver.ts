/**
 * What a storage driver tells the rest of walbridge about itself, without loading its SDK: its
 * URL scheme, its settings, the environment its SDK reads, the endpoint that identifies its
 * repository, and how to open a Store. Every call resolves settings, so a driver's description
 * stays light; its Store (and SDK) is imported only by open(). The registry is registry.ts.
 */
import type { RawValue } from '../util/setting-values.js';
import type { Store } from './store.js';

/** A repository's place: its scheme and the driver's own fields (bucket and prefix, a directory). */
export interface RepoLocation {
  readonly scheme: string;
  readonly [field: string]: string;
}

/** A setting a driver adds to the core table: flag `--key`, environment `env`, config-file `key`. */
export interface DriverSetting {
  readonly key: string;
  readonly env: string;
  /** commander's value placeholder, or undefined for a boolean switch. */
  readonly value?: string;
  readonly description: string;
  readonly default?: string;
  /**
   * Taken only by the commands that write objects; set for a repository of another scheme it is
   * refused, as an encryption setting that silently did nothing would leave the archive unencrypted.
   */
  readonly forWrites?: boolean;
}

export interface Driver<Options = unknown> {
  readonly scheme: string;
  /** The URL's form, for help texts and errors: `s3://bucket/prefix`. */
  readonly urlForm: string;
  /** What follows `scheme://`, as this driver's location fields, or why it is not usable. */
  parseLocation(rest: string): Readonly<Record<string, string>> | string;
  formatLocation(location: RepoLocation): string;
  readonly settings: readonly DriverSetting[];
  /** This driver's options from its settings (`raw(key)`, undefined where unset); throws a config error. */
  options(raw: (key: string) => RawValue | undefined, location: RepoLocation): Options;
  /** Environment variables its SDK reads (credentials, endpoints): a background process serves only calls that agree on them. */
  readonly environment: RegExp;
  /** The endpoint the repository is reached at, where it is not the scheme's default: local caches are valid only for it. */
  endpoint(options: Options): string | undefined;
  /** The Store; `idleTimeoutMs` bounds a request without traffic. */
  open(location: RepoLocation, options: Options, opening: { readonly idleTimeoutMs: number }): Promise<Store>;
}

const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,221}$/;

/** `bucket/prefix` of a bucket store's URL (S3, GCS): the prefix without leading or trailing slashes. */
export function parseBucketLocation(rest: string): { bucket: string; prefix: string } | string {
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  if (!BUCKET.test(bucket)) return `"${bucket}" is not a valid bucket name`;
  if (prefix.split('/').some((part) => part === '.' || part === '..' || (prefix !== '' && part === ''))) {
    return `prefix "${prefix}" must not contain empty, "." or ".." parts`;
  }
  return { bucket, prefix };
}

export function formatBucketLocation(location: RepoLocation): string {
  return `${location.scheme}://${location['bucket']}${location['prefix'] ? `/${location['prefix']}` : ''}`;
}
