import { describe, expect, it } from 'vitest';
import { Slots } from '../../src/util/slots.js';

describe('Slots', () => {
  it('runs at most its size at once, the others in order, urgent ones first', async () => {
    const slots = new Slots(2);
    const started: string[] = [];
    let running = 0;
    let most = 0;
    const gates = new Map<string, () => void>();
    const task = (name: string, urgent = false) =>
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
      );
    const all = [task('a'), task('b'), task('c'), task('d'), task('e', true)];
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual(['a', 'b']);
    for (const name of ['a', 'b', 'e', 'c', 'd']) {
      await new Promise((r) => setTimeout(r, 10));
      gates.get(name)!();
    }
    expect(await Promise.all(all)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(started).toEqual(['a', 'b', 'e', 'c', 'd']);
    expect(most).toBe(2);
  });

  it('starts a promoted task before the others waiting, after the urgent ones', async () => {
    const slots = new Slots(1);
    const started: string[] = [];
    const gates = new Map<string, () => void>();
    const task = (name: string, urgent = false) =>
      slots.run(
        name,
        async () => {
          started.push(name);
          await new Promise<void>((resolve) => gates.set(name, resolve));
        },
        urgent,
      );
    const all = [task('a'), task('b'), task('c'), task('d', true)];
    slots.promote('c');
    slots.promote('a'); // running already: nothing to do
    for (const name of ['a', 'd', 'c', 'b']) {
      await new Promise((r) => setTimeout(r, 10));
      gates.get(name)!();
    }
    await Promise.all(all);
    expect(started).toEqual(['a', 'd', 'c', 'b']);
  });

  it("passes a failed task's slot on", async () => {
    const slots = new Slots(1);
    await expect(slots.run('a', () => Promise.reject(new Error('no')), false)).rejects.toThrow('no');
    expect(await slots.run('b', async () => 'next', false)).toBe('next');
  });
});
