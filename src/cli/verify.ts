/** `walbridge verify [--deep] [--json]`: could a standby replay this namespace? */
import { Command, Option } from 'commander';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository } from '../archive/repo/open.js';
import { statusJson } from './status.js';

export function verifyCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('verify')
    .summary('check a namespace: gaps, timeline histories, foreign objects, and (--deep) every object content')
    .description(
      'Walk the namespace and report what would stop a standby: gaps in the segment sequence of a timeline, timelines without ' +
        'a .history file or with an inconsistent one, objects walbridge does not write, and with --deep every object read whole ' +
        'and checked against its recorded hash and size and, for segments, its page header and the cluster identity. ' +
        'A namespace that holds nothing (a mistyped --namespace) and temp files that killed writers left in a file:// repository are problems too. ' +
        `Exits ${ExitCode.problems} if there is any problem, 0 otherwise.`,
    )
    .addOption(new Option('--deep', 'also read every object and check its content (downloads the whole namespace)'))
    .addOption(new Option('--json', 'print one JSON object instead of text'));
  addSettingOptions(command, 'verify').action(async () => {
    const log = createLogger('walbridge verify');
    const flags = command.opts<{ deep?: boolean; json?: boolean }>();
    const settings = await settingsFrom(command, 'verify');
    const { store } = await openRepository(settings, log);
    const { verifyNamespace } = await import('../archive/repo/inspect.js');
    const bar = process.stderr.isTTY && !flags.json ? progressBar() : undefined;
    const report = await verifyNamespace(store, settings.namespace, { deep: !!flags.deep, progress: bar, keys: settings.encryption });
    bar?.(-1, 0);
    const ok = report.problems.length === 0;
    if (flags.json) {
      process.stdout.write(
        `${JSON.stringify({ ok, deep: !!flags.deep, contentChecked: report.contentChecked, problems: report.problems, status: statusJson(report.status, new Date()) }, null, 2)}\n`,
      );
    } else {
      for (const p of report.problems) process.stdout.write(`PROBLEM (${p.kind}): ${p.message}\n`);
      const { inventory: inv } = report.status;
      const checked = flags.deep ? `, ${report.contentChecked} read and checked` : ' (names only; --deep reads every object)';
      process.stdout.write(
        `${ok ? 'OK' : `${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`}: namespace "${settings.namespace}", ${inv.objects} objects, ${inv.timelines.length} timeline${inv.timelines.length === 1 ? '' : 's'}${checked}\n`,
      );
    }
    done(ok ? ExitCode.ok : ExitCode.problems);
  });
  return command;
}

/** A one-line progress bar on a terminal's stderr; (-1, _) clears it. */
function progressBar(): (done: number, total: number) => void {
  let last = 0;
  return (done, total) => {
    if (done < 0) return void process.stderr.write('\r\x1b[K');
    const now = Date.now();
    if (done !== total && now - last < 100) return;
    last = now;
    const width = 30;
    const filled = total === 0 ? width : Math.round((done / total) * width);
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} objects read`);
  };
}
