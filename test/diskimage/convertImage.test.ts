import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { copyDevice } from '../../src/diskimage/convertImage.js';
import { Qcow2Writer } from '../../src/diskimage/qcow2/Qcow2Writer.js';
import { Qcow2Image } from '../../src/diskimage/qcow2/Qcow2Image.js';
import { ChainDevice } from '../../src/diskimage/ChainDevice.js';
import { collect } from '../../src/diskimage/extents.js';
import { MemoryDevice } from '../helpers/MemoryDevice.js';
import type { BlockDevice, ByteRange, Extent } from '../../src/diskimage/BlockDevice.js';
import type { ImageWriter, ImageWriterSummary } from '../../src/diskimage/ImageWriter.js';
import { useTempDir } from '../helpers/tmp.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { CorruptImageError } from '../../src/errors.js';

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

  it('with a base and baseMayEqual, chunks it rules out are written without reading the base; the rest are compared', async () => {
    // The base holds 0x22 everywhere, like the top: every unit equals the base.
    const base = new MemoryDevice(128 * K, [{ offset: 0, length: 128 * K, kind: 'data' }], 0x22);
    const top = new MemoryDevice(128 * K, [{ offset: 0, length: 128 * K, kind: 'data' }], 0x22);
    const baseReads: number[] = [];
    const countingBase: BlockDevice = { size: base.size, allocation: (r) => base.allocation(r), read: async (o, l) => (baseReads.push(o), base.read(o, l)) };
    const w = new DelayedMemoryWriter(top.size, 4096, true);
    const stats = await copyDevice(top, w, { base: countingBase, chunkBytes: 16 * K, ranges: async function* () { yield { offset: 0, length: 128 * K }; }, baseMayEqual: (o) => o < 64 * K });
    // First half compared (unchanged, not written), second half written as it is, its base never read.
    expect(stats).toMatchObject({ unchangedUnits: 16, unitsWritten: 16 });
    expect(baseReads.every((o) => o < 64 * K)).toBe(true);
    expect(baseReads.length).toBeGreaterThan(0);
    expect(Buffer.from(w.image.subarray(64 * K)).equals(Buffer.from(await top.read(64 * K, 64 * K)))).toBe(true);
  });

  it('reuses a bounded set of buffers, and never before the write that holds one has resolved', async () => {
    // 64 chunks of 64 KiB, each 4 KiB block labelled; the writer copies the data only
    // when its write resolves, a few milliseconds later, so a buffer refilled too early
    // would show up as wrong content.
    const src = new LabelledDevice(4 * 1024 * K);
    const w = new DelayedMemoryWriter(src.size, 4096);
    const stats = await copyDevice(src, w, { chunkBytes: 64 * K });
    expect(stats.unitsWritten).toBe(1024);
    expect(Buffer.from(w.image).equals(Buffer.from(await src.read(0, src.size)))).toBe(true);
    expect(w.buffers.size).toBeLessThanOrEqual(8);
  });

  it('when the source fails mid-copy, rejects with its error only after every write in flight has settled', async () => {
    const src = new FailingDevice(4 * 1024 * K, 2 * 1024 * K);
    const w = new DelayedMemoryWriter(src.size, 4096);
    await expectImgError(() => copyDevice(src, w, { chunkBytes: 64 * K }), 'CORRUPT_IMAGE', { offset: 2 * 1024 * K });
    expect(w.pending).toBe(0);
  });

  it('finds zero units of 512 bytes inside and across 64 KiB zero-scan blocks', async () => {
    const src = new MemoryDevice(
      512 * K,
      [
        { offset: 0, length: 512 * K, kind: 'data' }, // stored, but zero where not overwritten below
      ],
      0,
    );
    const withData = new OverlayBytes(src, [
      [64 * K + 1024, 1], // one byte inside a block
      [128 * K - 1, 2], // two bytes across a block boundary
      [512 * K - 1, 1], // the last byte
    ]);
    const w = new DelayedMemoryWriter(withData.size, 512);
    const stats = await copyDevice(withData, w);
    expect(stats.unitsWritten).toBe(4);
    expect(stats.zeroUnitsSkipped).toBe(1024 - 4);
    expect(Buffer.from(w.image).equals(Buffer.from(await withData.read(0, withData.size)))).toBe(true);
  });
});

/** Every 4 KiB block holds its own label byte, so a misplaced or stale chunk is visible. */
class LabelledDevice implements BlockDevice {
  constructor(readonly size: number) {}
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = ((((offset + i) >>> 12) * 31 + 7) % 255) + 1; // never 0
    return out;
  }
  async *allocation(): AsyncGenerator<Extent> {
    yield { offset: 0, length: this.size, kind: 'data' };
  }
}

/** A LabelledDevice whose reads fail from byte `failAt` on. */
class FailingDevice extends LabelledDevice {
  constructor(
    size: number,
    private readonly failAt: number,
  ) {
    super(size);
  }
  override async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.failAt) throw new CorruptImageError('CORRUPT_IMAGE', { file: 'src', offset: this.failAt, detail: 'test damage' });
    return super.read(offset, length);
  }
}

/** A device with a few bytes set to 0xff over another device. */
class OverlayBytes implements BlockDevice {
  constructor(
    private readonly under: BlockDevice,
    private readonly bytes: readonly (readonly [offset: number, length: number])[],
  ) {}
  get size(): number {
    return this.under.size;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = await this.under.read(offset, length);
    for (const [at, n] of this.bytes) {
      for (let p = Math.max(at, offset); p < Math.min(at + n, offset + length); p++) out[p - offset] = 0xff;
    }
    return out;
  }
  allocation(range?: ByteRange): AsyncIterable<Extent> {
    return this.under.allocation(range);
  }
}

/** An in-memory writer that takes a copy of each write's data only when the write resolves. */
class DelayedMemoryWriter implements ImageWriter {
  readonly image: Uint8Array;
  /** The distinct ArrayBuffers handed to write(). */
  readonly buffers = new Set<ArrayBufferLike>();
  private calls = 0;
  constructor(
    readonly size: number,
    readonly unitSize: number,
    readonly hasBacking = false,
  ) {
    this.image = new Uint8Array(size);
  }
  get clusterSize(): number {
    return this.unitSize;
  }
  /** Writes started and not yet resolved. */
  pending = 0;
  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    this.buffers.add(data.buffer);
    this.pending++;
    await new Promise((done) => setTimeout(done, 1 + (this.calls++ % 3)));
    this.image.set(data, guestOffset);
    this.pending--;
  }
  async writeZeros(offset: number, length: number): Promise<void> {
    this.image.fill(0, offset, offset + length);
  }
  async commit(): Promise<ImageWriterSummary> {
    return { path: '', fileSize: this.size, bytesWritten: 0, clustersWritten: 0 };
  }
  async abort(): Promise<void> {}
}
