/**
 * A second installation of walbridge, as `npm ci` leaves one, for tests of an install in
 * progress: bin/, dist/bundle/ and package.json copied (never linked: Node resolves a linked
 * module from its real path, so node_modules would be the repository's), and node_modules with
 * the two packages the bundle loads at run time (the native codecs) linked in. Parts can then be
 * taken away and put back, as an upgrade running beside a live server does.
 */
import { cp, mkdir, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT, chownToClusterUser } from '../servers/postgres.js';
import { scratchDir } from './scratch.js';

/** What the bundle requires at run time (esbuild --external), by their node_modules paths. */
const RUNTIME_PACKAGES = ['@toondepauw/node-zstd', '@toondepauw/node-zstd-linux-x64-gnu', 'lz4-napi', '@antoniomuso'] as const;

export interface InstallCopy {
  /** Its bin/ directory, to put first on PostgreSQL's PATH. */
  readonly binDir: string;
  /** Removes the zstd codec's packages (as npm ci does before it reinstalls them). */
  removeZstd(): Promise<void>;
  restoreZstd(): Promise<void>;
  /** Moves the bundle's entry point away (a build in progress). */
  removeBundle(): Promise<void>;
  restoreBundle(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function installCopy(): Promise<InstallCopy> {
  const root = await scratchDir('wb-install-');
  await cp(path.join(REPO_ROOT, 'bin'), path.join(root, 'bin'), { recursive: true });
  await cp(path.join(REPO_ROOT, 'dist', 'bundle'), path.join(root, 'dist', 'bundle'), { recursive: true });
  await cp(path.join(REPO_ROOT, 'package.json'), path.join(root, 'package.json'));
  const modules = path.join(root, 'node_modules');
  await mkdir(path.join(modules, '@toondepauw'), { recursive: true });
  // Before any link: a recursive chown would follow them into the repository's node_modules.
  await chownToClusterUser(root, { recursive: true });
  const link = async (pkg: string) => {
    await symlink(path.join(REPO_ROOT, 'node_modules', pkg), path.join(modules, pkg)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  };
  for (const pkg of RUNTIME_PACKAGES) await link(pkg);
  const main = path.join(root, 'dist', 'bundle', 'main.js');
  const zstd = RUNTIME_PACKAGES.filter((p) => p.startsWith('@toondepauw/'));
  return {
    binDir: path.join(root, 'bin'),
    removeZstd: async () => {
      for (const pkg of zstd) await rm(path.join(modules, pkg), { force: true });
    },
    restoreZstd: async () => {
      for (const pkg of zstd) await link(pkg);
    },
    removeBundle: () => rename(main, `${main}.away`),
    restoreBundle: () => rename(`${main}.away`, main),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}
