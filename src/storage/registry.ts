/**
 * The storage drivers a repository URL can name, by scheme. Adding a driver is its description
 * (drivers/<name>.ts, light: every call reads it), its Store (loaded only when used), and one
 * line here; the settings table, the repository's identity for local caches and the background
 * processes' fingerprint all read the drivers from this list.
 */
import type { Driver, RepoLocation } from './driver.js';
import { fileDriver } from './drivers/file.js';
import { gcsDriver } from './drivers/gcs.js';
import { s3Driver } from './drivers/s3.js';

const DRIVERS: Driver[] = [s3Driver, gcsDriver, fileDriver];

export function drivers(): readonly Driver[] {
  return DRIVERS;
}

export function driverFor(scheme: string): Driver | undefined {
  return DRIVERS.find((d) => d.scheme === scheme);
}

/** Adds a driver the commands do not offer (the in-memory one, in tests). */
export function registerDriver(driver: Driver): void {
  if (!driverFor(driver.scheme)) DRIVERS.push(driver);
}

/** `a, b or c`. */
function either(items: readonly string[]): string {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

/** The URL forms of the drivers, for help texts and errors: `s3://bucket/prefix, gs://bucket/prefix or file:///abs/dir`. */
export function repoUrlForms(): string {
  return either(DRIVERS.map((d) => d.urlForm));
}

/** Parses a repository URL (`scheme://…`); returns a reason string if it is not usable. */
export function parseRepoUrl(url: string): RepoLocation | string {
  if (/[\u0000-\u001f\u007f]/.test(url)) return 'it contains control characters';
  const match = /^([a-z0-9]+):\/\/(.*)$/.exec(url);
  if (!match) return `expected ${repoUrlForms()}`;
  const [, scheme, rest] = match as unknown as [string, string, string];
  const driver = driverFor(scheme);
  if (!driver) return `unknown scheme "${scheme}://" (use ${either(DRIVERS.map((d) => `${d.scheme}://`))})`;
  const fields = driver.parseLocation(rest);
  return typeof fields === 'string' ? fields : { ...fields, scheme };
}

export function formatRepo(location: RepoLocation): string {
  return driverFor(location.scheme)!.formatLocation(location);
}
