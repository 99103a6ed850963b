import { describe, expect, it } from 'vitest';
import { changedRanges, overlayDepth, rangesWithin, type DiffSide } from '../../src/blockdiff/changedRanges.js';
import { ChainDevice } from '../../src/diskimage/ChainDevice.js';
import type { BlockDevice } from '../../src/diskimage/BlockDevice.js';
import { MemoryDevice } from '../helpers/MemoryDevice.js';

const K = 1024;
const sideOf = (name: string, layers: Array<[string, BlockDevice]>): DiffSide => ({
  name,
  device: new ChainDevice(layers.map(([, d]) => d)),
  layers: layers.map(([id, device]) => ({ id, device })),
});

/** Oracle: read both devices whole and compare each 4 KiB block byte by byte. */
async function differingBlocks(a: BlockDevice, b: BlockDevice): Promise<number[]> {
  const [x, y] = await Promise.all([a.read(0, a.size), b.read(0, b.size)]);
  const out: number[] = [];
  for (let o = 0; o < x.length; o += 4 * K) if (Buffer.compare(x.subarray(o, o + 4 * K), y.subarray(o, o + 4 * K)) !== 0) out.push(o / (4 * K));
  return out;
}
const blocksOf = (ranges: ReadonlyArray<{ offset: number; length: number }>): number[] =>
  ranges.flatMap((r) => Array.from({ length: Math.ceil(r.length / (4 * K)) }, (_, i) => r.offset / (4 * K) + i));

