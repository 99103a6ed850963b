/**
 * Batched reads of compressed grains (SparseExtent.readCompressedGrains through
 * VmdkImage.read): one read spanning many grains, incompressible (stored) and
 * compressible grains, unaligned spans, and errors reported for the first bad grain
 * in guest order. The oracle is qemu-img convert -O raw; grain offsets for the
 * corrupt cases are found by decoding the grain table here, independently of src/.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../../helpers/tmp.js';
import { seededBytes } from '../../../fixtures/prng.mjs';
import { qemuImg } from '../../helpers/qemu.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { VmdkImage } from '../../../src/diskimage/vmdk/VmdkImage.js';

const tmp = useTempDir('imgdedup-vmdkgt-');
const GRAIN = 64 * 1024;
let stream: string;
let expected: Buffer;

/** Host byte offset of grain `g`'s marker, from the header's gdOffset, GD[0] and the GT. */
function grainHostOffset(b: Buffer, g: number): number {
  const gd = Number(b.readBigUInt64LE(56)) * 512;
  const gt = b.readUInt32LE(gd) * 512;
  return b.readUInt32LE(gt + g * 4) * 512;
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const img = await VmdkImage.open(path);
  try {
    return Buffer.from(await img.read(offset, length));
  } finally {
    await img.close();
  }
}

beforeAll(() => {
  const d = tmp();
  const raw = join(d, 'src.raw');
  // 8 MiB: seeded noise (stored deflate blocks), a compressible text pattern, zeros, and a tail.
  const src = Buffer.alloc(8 << 20);
  seededBytes(3 << 20, 0x67a1).copy(src, 0);
  const text = Buffer.from('imgdedup compressed grain batch test line\n'.repeat(1 << 16));
  text.copy(src, 3 << 20, 0, 3 << 20);
  seededBytes(1 << 20, 0x67a2).copy(src, 7 << 20);
  writeFileSync(raw, src);
  stream = join(d, 'stream.vmdk');
  qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, stream);
  const out = join(d, 'out.raw');
  qemuImg('convert', '-O', 'raw', stream, out);
  expected = readFileSync(out);
  expect(expected.length).toBe(src.length);
});

describe('compressed grain batches', () => {
  it('one read over every grain returns what qemu-img convert returns', async () => {
    expect((await readRange(stream, 0, expected.length)).equals(expected)).toBe(true);
  });

  it('unaligned reads across grain boundaries, stored and compressible grains alike', async () => {
    const img = await VmdkImage.open(stream);
    try {
      for (let pos = 1000, step = 3 * GRAIN + 777; pos < expected.length; pos += step) {
        const len = Math.min(step, expected.length - pos);
        const got = Buffer.from(await img.read(pos, len));
        expect(got.equals(expected.subarray(pos, pos + len)), `at ${pos}`).toBe(true);
      }
      // A repeated partial read of one grain (the last-grain cache) reads the same.
      const a = Buffer.from(await img.read(5 * GRAIN + 10, 100));
      const b = Buffer.from(await img.read(5 * GRAIN + 10, 100));
      expect(a.equals(expected.subarray(5 * GRAIN + 10, 5 * GRAIN + 110))).toBe(true);
      expect(b.equals(a)).toBe(true);
    } finally {
      await img.close();
    }
  });

  // Grains 0-47 are noise (stored blocks, inflated inline); 48-111 compress (inflated on the thread pool).
  it.each([[2, 5], [50, 53]])('reports the first bad grain in guest order (grain %i), whatever fails later in the same read (grain %i)', async (first, second) => {
    const b = readFileSync(stream);
    const g2 = grainHostOffset(b, first);
    const g5 = grainHostOffset(b, second);
    const bad = Buffer.from(b);
    bad.fill(0xee, g2 + 12, g2 + 40); // grain 2's zlib stream no longer inflates
    bad.writeBigUInt64LE(12345n, g5); // grain 5's marker names another grain
    const path = join(tmp(), 'bad.vmdk');
    writeFileSync(path, bad);
    const base = (first - 2) * GRAIN;
    await expectImgError(() => readRange(path, base, 8 * GRAIN), 'CORRUPT_IMAGE', { structure: 'vmdk.grain', offset: g2 });
    await expectImgError(() => readRange(path, base + 3 * GRAIN, 4 * GRAIN), 'CORRUPT_IMAGE', { structure: 'vmdk.grain_marker.lba', offset: g5 });
    // Reads that avoid both grains are unaffected.
    expect((await readRange(path, base + 6 * GRAIN, 8 * GRAIN)).equals(expected.subarray(base + 6 * GRAIN, base + 14 * GRAIN))).toBe(true);
  });
});
