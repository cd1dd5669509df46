/** Repository URLs: `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///abs/dir`. */
import path from 'node:path';

export type RepoLocation =
  | { readonly scheme: 's3' | 'gs'; readonly bucket: string; readonly prefix: string }
  | { readonly scheme: 'file'; readonly directory: string };

const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,221}$/;

/** Parses a repository URL; returns a reason string if it is not usable. */
export function parseRepoUrl(url: string): RepoLocation | string {
  if (/[\u0000-\u001f\u007f]/.test(url)) return 'it contains control characters';
  const match = /^([a-z0-9]+):\/\/(.*)$/.exec(url);
  if (!match) return 'expected s3://bucket/prefix, gs://bucket/prefix or file:///absolute/directory';
  const [, scheme, rest] = match as unknown as [string, string, string];
  if (scheme === 'file') {
    if (!rest.startsWith('/')) return 'a file:// repository needs an absolute path, as in file:///var/lib/walbridge';
    let decoded: string;
    try {
      decoded = decodeURIComponent(rest);
    } catch {
      return 'it has a malformed %-escape (write a literal % as %25)';
    }
    // Checked again after decoding: %00 or %0A would otherwise slip past the check above.
    if (/[\u0000-\u001f\u007f]/.test(decoded)) return 'it contains control characters (after decoding %-escapes)';
    const directory = path.normalize(decoded).replace(/\/+$/, '');
    // The root directory would put namespaces and walbridge's temp directory straight into /.
    if (directory === '') return 'the repository cannot be the root directory: name a directory of its own, as in file:///var/lib/walbridge';
    return { scheme, directory };
  }
  if (scheme !== 's3' && scheme !== 'gs') return `unknown scheme "${scheme}://" (use s3://, gs:// or file://)`;
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  if (!BUCKET.test(bucket)) return `"${bucket}" is not a valid bucket name`;
  if (prefix.split('/').some((part) => part === '.' || part === '..' || (prefix !== '' && part === ''))) {
    return `prefix "${prefix}" must not contain empty, "." or ".." parts`;
  }
  return { scheme, bucket, prefix };
}

export function formatRepo(location: RepoLocation): string {
  if (location.scheme === 'file') return `file://${location.directory}`;
  return `${location.scheme}://${location.bucket}${location.prefix ? '/' + location.prefix : ''}`;
}
