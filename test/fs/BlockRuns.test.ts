import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BlockRuns } from '../../src/fs/BlockRuns.js';

const runsArb = fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 20 })), { maxLength: 12 });
const asSet = (runs: ReadonlyArray<readonly [number, number]>): Set<number> => {
  const s = new Set<number>();
  for (const [a, n] of runs) for (let i = a; i < a + n; i++) s.add(i);
  return s;
};
const members = (r: BlockRuns): number[] => [...asSet([...r.runs()])].sort((x, y) => x - y);
const sorted = (s: Set<number>): number[] => [...s].sort((x, y) => x - y);

describe('BlockRuns', () => {
  it('merges overlapping and touching runs', () => {
    expect(new BlockRuns([[10, 5], [0, 3], [3, 2], [12, 10]]).toArray()).toEqual([[0, 5], [10, 12]]);
  });

  it('fromByteRanges covers partial blocks whole', () => {
    expect(BlockRuns.fromByteRanges([{ offset: 4095, length: 2 }, { offset: 65536, length: 65536 }], 4096).toArray()).toEqual([[0, 2], [16, 16]]);
  });

  it('has, intersect, minus and union agree with a set of block numbers', () => {
    fc.assert(
      fc.property(runsArb, runsArb, fc.integer({ min: 0, max: 230 }), fc.integer({ min: 0, max: 40 }), (x, y, s, n) => {
        const a = new BlockRuns(x);
        const b = new BlockRuns(y);
        const sa = asSet(x);
        const sb = asSet(y);
        expect(members(a)).toEqual(sorted(sa));
        expect(a.blockCount).toBe(sa.size);
        for (let i = 0; i < 230; i++) expect(a.has(i)).toBe(sa.has(i));
        expect(members(a.minus(b))).toEqual(sorted(new Set([...sa].filter((v) => !sb.has(v)))));
        expect(members(a.union(b))).toEqual(sorted(new Set([...sa, ...sb])));
        const inter = [...a.intersect(s, n)];
        expect(sorted(asSet(inter))).toEqual(sorted(new Set([...sa].filter((v) => v >= s && v < s + n))));
        expect(a.overlaps(s, n)).toBe(inter.length > 0);
      }),
      { seed: 5, numRuns: 300 },
    );
  });
});
