/**
 * One line per action on stderr, which PostgreSQL copies into its own log for archive_command
 * and restore_command. Lines never span several log lines and never carry secrets.
 */
import { writeSync } from 'node:fs';

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export type LogFormat = 'text' | 'json';

export function isLogFormat(value: string): value is LogFormat {
  return value === 'text' || value === 'json';
}

/** What a json log line holds, for the settings' help. */
export const JSON_LOG_FIELDS = 'time, level, program, pid, message';

// From the environment at once, so that an error in the settings themselves is written as asked;
// setLogFormat() applies the resolved setting (flag, environment, config file).
let format: LogFormat = isLogFormat(process.env['WALBRIDGE_LOG_FORMAT'] ?? '') ? (process.env['WALBRIDGE_LOG_FORMAT'] as LogFormat) : 'text';

export function setLogFormat(value: LogFormat): void {
  format = value;
}

export function logFormat(): LogFormat {
  return format;
}

type Level = 'info' | 'warning' | 'error';
const TEXT_LABEL = { info: '', warning: 'WARNING: ', error: 'ERROR: ' } as const;
const STAMP_LABEL = { info: 'INFO', warning: 'WARNING', error: 'ERROR' } as const;

/**
 * `stamped`: a background process, whose stderr is its own log file (pg_wal/walbridge/*.log), says
 * when, which process and how grave in text too; a call's lines go to PostgreSQL's log, which says
 * when and which process itself.
 */
export function createLogger(program: string, opts: { quiet?: boolean; stamped?: boolean } = {}): Logger {
  const write = (level: Level, message: string) => {
    // Control characters (newlines from an SDK message, say) would split or forge log lines.
    const text = message.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
    const line =
      format === 'json'
        ? JSON.stringify({ time: new Date().toISOString(), level, program, pid: process.pid, message: text })
        : opts.stamped
          ? `${new Date().toISOString()} [${process.pid}] ${STAMP_LABEL[level]} ${program}: ${text}`
          : `${program}: ${TEXT_LABEL[level]}${text}`;
    try {
      writeSync(2, `${line}\n`);
    } catch {
      // stderr closed: nothing useful left to do with a log line
    }
  };
  return {
    info: (m) => {
      if (!opts.quiet) write('info', m);
    },
    warn: (m) => write('warning', m),
    error: (m) => write('error', m),
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** An age in seconds as an operator reads it: "42 s", "5 min", "3 h", "2 days". */
export function formatAge(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86_400)} days`;
}