describe('changedRanges', () => {
  const base = new MemoryDevice(1024 * K, [{ offset: 0, length: 64 * K, kind: 'data' }], 1);

  it('overlay: B stores data, and zeros only where the base stores data', async () => {
    const top = new MemoryDevice(1024 * K, [
      { offset: 0, length: 4 * K, kind: 'zero' },
      { offset: 128 * K, length: 8 * K, kind: 'data' },
      { offset: 256 * K, length: 64 * K, kind: 'zero' },
    ], 2);
    const a = sideOf('a', [['base', base]]);
    const b = sideOf('b', [['top', top], ['base', base]]);
    expect(overlayDepth(a, b)).toBe(1);
    const r = await changedRanges(a, b);
    expect(r.mode).toBe('overlay');
    // Only what the top layer may change is read: its data, and its zeros where the base stores data.
    expect(r.bytesCompared).toBe(12 * K);
    expect(r.ranges).toEqual([{ offset: 0, length: 4 * K }, { offset: 128 * K, length: 8 * K }]);
    expect(blocksOf(r.ranges)).toEqual(await differingBlocks(a.device, b.device));
  });

  it('overlay: clusters B stores with the bytes A already has are not changes', async () => {
    // The top layer rewrites 0..64K with the base's own fill (1), and 16 KiB elsewhere with 2;
    // one sector in the middle of the rewritten range differs (a 512-byte change in a cluster).
    const top = new MemoryDevice(1024 * K, [
      { offset: 0, length: 64 * K, kind: 'data' },
      { offset: 512 * K, length: 16 * K, kind: 'data' },
    ], 1);
    const changedSector = new MemoryDevice(1024 * K, [{ offset: 20 * K + 512, length: 512, kind: 'data' }], 9);
    const a = sideOf('a', [['base', base]]);
    const b = sideOf('b', [['sector', changedSector], ['top', top], ['base', base]]);
    const r = await changedRanges(a, b);
    expect(r.mode).toBe('overlay');
    expect(r.ranges).toEqual([{ offset: 20 * K + 512, length: 512 }, { offset: 512 * K, length: 16 * K }]);
    expect(r.changedBytes).toBe(16 * K + 512);
    expect(r.bytesCompared).toBe(80 * K);
    expect(blocksOf([{ offset: 20 * K, length: 4 * K }, { offset: 512 * K, length: 16 * K }])).toEqual(await differingBlocks(a.device, b.device));
  });

  it('not an overlay (other base file): hashes what either side stores, exactly', async () => {
    const other = new MemoryDevice(1024 * K, [{ offset: 0, length: 32 * K, kind: 'data' }, { offset: 40 * K, length: 8 * K, kind: 'data' }, { offset: 512 * K, length: 4 * K, kind: 'zero' }], 1);
    const a = sideOf('a', [['base', base]]);
    const b = sideOf('b', [['other', other]]);
    expect(overlayDepth(a, b)).toBeUndefined();
    const r = await changedRanges(a, b, { chunkBytes: 16 * K });
    expect(r.mode).toBe('hash');
    expect(blocksOf(r.ranges)).toEqual(await differingBlocks(a.device, b.device));
    expect(r.changedBytes).toBe(24 * K);
  });

  it('hash: a block whose hashes differ is narrowed to the sectors that differ', async () => {
    const one = new MemoryDevice(64 * K, [{ offset: 4 * K + 1024, length: 100, kind: 'data' }, { offset: 40 * K, length: 8 * K, kind: 'zero' }], 5);
    const zeros = sideOf('a', [['zeros', new MemoryDevice(64 * K, [{ offset: 0, length: 64 * K, kind: 'zero' }], 0)]]);
    const h = await changedRanges(zeros, sideOf('b', [['one', one]]));
    expect(h.mode).toBe('hash');
    expect(h.ranges).toEqual([{ offset: 4 * K + 1024, length: 512 }]);
  });

  it('past the smaller disk, the smaller reads as zeros: what the larger stores as non-zero data is changed, stored zeros are not', async () => {
    const small = new MemoryDevice(512 * K, [], 0);
    const large = new MemoryDevice(1024 * K, [{ offset: 0, length: 64 * K, kind: 'data' }, { offset: 600 * K, length: 8 * K, kind: 'data' }, { offset: 700 * K, length: 8 * K, kind: 'zero' }], 1);
    const r = await changedRanges(sideOf('a', [['s', small]]), sideOf('b', [['large', large]]));
    expect(r.ranges).toEqual([{ offset: 0, length: 64 * K }, { offset: 600 * K, length: 8 * K }]);
    // The same as an overlay that grew past its base, and with the sides swapped.
    const grown = new MemoryDevice(1024 * K, [{ offset: 600 * K, length: 8 * K, kind: 'data' }], 1);
    const o = await changedRanges(sideOf('a', [['s', small]]), sideOf('b', [['top', grown], ['s', small]]));
    expect([o.mode, o.ranges]).toEqual(['overlay', [{ offset: 600 * K, length: 8 * K }]]);
    const swapped = await changedRanges(sideOf('b', [['large', large]]), sideOf('a', [['s', small]]));
    expect(swapped.ranges).toEqual(r.ranges);
  });

  it('overlay: scattered differing sectors come back as exactly the runs a sector-by-sector comparison finds (seeded)', async () => {
    let seed = 20261126;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 20; round++) {
      // The top layer stores the base's own bytes over its first 64 KiB (and new bytes after);
      // a layer above it changes random sectors (runs, gaps, across 4 KiB compare spans).
      const top = new MemoryDevice(2048 * K, [{ offset: 0, length: 256 * K, kind: 'data' }, { offset: 1020 * K, length: 8 * K, kind: 'data' }], 1);
      const sectors = new Set<number>();
      for (let i = next(40); i >= 0; i--) {
        // Half of them where the top layer repeats the base (compared there sector by sector).
        const first = next(2) === 0 ? next(128) : next(2048 * 2);
        // Steps of one or two sectors: runs, and runs split by one equal sector.
        for (let j = next(12), at = first; j >= 0; j--, at += 1 + next(2)) sectors.add(Math.min(4095, at));
      }
      const stored = [...sectors].sort((x, y) => x - y).map((sct) => ({ offset: sct * 512, length: 512, kind: 'data' as const }));
      const a = sideOf('a', [['base', base]]);
      const b = sideOf('b', [['sectors', new MemoryDevice(2048 * K, stored, 9)], ['top', top], ['base', base]]);
      const r = await changedRanges(a, b, { chunkBytes: 64 * K });
      const [x, y] = await Promise.all([a.device.read(0, 2048 * K), b.device.read(0, 2048 * K)]);
      const want: Array<{ offset: number; length: number }> = [];
      for (let o = 0; o < x.length; o += 512) {
        if (Buffer.compare(x.subarray(o, o + 512), y.subarray(o, o + 512)) === 0) continue;
        const last = want[want.length - 1];
        if (last !== undefined && last.offset + last.length === o) last.length += 512;
        else want.push({ offset: o, length: 512 });
      }
      expect(r.ranges).toEqual(want);
    }
  });

  it('rangesWithin clips and shifts', () => {
    expect(rangesWithin([{ offset: 0, length: 10 }, { offset: 90, length: 30 }], 100, 50)).toEqual([{ offset: 0, length: 20 }]);
  });
});
