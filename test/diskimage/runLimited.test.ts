import { describe, expect, test } from 'vitest';
import { runLimited } from '../../src/diskimage/runLimited.js';

const tick = (ms: number) => new Promise((done) => setTimeout(done, ms));

describe('runLimited', () => {
  test('runs every task, never more than the limit at once, started in order', async () => {
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const tasks = Array.from({ length: 20 }, (_, i) => async () => {
      started.push(i);
      running++;
      peak = Math.max(peak, running);
      await tick(1 + (i % 3));
      running--;
    });
    await runLimited(tasks, 4);
    expect(started).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(peak).toBe(4);
  });

  test('after a failure starts nothing more, lets the running tasks settle, then rejects with it', async () => {
    const started: number[] = [];
    let settled = 0;
    const tasks = Array.from({ length: 10 }, (_, i) => async () => {
      started.push(i);
      await tick(i === 1 ? 1 : 5);
      settled++;
      if (i === 1) throw new Error('task 1 failed');
    });
    await expect(runLimited(tasks, 2)).rejects.toThrow('task 1 failed');
    expect(started).toEqual([0, 1]);
    expect(settled).toBe(2);
  });
});
