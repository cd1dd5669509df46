/**
 * The reference documents under deploy/, made from the same command definitions and settings
 * table as the help: the sample configuration file and the man pages. test/unit/reference.test.ts
 * keeps the committed files equal to what this makes (`vitest run test/unit/reference.test.ts -u`
 * writes them again).
 */
import type { Command, Help } from 'commander';
import { CONFIG_ENV, DEFAULT_CONFIG, SETTINGS } from '../config/settings.js';
import { EXIT_MEANING, ExitCode } from '../errors.js';

const WIDTH = 100;

/** deploy/walbridge.conf: every setting, commented out, with its meaning, environment name and default. */
export function sampleConfig(): string {
  const lines = [
    `# walbridge's configuration: ${DEFAULT_CONFIG} is read when present (or the file named by --config`,
    `# or ${CONFIG_ENV}). "key = value" lines; flags win over the environment, the environment over this file.`,
    '# Unknown keys are errors. Every setting is listed here, commented out, with its default if it has one.',
    '# Credentials never go here: see the README (Configuration) for where they go.',
  ];
  for (const def of SETTINGS) {
    const scope = def.commands ? ` Used by: ${def.commands.join(', ')}.` : '';
    lines.push('', ...wrap(`${def.description}. Environment: ${def.env}.${scope}`, WIDTH - 2).map((l) => `# ${l}`));
    lines.push(def.value ? `# ${def.key} = ${def.default ?? def.value}` : `# ${def.key} = ${def.default ?? 'false'}`);
  }
  return `${lines.join('\n')}\n`;
}

/** A man page (section 1) for `program`, an executable's command; walbridge's lists each subcommand. */
export function manPage(program: Command, version: string): string {
  const name = program.name();
  const help = program.createHelp();
  const out = [
    `.TH ${name.toUpperCase()} 1 "" "walbridge ${version}" "walbridge"`,
    '.SH NAME',
    `${roff(name)} \\- ${roff(program.summary() || firstSentence(program.description()))}`,
    '.SH SYNOPSIS',
    `.B ${roff(name)}`,
    roff(program.usage()),
    '.SH DESCRIPTION',
    roff(program.description()),
  ];
  const options = help.visibleOptions(program);
  if (options.length > 0) out.push('.SH OPTIONS', ...optionList(help, program));
  const commands = help.visibleCommands(program).filter((c) => c.name() !== 'help');
  if (commands.length > 0) {
    out.push('.SH COMMANDS');
    for (const sub of commands) {
      out.push('.SS', `.B ${roff(`${name} ${sub.name()}`)}`, roff(sub.usage()), '.PP', roff(sub.description() || sub.summary()));
      if (help.visibleOptions(sub).length > 0) out.push('.PP', 'Options:', ...optionList(help, sub));
    }
  }
  out.push(
    '.SH FILES',
    '.TP',
    `.I ${DEFAULT_CONFIG}`,
    roff(`settings, "key = value" lines, read when present and neither --config nor ${CONFIG_ENV} names another file (${CONFIG_ENV} set empty: none)`),
    '.SH ENVIRONMENT',
    roff(
      `Every setting has an environment variable, named with each option above; flags win over the environment, the environment over the config file. ${CONFIG_ENV} names the config file. Credentials come from the store's own chain: AWS_* and AWS_PROFILE for S3, GOOGLE_APPLICATION_CREDENTIALS for GCS.`,
    ),
    '.SH EXIT STATUS',
  );
  for (const [kind, code] of Object.entries(ExitCode)) out.push('.TP', `.B ${code}`, roff(EXIT_MEANING[kind as keyof typeof ExitCode]));
  const others = ['walbridge', 'archive-push', 'archive-fetch'].filter((n) => n !== name);
  out.push('.SH SEE ALSO', `${others.map((n) => `.BR ${n} (1),`).join('\n')}`, '.BR postgres (1)', '.PP', roff('README.md in the walbridge package.'));
  return `${out.join('\n')}\n`;
}

function optionList(help: Help, command: Command): string[] {
  return help.visibleOptions(command).flatMap((option) => ['.TP', `.B ${roff(option.flags)}`, roff(help.optionDescription(option))]);
}

function firstSentence(text: string): string {
  return text.split(/\.\s/)[0]!.replace(/\.$/, '');
}

/** Text as roff reads it literally: backslashes escaped, hyphens as minus signs, no line read as a request. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line))
    .join('\n');
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}
