import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { copyDevice } from '../../src/diskimage/convertImage.js';
import { Qcow2Writer } from '../../src/diskimage/qcow2/Qcow2Writer.js';
import { Qcow2Image } from '../../src/diskimage/qcow2/Qcow2Image.js';
import { ChainDevice } from '../../src/diskimage/ChainDevice.js';
import { collect } from '../../src/diskimage/extents.js';
import { MemoryDevice } from '../helpers/MemoryDevice.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir();
const K = 1024;

describe('copyDevice', () => {
  it('copies stored ranges (unaligned to the unit), skips zero units, reads back equal', async () => {
    const src = new MemoryDevice(
      1024 * K,
      [
        { offset: 1000, length: 3000, kind: 'data' }, // straddles units 0 and 1 at 4 KiB
        { offset: 64 * K, length: 8 * K, kind: 'zero' },
        { offset: 100 * K, length: 20 * K + 17, kind: 'data' },
      ],
      0xab,
    );
    const path = join(tmp(), 'copy.qcow2');
    const w = await Qcow2Writer.create(path, { size: src.size, clusterSize: 4096 });
    const seen: number[] = [];
    const stats = await copyDevice(src, w, { chunkBytes: 8 * K, onProgress: (d) => seen.push(d) });
    await w.commit();
    // Units 0, 25..30 (100K..120K+17 rounds to 124K) hold data.
    expect(stats.unitsWritten).toBe(1 + 6);
    expect(stats.zeroUnitsSkipped).toBe(0);
    expect(seen[seen.length - 1]).toBe(stats.bytesExamined);
    const img = await Qcow2Image.open(path);
    try {
      expect(Buffer.from(await img.read(0, src.size)).equals(Buffer.from(await src.read(0, src.size)))).toBe(true);
    } finally {
      await img.close();
    }
  });

  it('with a base, writes only units that differ, and zeros where the source is zero over base data', async () => {
    const base = new MemoryDevice(256 * K, [{ offset: 0, length: 128 * K, kind: 'data' }], 0x11);
    const top = new MemoryDevice(256 * K, [{ offset: 16 * K, length: 4 * K, kind: 'data' }, { offset: 32 * K, length: 8 * K, kind: 'zero' }], 0x22);
    const src = new ChainDevice([top, base]);
    const path = join(tmp(), 'overlay.qcow2');
    const w = await Qcow2Writer.create(path, { size: src.size, clusterSize: 4096, backing: { name: 'base.img', format: 'raw' } });
    const stats = await copyDevice(src, w, { base });
    await w.commit();
    expect(stats).toMatchObject({ unitsWritten: 1, zeroUnitsWritten: 2, unchangedUnits: 32 - 3 });
    const img = await Qcow2Image.open(path);
    try {
      const stored = await collect(img.allocation());
      expect(stored.map((e) => [e.offset, e.length, e.kind])).toEqual([
        [16 * K, 4 * K, 'data'],
        [32 * K, 8 * K, 'zero'],
      ]);
      const data = await new ChainDevice([img, base]).read(0, src.size);
      expect(Buffer.from(data).equals(Buffer.from(await src.read(0, src.size)))).toBe(true);
    } finally {
      await img.close();
    }
  });
});
