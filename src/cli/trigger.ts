/** `walbridge trigger smart|fast|clear|status`: failover by trigger object. */
import { Argument, Command, Option } from 'commander';
import { ALL_STANDBYS, clearTrigger, listTriggers, setTrigger, type TriggerMode } from '../archive/repo/trigger.js';
import { ExitCode, type ExitStatus } from '../errors.js';
import { createLogger } from '../log.js';
import { addSettingOptions, settingsFrom } from './options.js';
import { openRepository } from '../archive/repo/open.js';

export function triggerCommand(done: (status: ExitStatus) => void): Command {
  const command = new Command('trigger')
    .summary("write, remove or show a namespace's failover trigger")
    .description(
      'Fail over standbys that wait in archive-fetch. smart: they restore every segment already archived, then end recovery (no archived WAL is lost). ' +
        'fast: they end recovery at once. clear: remove the trigger. status: show the triggers. ' +
        'Without --standby the trigger concerns every standby of the namespace. A trigger only concerns standbys set up before it was written.',
    )
    .addArgument(new Argument('<action>', 'smart, fast, clear or status').choices(['smart', 'fast', 'clear', 'status']))
    .addOption(new Option('--json', 'status: print {"namespace", "triggers": [{"mode", "target", "createdAt", "createdBy"}]} instead of text'));
  addSettingOptions(command, 'trigger').action(async (action: 'smart' | 'fast' | 'clear' | 'status') => {
    const log = createLogger('walbridge trigger');
    const settings = await settingsFrom(command, 'trigger');
    const { store } = await openRepository(settings, log);
    const target = settings.standby ?? ALL_STANDBYS;
    const who = target === ALL_STANDBYS ? 'every standby' : `standby "${target}"`;
    if (action === 'status') {
      const triggers = await listTriggers(store, settings.namespace);
      if (command.opts<{ json?: boolean }>().json) {
        const listed = triggers.map(({ mode, target, createdAt, createdBy }) => ({ mode, target, createdAt, createdBy }));
        process.stdout.write(`${JSON.stringify({ namespace: settings.namespace, triggers: listed }, null, 2)}\n`);
        return done(ExitCode.ok);
      }
      if (triggers.length === 0) process.stdout.write(`no trigger in namespace "${settings.namespace}"\n`);
      for (const t of triggers) {
        process.stdout.write(
          `${t.mode} trigger for ${t.target === ALL_STANDBYS ? 'every standby' : `standby "${t.target}"`}, written at ${t.createdAt} by ${t.createdBy}\n`,
        );
      }
    } else if (action === 'clear') {
      const existed = await clearTrigger(store, settings.namespace, target);
      log.info(existed ? `removed the trigger for ${who}` : `there was no trigger for ${who}`);
    } else {
      const trigger = await setTrigger(store, settings.namespace, action as TriggerMode, target);
      log.info(`${trigger.mode} failover triggered for ${who} of namespace "${settings.namespace}" at ${trigger.createdAt}`);
    }
    done(ExitCode.ok);
  });
  return command;
}
