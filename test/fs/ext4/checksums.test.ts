/** The ext4 checksum functions against published check values of the CRC catalogue. */
import { describe, expect, test } from 'vitest';
import { crc16, ext4Crc32c, ext4Crc32cAt, ext4Crc32cU32 } from '../../../src/fs/ext4/checksums.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { nativeCrc } from '../../../src/diskimage/crc32.js';

const CHECK = new TextEncoder().encode('123456789');

describe('checksums', () => {
  test('crc32c: the kernel form is the standard CRC-32C (check 0xe3069283) without the final inversion', () => {
    expect(ext4Crc32c(0xffffffff, CHECK)).toBe(~0xe3069283 >>> 0);
  });
  test('crc32c chains: crc(seed, a + b) = crc(crc(seed, a), b)', () => {
    const a = CHECK.subarray(0, 4);
    const b = CHECK.subarray(4);
    expect(ext4Crc32c(ext4Crc32c(0x12345678, a), b)).toBe(ext4Crc32c(0x12345678, CHECK));
    const four = new Uint8Array([0x78, 0x56, 0x34, 0x12]);
    expect(ext4Crc32cU32(7, 0x12345678)).toBe(ext4Crc32c(7, four));
  });
  test('crc32c of a 32-bit value (table-driven in JS) equals the native crc32c of its 4 little-endian bytes', () => {
    const rnd = mulberry32(32);
    const cases: Array<[number, number]> = [[0, 0], [0xffffffff, 0xffffffff], [0x80000000, 1], [1, 0x80000000]];
    for (let i = 0; i < 2000; i++) cases.push([Math.floor(rnd() * 2 ** 32), Math.floor(rnd() * 2 ** 32)]);
    for (const [seed, value] of cases) {
      const le = new Uint8Array(4);
      new DataView(le.buffer).setUint32(0, value, true);
      expect(ext4Crc32cU32(seed, value)).toBe(ext4Crc32c(seed, le));
    }
  });
  test('crc32c of a range in place (slicing by 8 in JS) equals the native crc32c of that range, at any offset and length', () => {
    const native = nativeCrc()!.crc32c;
    const rnd = mulberry32(8);
    const bytes = new Uint8Array(1024).map(() => Math.floor(rnd() * 256));
    expect(ext4Crc32cAt(0xffffffff, CHECK, 0, CHECK.length)).toBe(~0xe3069283 >>> 0);
    // Aligned ranges are read by 32-bit words, others by bytes: views at offsets 0 to 3, every alignment of `at`.
    for (let i = 0; i < 800; i++) {
      const view = bytes.subarray(i % 4);
      const at = i < 64 ? i % 8 : Math.floor(rnd() * 500);
      const length = i < 40 ? i : i < 64 ? 256 : Math.floor(rnd() * 500);
      const seed = Math.floor(rnd() * 2 ** 32);
      expect(ext4Crc32cAt(seed, view, at, length)).toBe(~native(view.subarray(at, at + length), ~seed >>> 0) >>> 0);
    }
  });
  test('crc32c of large inputs is the same before and after the native function takes over (past the first MiB)', () => {
    const rnd = mulberry32(9);
    const block = new Uint8Array(4096).map(() => Math.floor(rnd() * 256));
    const first = ext4Crc32c(0x1234, block);
    expect(first).toBe(ext4Crc32cAt(0x1234, block, 0, block.length));
    for (let i = 0; i < 300; i++) ext4Crc32c(i, block);
    expect(ext4Crc32c(0x1234, block)).toBe(first);
  });
  test('crc16 with initial value 0xffff is CRC-16/MODBUS (check 0x4b37); from 0, CRC-16/ARC (0xbb3d)', () => {
    expect(crc16(0xffff, CHECK)).toBe(0x4b37);
    expect(crc16(0, CHECK)).toBe(0xbb3d);
  });
});
