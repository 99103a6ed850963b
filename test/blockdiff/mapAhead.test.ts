import { describe, expect, test } from 'vitest';
import { mapAhead } from '../../src/blockdiff/mapAhead.js';
import { FifoArena } from '../../src/blockdiff/FifoArena.js';

/**
 * Runs mapAhead over items of the given costs, recording the most cost started and not yet
 * done with by the consumer (which includes the one item the consumer holds).
 */
async function peakInFlight(costs: number[], maxCost: number, ahead = 16): Promise<{ peak: number; order: number[] }> {
  let inFlight = 0;
  let peak = 0;
  const order: number[] = [];
  const items = costs.map((cost, i) => ({ cost, i }));
  const fn = async (it: { cost: number; i: number }) => {
    inFlight += it.cost;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setImmediate(r));
    return it;
  };
  for await (const it of mapAhead(items, fn, { ahead, cost: (x) => x.cost, maxCost })) {
    order.push(it.i);
    inFlight -= it.cost;
  }
  return { peak, order };
}

describe('mapAhead', () => {
  test('keeps the cost in flight within maxCost when runs of small items come before large ones', async () => {
    // An overlay's many small clusters, then large ranges: each small item consumed must not let another large one start past the bound.
    const costs = Array.from({ length: 20 }, () => [1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4]).flat();
    const { peak, order } = await peakInFlight(costs, 8);
    // At most maxCost in flight, plus the item the consumer holds (cost 4 at most).
    expect(peak).toBeLessThanOrEqual(8 + 4);
    expect(order).toEqual(costs.map((_, i) => i));
  });

  test('starts an item larger than maxCost when nothing else is in flight', async () => {
    const { peak, order } = await peakInFlight([1, 20, 1, 20], 8);
    // 20 alone in flight, while the consumer holds a 1.
    expect(peak).toBe(21);
    expect(order).toEqual([0, 1, 2, 3]);
  });

  test('without maxCost, `ahead` items are in flight', async () => {
    const { peak } = await peakInFlight(Array(50).fill(1), Number.POSITIVE_INFINITY, 5);
    expect(peak).toBe(5 + 1);
  });
});

describe('FifoArena', () => {
  test('slices given back in order are reused around the ring, never overlapping one still taken', () => {
    const arena = new FifoArena(100);
    const live: Uint8Array[] = [];
    let fresh = 0;
    // A seeded walk of takes (lengths 1..40) and in-order releases, at most 60 bytes taken at once.
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n) + 1;
    let taken = 0;
    for (let step = 0; step < 5000; step++) {
      const len = rand(40);
      if (taken + len <= 60) {
        const b = arena.take(len);
        expect(b.length).toBe(len);
        if (b.buffer.byteLength !== 100) fresh++;
        b.fill(step % 251);
        live.push(b);
        taken += len;
      } else {
        const b = live.shift()!;
        // Nothing taken since wrote over it.
        expect(b.every((x) => x === b[0])).toBe(true);
        arena.release(b);
        taken -= b.length;
      }
    }
    // 60 bytes at most taken plus under 40 lost at the wrap fit in 100: never a fresh buffer.
    expect(fresh).toBe(0);
  });

  test('a piece larger than the free stretch is a fresh buffer, and giving it back changes nothing', () => {
    const arena = new FifoArena(10);
    const a = arena.take(6);
    const b = arena.take(6);
    expect(b.buffer).not.toBe(a.buffer);
    arena.release(a);
    arena.release(b);
    const c = arena.take(10);
    expect(c.buffer).toBe(a.buffer);
  });
});
