#!/usr/bin/env node
// `npm run bundle` (part of `npm run build`): dist/cli/main.js and everything it imports, SDKs
// included, into dist/bundle/ (what the executables in bin/ load), plus what an installation
// needs to say what it is: dist/bundle/build-info.json (the versions `walbridge version` prints)
// and dist/bundle/THIRD-PARTY-LICENSES (the licence of every package the bundle carries).
// Only the native codecs stay outside (their .node files cannot be bundled): they are the
// package's only run-time dependencies.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = path.join(root, 'dist', 'bundle');
const NATIVE = ['@toondepauw/node-zstd', 'lz4-napi'];

rmSync(out, { recursive: true, force: true });
const result = await build({
  entryPoints: [path.join(root, 'dist', 'cli', 'main.js')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  splitting: true,
  outdir: out,
  external: NATIVE,
  metafile: true,
  logLevel: 'warning',
  // The SDKs' CommonJS code calls require(): give the ES module one.
  banner: { js: "import { createRequire as __walbridgeRequire } from 'node:module'; const require = __walbridgeRequire(import.meta.url);" },
});

const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));
const own = readJson(path.join(root, 'package.json'));

/** The packages the bundle carries: the node_modules directory of each input file. */
const bundled = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const at = input.lastIndexOf('node_modules/');
  if (at < 0) continue;
  const rest = input.slice(at + 'node_modules/'.length).split('/');
  const name = rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  const dir = path.join(root, input.slice(0, at), 'node_modules', name);
  if (!bundled.has(dir)) bundled.set(dir, readJson(path.join(dir, 'package.json')));
}

const versionOf = (name) => readJson(path.join(root, 'node_modules', name, 'package.json')).version;
writeFileSync(
  path.join(out, 'build-info.json'),
  `${JSON.stringify(
    {
      walbridge: own.version,
      libraries: Object.fromEntries(['@aws-sdk/client-s3', '@google-cloud/storage', 'pg', 'commander', ...NATIVE].map((name) => [name, versionOf(name)])),
    },
    null,
    2,
  )}\n`,
);

/** The package's licence file, else the licence section of its README (where some put it). */
const licenceText = (dir) => {
  const files = readdirSync(dir);
  const file = files.find((f) => /^(licen[cs]e|copying)([.-].*)?$/i.test(f));
  if (file) return readFileSync(path.join(dir, file), 'utf8').trim();
  const readme = files.find((f) => /^readme(\.md)?$/i.test(f));
  const section = readme && /^#+\s*licen[cs]e\b.*$([\s\S]*?)(?=^#{1,6}\s|$(?![\s\S]))/im.exec(readFileSync(path.join(dir, readme), 'utf8'));
  return section?.[1].trim() || undefined;
};
/** For a package that ships no licence text: the licence its package.json names, in its standard words. */
const standardText = (pkg) => {
  const author = typeof pkg.author === 'string' ? pkg.author : pkg.author?.name;
  if (pkg.license === 'MIT')
    return `Copyright (c) ${author ?? `the authors of ${pkg.name}`}\n\n${MIT}\n(The package ships no licence file: its package.json names MIT.)`;
  if (pkg.license === 'Apache-2.0')
    return "Licensed under the Apache License, Version 2.0: its text is walbridge's LICENSE file. (The package ships no licence file.)";
  return undefined;
};
const MIT = `Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated documentation files (the "Software"), to deal in the Software without restriction, including without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.`;

const notices = [...bundled.entries()]
  .map(([dir, pkg]) => ({ id: `${pkg.name}@${pkg.version}`, licence: pkg.license ?? 'see its package', text: licenceText(dir) ?? standardText(pkg) }))
  .filter((p, i, all) => all.findIndex((q) => q.id === p.id) === i)
  .sort((a, b) => a.id.localeCompare(b.id));
const untold = notices.filter((p) => !p.text).map((p) => p.id);
if (untold.length > 0) throw new Error(`bundle: no licence text for ${untold.join(', ')}: add it to scripts/bundle.mjs`);
writeFileSync(
  path.join(out, 'THIRD-PARTY-LICENSES'),
  `walbridge's bundle (dist/bundle/) carries code of these ${notices.length} packages, under their own licences.\n\n${notices
    .map((p) => `${'='.repeat(78)}\n${p.id} (${p.licence})\n${p.text ? `\n${p.text}\n` : ''}`)
    .join('\n')}`,
);
