/**
 * What lets bin/archive-fetch answer a *waiting* call from the spool without starting Node. A
 * waiting call looks for the failover triggers and for a newer timeline before it restores
 * anything (wait.ts); the sh front-end cannot ask the store, so the fetcher looks on its behalf
 * while calls come (a standby catching up) and writes what it saw, `prefetch/front-end-waiting`:
 *
 *   <key> <spool> <timeline> <until> <boot id>
 *
 * the key of the calls it holds for (a waiting call that asked the fetcher: its settings are the
 * fetcher's), their spool, the timeline (8 hex digits) that nothing forked off and no trigger
 * stops, and until when: the look's start plus twice --max-poll-interval, in /proc/uptime's
 * centiseconds (a clock dash reads with a builtin), and the boot it counts from (uptime starts
 * again at 0: a file left from before a reboot would hold for days). So a trigger written now stops the front-end
 * as soon as it stops a waiting call (watch.ts reads the triggers that often). A trigger to obey,
 * a fork, or a look that failed: the file goes, and calls go through Node, which decides (and
 * under a trigger, fails over).
 */
import { readFileSync } from 'node:fs';
import { rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readRecoverySignal } from '../../wal/datadir.js';
import { waitingFrontEndFile } from '../local-layout.js';
import { findFork } from '../repo/timelines.js';
import type { FetchContext } from './download.js';
import type { Triggers } from './watch.js';

/** Calls whose front-end may answer: their key, spool and timeline. */
export interface Holder {
  readonly key: string;
  readonly spool: string;
  readonly timeline: number;
}

/** /proc/uptime in centiseconds (its own two decimals), or undefined where there is none. */
export function uptimeCentiseconds(read: () => string = () => readFileSync('/proc/uptime', 'utf8')): number | undefined {
  let text: string;
  try {
    text = read();
  } catch {
    return undefined;
  }
  const m = /^(\d+)\.(\d\d)\s/.exec(text);
  return m ? Number(m[1]) * 100 + Number(m[2]) : undefined;
}

/** This boot's id (the kernel's), or undefined where there is none. */
export function bootId(read: () => string = () => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')): string | undefined {
  try {
    const id = read().trim();
    return /^[0-9a-f-]{36}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/** The line the front-end reads; `until` in /proc/uptime centiseconds of boot `boot`. */
export function clearanceLine(holder: Holder, until: number, boot: string): string {
  return `${holder.key} ${path.basename(holder.spool)} ${holder.timeline.toString(16).toUpperCase().padStart(8, '0')} ${until} ${boot}\n`;
}

/** Taken off `until`: the script's check and its rename are two steps (a fork between them). */
const MARGIN_CS = 5;

export class Clearance {
  private holder: Holder | undefined;
  private lookedAt = -Infinity;
  private looking: Promise<void> | undefined;
  private closed = false;
  private writes = 0;

  constructor(
    private readonly ctx: FetchContext,
    private readonly walDir: string,
    private readonly triggers: Triggers,
    /** How long a look holds, in ms: as long as a waiting call goes between two reads of the triggers. */
    private readonly holdsMs: number,
  ) {}

  /** A waiting call of `holder.key` asked: look now for the calls after it. */
  offer(holder: Holder): void {
    if (this.holder?.key !== holder.key || this.holder.spool !== holder.spool || this.holder.timeline !== holder.timeline) {
      this.holder = holder;
      this.lookedAt = -Infinity;
    }
    void this.refresh();
  }

  /** Looks again once a third of the last look's time has gone (called at each tick while calls come): a late tick still finds it valid. */
  async refresh(): Promise<void> {
    const holder = this.holder;
    if (!holder || this.closed || this.looking || performance.now() - this.lookedAt < this.holdsMs / 3) return;
    this.looking = this.look(holder).finally(() => {
      this.looking = undefined;
    });
    await this.looking;
  }

  private async look(holder: Holder): Promise<void> {
    const started = uptimeCentiseconds();
    const boot = bootId();
    this.lookedAt = performance.now();
    try {
      if (started === undefined || boot === undefined || !(await this.clear(holder.timeline))) return await this.remove();
      // Not written (no spool directory yet, before the first download): the next chance looks again.
      if (!(await this.write(clearanceLine(holder, started + Math.floor(this.holdsMs / 10) - MARGIN_CS, boot)))) this.lookedAt = -Infinity;
    } catch {
      await this.remove();
    }
  }

  /** No trigger to obey and no newer timeline off `timeline`. */
  private async clear(timeline: number): Promise<boolean> {
    const ctx = this.ctx;
    const signal = await readRecoverySignal(path.dirname(this.walDir));
    if (!signal) return false; // recovery ended: nothing to serve
    const [trigger, fork] = await Promise.all([this.triggers.toObey(signal), findFork(ctx.store, ctx.namespace, timeline, ctx.keys)]);
    return trigger === undefined && fork === undefined;
  }

  private async write(line: string): Promise<boolean> {
    if (this.closed) return false;
    const file = waitingFrontEndFile(this.walDir);
    const temp = path.join(path.dirname(file), `.front-end-waiting.walbridge-${process.pid}-${this.writes++}`);
    try {
      await writeFile(temp, line); // never creates the prefetch directory: a background process must not re-create it
      await rename(temp, file);
      return true;
    } catch {
      await unlink(temp).catch(() => undefined);
      return false;
    }
  }

  /** Calls go through Node from now on: no look in flight writes after this. */
  async withdraw(): Promise<void> {
    this.closed = true;
    await this.looking;
    await this.remove();
  }

  private async remove(): Promise<void> {
    await unlink(waitingFrontEndFile(this.walDir)).catch(() => undefined);
  }
}
