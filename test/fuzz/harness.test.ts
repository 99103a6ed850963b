/** The fuzzer itself: reproducible from its seed, and mutating inside the given regions. */
import { describe, expect, it } from 'vitest';
import { mulberry32, mutate } from './harness.js';

describe('fuzz harness', () => {
  it('mulberry32 is deterministic per seed and differs across seeds', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('mutate replays exactly from the same seed and touches only its regions (or truncates)', () => {
    const pristine = Buffer.alloc(8192, 0x33);
    const regions = [{ name: 'r', offset: 1024, length: 512 }];
    for (let seed = 0; seed < 200; seed++) {
      const m1 = mutate(Buffer.from(pristine), regions, mulberry32(seed));
      const m2 = mutate(Buffer.from(pristine), regions, mulberry32(seed));
      expect(m2.done).toEqual(m1.done);
      expect(Buffer.compare(m1.bytes, m2.bytes)).toBe(0);
      const outside = [...m1.bytes].findIndex((v, i) => (i < 1024 || i >= 1536) && v !== 0x33);
      expect(outside, `seed ${seed}: ${m1.done.join('; ')}`).toBe(-1);
    }
  });
});
