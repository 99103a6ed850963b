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

  it('nextMember and endOfRunAt agree with a set of block numbers', () => {
    fc.assert(
      fc.property(runsArb, (x) => {
        const a = new BlockRuns(x);
        const sa = asSet(x);
        for (let i = 0; i < 230; i++) {
          let next: number | undefined;
          for (let v = i; v < 230; v++) if (sa.has(v)) { next = v; break; }
          expect(a.nextMember(i)).toBe(next);
          let end: number | undefined;
          if (sa.has(i)) for (end = i; sa.has(end); end++);
          expect(a.endOfRunAt(i)).toBe(end);
        }
      }),
      { seed: 9, numRuns: 200 },
    );
  });

  it('intersection, countIn and gapsIn agree with a set of block numbers', () => {
    fc.assert(
      fc.property(runsArb, runsArb, fc.integer({ min: 0, max: 230 }), fc.integer({ min: 0, max: 40 }), (x, y, s, n) => {
        const a = new BlockRuns(x);
        const sa = asSet(x);
        const sb = asSet(y);
        expect(members(a.intersection(new BlockRuns(y)))).toEqual(sorted(new Set([...sa].filter((v) => sb.has(v)))));
        const inRange = (v: number): boolean => v >= s && v < s + n;
        expect(a.countIn(s, n)).toBe([...sa].filter(inRange).length);
        const gaps = [];
        for (let v = s; v < s + n; v++) if (!sa.has(v)) gaps.push(v);
        expect(members(a.gapsIn(s, n))).toEqual(gaps);
      }),
      { seed: 6, numRuns: 300 },
    );
  });

  it('firstRunAt finds the first fitting run of the set at or after the goal, firstGapAt the first fitting gap before the end', () => {
    fc.assert(
      fc.property(runsArb, fc.integer({ min: 0, max: 230 }), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 0, max: 240 }), (x, goal, len, end) => {
        const a = new BlockRuns(x);
        const sa = asSet(x);
        const fits = (b: number, inSet: boolean): boolean => {
          for (let v = b; v < b + len; v++) if (sa.has(v) !== inSet) return false;
          return true;
        };
        // The model: scan upward from the goal (past every member, runs end by 220).
        let run: number | undefined;
        for (let b = goal; b <= 260 && run === undefined; b++) if (fits(b, true)) run = b;
        if (len === 0) run = goal;
        expect(a.firstRunAt(goal, len)).toBe(run);
        let gap: number | undefined;
        for (let b = goal; b + len <= end && gap === undefined; b++) if (fits(b, false)) gap = b;
        expect(a.firstGapAt(goal, len, end)).toBe(gap);
      }),
      { seed: 7, numRuns: 500 },
    );
  });

  it('firstRunAt and firstGapAt on a hand-made set', () => {
    const a = new BlockRuns([[10, 5], [20, 3], [30, 10]]);
    expect(a.firstRunAt(0, 4)).toBe(10);
    expect(a.firstRunAt(12, 4)).toBe(30);
    expect(a.firstRunAt(12, 3)).toBe(12);
    expect(a.firstRunAt(0, 11)).toBeUndefined();
    expect(a.firstGapAt(0, 10, 100)).toBe(0);
    expect(a.firstGapAt(5, 6, 100)).toBe(23);
    expect(a.firstGapAt(5, 8, 100)).toBe(40);
    expect(a.firstGapAt(11, 5, 100)).toBe(15);
    expect(a.firstGapAt(11, 6, 100)).toBe(23);
    expect(a.firstGapAt(35, 5, 44)).toBeUndefined();
    expect(a.firstGapAt(35, 4, 44)).toBe(40);
  });
});
