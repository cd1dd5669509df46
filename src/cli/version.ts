/** `walbridge version [--json]`: walbridge's version, the Node.js running it, the libraries bundled and the codecs that load here. */
import { Command, Option } from 'commander';
import { CODECS } from '../codec/codecs.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { buildInfo } from './build-info.js';

export function versionCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('version')
    .summary("show walbridge's version, Node.js's, the bundled libraries' and the codecs this machine can load")
    .addOption(new Option('--json', 'print one JSON object'));
  command.action(async () => {
    const { codecProblem } = await import('../codec/compression.js');
    const info = await buildInfo();
    const codecs = Object.fromEntries(CODECS.map((codec) => [codec, codecProblem(codec) ?? 'available']));
    const report = { walbridge: info.walbridge, node: process.versions.node, runtime: process.execPath, libraries: info.libraries, codecs };
    if (command.opts<{ json?: boolean }>().json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      const lines = [
        `walbridge ${info.walbridge}`,
        `Node.js ${process.versions.node} (${process.execPath})`,
        ...Object.entries(info.libraries).map(([name, version]) => `${name} ${version}`),
        ...Object.entries(codecs).map(([codec, state]) => `codec ${codec}: ${state}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    done(ExitCode.ok);
  });
  return command;
}
