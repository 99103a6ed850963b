import { describe, expect, test } from 'vitest';
import { DifferingBytes } from '../../src/blockdiff/differingBytes.js';

describe('DifferingBytes', () => {
  const d = new DifferingBytes([
    { offset: 512, length: 512 },
    { offset: 4096, length: 1024 },
  ]);
  test('a range overlaps exactly when it shares a byte with one of the ranges', () => {
    expect(d.overlaps(0, 512)).toBe(false);
    expect(d.overlaps(0, 513)).toBe(true);
    expect(d.overlaps(1023, 1024)).toBe(true);
    expect(d.overlaps(1024, 4096)).toBe(false);
    expect(d.overlaps(5119, 6000)).toBe(true);
    expect(d.overlaps(5120, 9000)).toBe(false);
    expect(d.overlaps(0, 100000)).toBe(true);
  });
  test('empty ranges and an empty set overlap nothing', () => {
    expect(d.overlaps(600, 600)).toBe(false);
    expect(new DifferingBytes([]).overlaps(0, 1 << 30)).toBe(false);
  });
});
