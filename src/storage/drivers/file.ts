/** file:///abs/dir: a local (or mounted) directory. */
import path from 'node:path';
import type { Driver } from '../driver.js';

export const fileDriver: Driver<Record<string, never>> = {
  scheme: 'file',
  urlForm: 'file:///abs/dir',
  parseLocation(rest) {
    if (!rest.startsWith('/')) return 'a file:// repository needs an absolute path, as in file:///var/lib/walbridge';
    let decoded: string;
    try {
      decoded = decodeURIComponent(rest);
    } catch {
      return 'it has a malformed %-escape (write a literal % as %25)';
    }
    // Checked again after decoding: %00 or %0A would otherwise slip past the URL's own check.
    if (/[\u0000-\u001f\u007f]/.test(decoded)) return 'it contains control characters (after decoding %-escapes)';
    const directory = path.normalize(decoded).replace(/\/+$/, '');
    // The root directory would put namespaces and walbridge's temp directory straight into /.
    if (directory === '') return 'the repository cannot be the root directory: name a directory of its own, as in file:///var/lib/walbridge';
    return { directory };
  },
  formatLocation: (location) => `file://${location['directory']}`,
  settings: [],
  options: () => ({}),
  environment: /^$/,
  endpoint: () => undefined,
  async open(location) {
    const { FsStore } = await import('../fs.js');
    return new FsStore(location['directory']!);
  },
};
