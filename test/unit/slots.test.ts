import { describe, expect, it } from 'vitest';
import { Slots } from '../../src/util/slots.js';

/** Tasks on `slots` that each run until released in `order`; what started, in order, and the most at once. */
async function runGated(slots: Slots, tasks: readonly [string, boolean][], order: readonly string[], before?: () => void) {
  const started: string[] = [];
  const gates = new Map<string, () => void>();
  let running = 0;
  let most = 0;
  const all = tasks.map(([name, urgent]) =>
    slots.run(
      name,
      async () => {
        started.push(name);
        most = Math.max(most, ++running);
        await new Promise<void>((resolve) => gates.set(name, resolve));
        running--;
        return name;
      },
      urgent,
    ),
  );
  before?.();
  await new Promise((r) => setTimeout(r, 10));
  const first = [...started];
  for (const name of order) {
    await new Promise((r) => setTimeout(r, 10));
    gates.get(name)!();
  }
  return { results: await Promise.all(all), first, started, most };
}

describe('Slots', () => {
  it('runs at most its size at once, the others in order, urgent ones first', async () => {
    const tasks: [string, boolean][] = [
      ['a', false],
      ['b', false],
      ['c', false],
      ['d', false],
      ['e', true],
    ];
    const run = await runGated(new Slots(2), tasks, ['a', 'b', 'e', 'c', 'd']);
    expect(run.first).toEqual(['a', 'b']);
    expect(run.results).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(run.started).toEqual(['a', 'b', 'e', 'c', 'd']);
    expect(run.most).toBe(2);
  });

  it('starts a promoted task before the others waiting, after the urgent ones', async () => {
    const slots = new Slots(1);
    const tasks: [string, boolean][] = [
      ['a', false],
      ['b', false],
      ['c', false],
      ['d', true],
    ];
    const run = await runGated(slots, tasks, ['a', 'd', 'c', 'b'], () => {
      slots.promote('c');
      slots.promote('a'); // running already: nothing to do
    });
    expect(run.started).toEqual(['a', 'd', 'c', 'b']);
  });

  it("passes a failed task's slot on", async () => {
    const slots = new Slots(1);
    await expect(slots.run('a', () => Promise.reject(new Error('no')), false)).rejects.toThrow('no');
    expect(await slots.run('b', async () => 'next', false)).toBe('next');
  });

  it('turns: urgent by their key when given, and an after-hook before the slot passes on', async () => {
    const slots = new Slots(1);
    const asked = new Set(['c']);
    const seen: string[] = [];
    const take = slots.turns(
      (key) => asked.has(key),
      () => seen.push('after'),
    );
    const task = (key: string) => async () => {
      seen.push(key);
      await new Promise((r) => setTimeout(r, 5));
      return key;
    };
    const all = await Promise.all(['a', 'b', 'c'].map((key) => take(key, task(key))));
    expect(all).toEqual(['a', 'b', 'c']);
    expect(seen).toEqual(['a', 'after', 'c', 'after', 'b', 'after']);
  });
});
