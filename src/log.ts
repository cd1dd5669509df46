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

export function createLogger(program: string, opts: { quiet?: boolean } = {}): Logger {
  const write = (level: string, message: string) => {
    // Control characters (newlines from an SDK message, say) would split or forge log lines.
    const line = `${program}: ${level}${message.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim()}\n`;
    try {
      writeSync(2, line);
    } catch {
      // stderr closed: nothing useful left to do with a log line
    }
  };
  return {
    info: (m) => {
      if (!opts.quiet) write('', m);
    },
    warn: (m) => write('WARNING: ', m),
    error: (m) => write('ERROR: ', m),
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
