/** At most `size` tasks at once; the others wait their turn in order, urgent ones before the rest. */
export class Slots {
  private running = 0;
  private readonly urgent: Array<() => void> = [];
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>, urgent: boolean): Promise<T> {
    if (this.running < this.size) this.running++;
    else await new Promise<void>((resolve) => (urgent ? this.urgent : this.waiting).push(resolve));
    try {
      return await task();
    } finally {
      const next = this.urgent.shift() ?? this.waiting.shift();
      if (next)
        next(); // the slot passes on as it is
      else this.running--;
    }
  }
}
