/**
 * One setting's raw value and the checks that turn it into a typed value: shared by the core
 * settings table (config/settings.ts) and each storage driver's own rows (storage/drivers/).
 */
import { WalbridgeError } from '../errors.js';

/** A raw value and where it came from: a file can be mended under a running process, a flag or the environment cannot. */
export interface RawValue {
  readonly value: string | boolean;
  /** `--key`, `WALBRIDGE_KEY` or `key in /etc/walbridge.conf`, for messages. */
  readonly from: string;
  readonly inFile: boolean;
}

/** A settings error; mendable from outside when its cause is in a file walbridge reads again. */
export function configError(message: string, cause?: { readonly inFile: boolean }): WalbridgeError {
  return new WalbridgeError('config', message, { mendableOutside: cause?.inFile ?? false });
}

export function optional(r: RawValue | undefined): string | undefined {
  return r === undefined ? undefined : String(r.value);
}

export function httpUrl(r: RawValue | undefined): string | undefined {
  if (!r) return undefined;
  const value = String(r.value);
  if (!/^https?:\/\/[^\s/]+/.test(value)) throw configError(`bad ${r.from} "${value}": expected an http:// or https:// URL`, r);
  return value;
}

export function integer(r: RawValue, min: number, max: number): number {
  const n = Number(r.value);
  if (!Number.isInteger(n) || n < min || n > max) throw configError(`bad ${r.from} "${String(r.value)}": expected an integer from ${min} to ${max}`, r);
  return n;
}

export function seconds(r: RawValue, min: number, max: number): number {
  const n = Number(r.value);
  if (!Number.isFinite(n) || n < min || n > max) throw configError(`bad ${r.from} "${String(r.value)}": expected seconds from ${min} to ${max}`, r);
  return n;
}

export function absolutePath(r: RawValue | undefined): string | undefined {
  if (!r) return undefined;
  const file = String(r.value);
  if (!file.startsWith('/')) throw configError(`bad ${r.from} "${file}": give an absolute path`, r);
  return file;
}

export function boolean(r: RawValue): boolean {
  if (typeof r.value === 'boolean') return r.value;
  const v = r.value.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw configError(`bad ${r.from} "${r.value}": expected true or false`, r);
}

/** One of `choices`, or an error listing them. */
export function oneOf<T extends string>(r: RawValue, choices: readonly T[], what = choices.join(' or ')): T {
  const value = String(r.value);
  if (!(choices as readonly string[]).includes(value)) throw configError(`bad ${r.from} ${JSON.stringify(value)}: use ${what}`, r);
  return value as T;
}
