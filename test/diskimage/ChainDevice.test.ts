/** A chain answers each range from the top-most layer that stores it. */
import { describe, expect, test } from 'vitest';
import { ChainDevice } from '../../src/diskimage/ChainDevice.js';
import { SliceDevice } from '../../src/diskimage/SliceDevice.js';
import { collect } from '../../src/diskimage/extents.js';
import { MemoryDevice } from '../helpers/MemoryDevice.js';
import { expectImgError } from '../helpers/expectImgError.js';

const top = new MemoryDevice(100, [{ offset: 10, length: 10, kind: 'data' }, { offset: 40, length: 10, kind: 'zero' }], 0xaa);
const mid = new MemoryDevice(60, [{ offset: 0, length: 15, kind: 'data' }, { offset: 45, length: 15, kind: 'data' }], 0xbb);
const base = new MemoryDevice(80, [{ offset: 0, length: 80, kind: 'data' }], 0xcc);
const chain = new ChainDevice([top, mid, base]);

describe('ChainDevice', () => {
  test('reads each byte from the top-most layer that stores it; zero extents hide lower layers', async () => {
    const got = await chain.read(0, 100);
    const expected = new Uint8Array(100);
    expected.fill(0xbb, 0, 10); // mid
    expected.fill(0xaa, 10, 20); // top
    expected.fill(0xcc, 20, 40); // base
    // 40..50: top stores zeros
    expected.fill(0xbb, 50, 60); // mid
    // 60..100: past mid's end nothing below is visible
    expect(Array.from(got)).toEqual(Array.from(expected));
  });

  test('segments cover every byte once, with the answering depth', async () => {
    const segs = await collect(chain.segments());
    expect(segs.map((s) => [s.offset, s.length, s.depth, s.extent?.kind ?? null])).toEqual([
      [0, 10, 1, 'data'],
      [10, 10, 0, 'data'],
      [20, 20, 2, 'data'],
      [40, 10, 0, 'zero'],
      [50, 10, 1, 'data'],
      [60, 40, 0, null],
    ]);
  });

  test('allocation lists what any layer stores, clipped to a range', async () => {
    const ext = await collect(chain.allocation({ offset: 5, length: 50 }));
    expect(ext.map((e) => [e.offset, e.length, e.depth, e.kind])).toEqual([
      [5, 5, 1, 'data'],
      [10, 10, 0, 'data'],
      [20, 20, 2, 'data'],
      [40, 10, 0, 'zero'],
      [50, 5, 1, 'data'],
    ]);
  });

  test('a read that starts and ends inside extents returns only those bytes', async () => {
    expect(Array.from(await chain.read(8, 4))).toEqual([0xbb, 0xbb, 0xaa, 0xaa]);
  });
});

describe('SliceDevice', () => {
  test('shifts offsets and clips allocation to the slice', async () => {
    const s = new SliceDevice(chain, 15, 30);
    expect(Array.from(await s.read(0, 6))).toEqual([0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xcc]);
    expect((await collect(s.allocation())).map((e) => [e.offset, e.length, e.depth])).toEqual([
      [0, 5, 0],
      [5, 20, 2],
      [25, 5, 0],
    ]);
  });
  test('reads past the end of the slice see zeros, never the parent beyond it', async () => {
    const s = new SliceDevice(base, 70, 5);
    expect(Array.from(await s.read(3, 4))).toEqual([0xcc, 0xcc, 0, 0]);
  });
  test('a slice that does not fit in its parent is corrupt input', async () => {
    await expectImgError(() => new SliceDevice(base, 70, 20, { file: 'disk.img', structure: 'gpt.entry[1]' }), 'CORRUPT_IMAGE', { file: 'disk.img', offset: 70 });
  });
});
