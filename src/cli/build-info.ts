/** What this installation is: walbridge's version and the libraries its bundle carries (scripts/bundle.mjs). */
import { readFile } from 'node:fs/promises';

export interface BuildInfo {
  readonly walbridge: string;
  /** Package name to version, for the libraries `walbridge version` names. */
  readonly libraries: Readonly<Record<string, string>>;
}

export async function buildInfo(): Promise<BuildInfo> {
  try {
    // The bundle (dist/bundle/) has it beside its code.
    return JSON.parse(await readFile(new URL('./build-info.json', import.meta.url), 'utf8')) as BuildInfo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // tsc's output (dist/cli/), run by the tests: the package's own version only.
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return { walbridge: pkg.version, libraries: {} };
  }
}
