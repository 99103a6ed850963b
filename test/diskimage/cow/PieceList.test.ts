/**
 * PieceList against a plain sorted array: random removals and insertions of
 * disjoint ranges, with tiny leaves so that splitting and joining leaves is
 * exercised on every run; every query agrees with the array.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PieceList, type Span } from '../../../src/diskimage/cow/PieceList.js';

/** The model's version of "cut [start, end) out, then put new disjoint ranges inside it". */
function modelReplace(model: Span[], start: number, end: number, items: Span[]): Span[] {
  return [...model.filter((p) => p.end <= start || p.start >= end), ...items].sort((a, b) => a.start - b.start);
}

describe('PieceList', () => {
  it('agrees with a sorted array under random removals and insertions', () => {
    const opArb = fc.record({ start: fc.integer({ min: 0, max: 2000 }), len: fc.integer({ min: 1, max: 60 }), cuts: fc.array(fc.integer({ min: 0, max: 59 }), { maxLength: 4 }) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(opArb, { maxLength: 300 }), fc.array(fc.integer({ min: 0, max: 2100 }), { maxLength: 20 }), (leafSize, ops, probes) => {
        const list = new PieceList<Span>(leafSize);
        let model: Span[] = [];
        for (const op of ops) {
          const start = op.start;
          const end = start + op.len;
          // Widen to whole items, as LayerStore does (it removes what it overlaps).
          const hit = model.filter((p) => p.end > start && p.start < end);
          const lo = Math.min(start, hit[0]?.start ?? start);
          const hi = Math.max(end, hit[hit.length - 1]?.end ?? end);
          const points = [...new Set([lo, hi, ...op.cuts.map((c) => lo + (c % (hi - lo)))])].sort((a, b) => a - b);
          const items: Span[] = [];
          for (let i = 0; i + 1 < points.length; i += 2) items.push({ start: points[i]!, end: points[i + 1]! });
          expect([...list.overlapping(start, end)]).toEqual(hit);
          list.remove(start, end);
          list.insert(items);
          model = modelReplace(model, lo, hi, items);
          expect(list.length).toBe(model.length);
        }
        expect([...list]).toEqual(model);
        for (const x of probes) {
          expect(list.firstEndingAfter(x)).toEqual(model.find((p) => p.end > x));
          expect(list.lastEndingAtOrBefore(x)).toEqual([...model].reverse().find((p) => p.end <= x));
        }
      }),
      { seed: 4242, numRuns: 200 },
    );
  });
});
