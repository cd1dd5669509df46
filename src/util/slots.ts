/** Runs `task` when its turn comes: a Slots' run, its urgency decided by the owner. */
export type TakeTurn = <T>(key: string, task: () => Promise<T>) => Promise<T>;

/** At most `size` tasks at once; the others wait their turn in order, urgent ones before the rest. */
export class Slots {
  private running = 0;
  private readonly urgent: Waiting[] = [];
  private readonly waiting: Waiting[] = [];

  constructor(private readonly size: number) {}

  async run<T>(key: string, task: () => Promise<T>, urgent: boolean): Promise<T> {
    if (this.running < this.size) this.running++;
    else await new Promise<void>((start) => (urgent ? this.urgent : this.waiting).push({ key, start }));
    try {
      return await task();
    } finally {
      const next = this.urgent.shift() ?? this.waiting.shift();
      if (next)
        next.start(); // the slot passes on as it is
      else this.running--;
    }
  }

  /**
   * Turns on these slots: a task given under a key for which `urgent` holds (asked when it is
   * given) goes before the others; `after` runs as each one ends, before its slot passes on.
   */
  turns(urgent: (key: string) => boolean, after?: () => void): TakeTurn {
    return (key, task) =>
      this.run(
        key,
        async () => {
          try {
            return await task();
          } finally {
            after?.();
          }
        },
        urgent(key),
      );
  }

  /** A task waiting under `key` becomes urgent (someone now waits for it). */
  promote(key: string): void {
    const i = this.waiting.findIndex((w) => w.key === key);
    if (i >= 0) this.urgent.push(...this.waiting.splice(i, 1));
  }
}

interface Waiting {
  readonly key: string;
  readonly start: () => void;
}
