/**
 * freeRuns, the allocator's scan: the free runs of a bitmap from a bit on, leaving out
 * numbers to avoid, must be exactly what a bit-by-bit reading gives, whatever the avoid
 * set offers (an interval set that says where its runs start and end, or a plain set).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockRuns } from '../../../src/fs/BlockRuns.js';
import { freeRuns, type NumberSet } from '../../../src/fs/ext4/allocator.js';

function naive(bitmap: Uint8Array, nbits: number, from: number, base: number, avoid: (n: number) => boolean): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let run: [number, number] | undefined;
  for (let i = from; i < nbits; i++) {
    const free = (bitmap[i >>> 3]! & (1 << (i & 7))) === 0 && !avoid(base + i);
    if (free) {
      if (run === undefined) run = [i, 0];
      run[1]++;
    } else if (run !== undefined) {
      out.push(run);
      run = undefined;
    }
  }
  if (run !== undefined) out.push(run);
  return out;
}

describe('freeRuns', () => {
  it('yields exactly the bitmap-free, not avoided runs from the start bit, with any kind of avoid set', () => {
    const bitmapArb = fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => b.map((x) => (x < 100 ? 0 : x > 200 ? 0xff : x)));
    const runsArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 1, max: 60 })), { maxLength: 8 });
    fc.assert(
      fc.property(bitmapArb, runsArb, fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 100 }), (bitmap, avoidRuns, base, fromRaw) => {
        const nbits = bitmap.length * 8;
        const from = fromRaw % (nbits + 1);
        const runs = new BlockRuns(avoidRuns);
        const plain: NumberSet = { has: (n) => runs.has(n) };
        const want = naive(bitmap, nbits, from, base, (n) => runs.has(n));
        expect([...freeRuns(bitmap, nbits, from, base, runs)]).toEqual(want);
        expect([...freeRuns(bitmap, nbits, from, base, plain)]).toEqual(want);
        expect([...freeRuns(bitmap, nbits, from, base)]).toEqual(naive(bitmap, nbits, from, base, () => false));
      }),
      { seed: 21, numRuns: 500 },
    );
  });
});
