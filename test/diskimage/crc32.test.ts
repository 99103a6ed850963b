/** CRC-32 (IEEE) in JS against the catalogue's check value and the native function it stands in for. */
import { describe, expect, test } from 'vitest';
import { crc32, nativeCrc } from '../../src/diskimage/crc32.js';
import { mulberry32 } from '../../fixtures/prng.mjs';

describe('crc32', () => {
  test('CRC-32/ISO-HDLC check value of "123456789" is 0xcbf43926', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
  test('equals the native crc32 on random inputs, and continues from a previous result as it does', () => {
    const native = nativeCrc()!.crc32;
    const rnd = mulberry32(32);
    for (let i = 0; i < 200; i++) {
      const data = new Uint8Array(i < 20 ? i : Math.floor(rnd() * 20000)).map(() => Math.floor(rnd() * 256));
      expect(crc32(data)).toBe(native(data) >>> 0);
      const cut = Math.floor(data.length / 3);
      expect(crc32(data.subarray(cut), crc32(data.subarray(0, cut)))).toBe(crc32(data));
    }
  });
});
