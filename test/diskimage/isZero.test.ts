import { describe, expect, test } from 'vitest';
import { ZERO_BLOCK_BYTES, asBuffer, isZero, isZeroRange } from '../../src/diskimage/isZero.js';

describe('isZero', () => {
  test('finds a single non-zero byte anywhere, across comparison blocks', () => {
    const buf = new Uint8Array(3 * ZERO_BLOCK_BYTES + 100);
    expect(isZero(buf)).toBe(true);
    for (const at of [0, ZERO_BLOCK_BYTES - 1, ZERO_BLOCK_BYTES, 2 * ZERO_BLOCK_BYTES + 7, buf.length - 1]) {
      buf[at] = 1;
      expect(isZero(buf)).toBe(false);
      buf[at] = 0;
    }
  });

  test('looks only at the range asked, and at a subarray only', () => {
    const backing = new Uint8Array(1000).fill(9);
    const view = backing.subarray(100, 900).fill(0);
    expect(isZero(view)).toBe(true);
    const b = asBuffer(backing);
    expect(isZeroRange(b, 100, 900)).toBe(true);
    expect(isZeroRange(b, 99, 900)).toBe(false);
    expect(isZeroRange(b, 100, 901)).toBe(false);
    expect(isZeroRange(b, 500, 500)).toBe(true);
  });
});
