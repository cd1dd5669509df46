/** Turns the settings table into commander options, and the parsed flags back into raw settings. */
import { Option, type Command } from 'commander';
import { CONFIG_ENV, SETTINGS, resolveSettings, type CommandName, type RawSettings, type Settings } from '../config/settings.js';
import { setLogFormat } from '../log.js';

export function addSettingOptions(command: Command, name: CommandName): Command {
  command.addOption(new Option('--config <file>', `read settings from this file ("key = value" lines) [env ${CONFIG_ENV}]`));
  for (const def of SETTINGS) {
    if (def.commands && !def.commands.includes(name)) continue;
    const flag = def.value ? `--${def.key} ${def.value}` : `--${def.key}`;
    const dflt = def.default !== undefined && def.value ? ` (default: ${def.default})` : '';
    command.addOption(new Option(flag, `${def.description}${dflt} [env ${def.env}]`));
  }
  return command;
}

/**
 * Settings from this command's flags, the environment and the config file: only those `name`
 * takes are read. This process's own (no `env` given) also set how it logs from then on.
 */
export async function settingsFrom(command: Command, name: CommandName, opts: { wholeRepository?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<Settings> {
  const values = command.opts<Record<string, string | boolean | undefined>>();
  const flags: Record<string, string | boolean | undefined> = { config: values['config'] };
  for (const def of SETTINGS) flags[def.key] = values[camel(def.key)];
  const settings = await resolveSettings({ flags: flags as RawSettings, env: opts.env ?? process.env, command: name, wholeRepository: opts.wholeRepository });
  if (!opts.env) setLogFormat(settings.logFormat);
  return settings;
}

function camel(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** This command's setting flags as environment variables, for a child that must see the same settings. */
export function settingsEnvironment(command: Command): Record<string, string> {
  const opts = command.opts<Record<string, string | boolean | undefined>>();
  const env: Record<string, string> = {};
  if (typeof opts['config'] === 'string') env[CONFIG_ENV] = opts['config'];
  for (const def of SETTINGS) {
    const value = opts[camel(def.key)];
    if (value !== undefined) env[def.env] = String(value === true ? '1' : value);
  }
  return env;
}
