/**
 * Test doubles for copy-on-write tests: a BlockDevice over a byte array that
 * counts what is asked of it, and an ImageWriter that records into a byte array
 * and checks the ImageWriter alignment contract.
 */
import type { BlockDevice, ByteRange, Extent } from '../../src/diskimage/BlockDevice.js';
import type { ImageWriter, ImageWriterSummary } from '../../src/diskimage/ImageWriter.js';
import { clipExtent, normalizeRange } from '../../src/diskimage/extents.js';

export class BytesDevice implements BlockDevice {
  bytesRead = 0;
  readCalls = 0;
  allocationCalls = 0;

  constructor(
    readonly bytes: Uint8Array,
    /** Ascending, disjoint ranges reported as stored data (content outside them must be zero). */
    readonly stored: readonly ByteRange[] = [{ offset: 0, length: bytes.length }],
  ) {}

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.readCalls++;
    this.bytesRead += length;
    const out = new Uint8Array(length);
    out.set(this.bytes.subarray(Math.min(offset, this.size), Math.min(offset + length, this.size)));
    return out;
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    this.allocationCalls++;
    const r = normalizeRange(this.size, range);
    for (const s of this.stored) {
      const c = clipExtent({ ...s, kind: 'data' }, r);
      if (c) yield c;
    }
  }
}

/** Records writes over an initial content (the backing's, when `hasBacking`). */
export class MemoryImageWriter implements ImageWriter {
  readonly content: Uint8Array;
  /** Units that received a write or writeZeros. */
  readonly touchedUnits = new Set<number>();
  readonly clusterSize: number;

  constructor(
    readonly size: number,
    readonly unitSize: number,
    readonly hasBacking: boolean,
    backing?: Uint8Array,
  ) {
    this.clusterSize = unitSize;
    this.content = new Uint8Array(size);
    if (backing) this.content.set(backing);
  }

  private check(offset: number, length: number): void {
    const end = offset + length;
    if (offset % this.unitSize !== 0 || length <= 0 || end > this.size || (length % this.unitSize !== 0 && end !== this.size)) {
      throw new Error(`misaligned writer call at ${offset}+${length} (unit ${this.unitSize})`);
    }
    for (let u = offset / this.unitSize; u * this.unitSize < end; u++) this.touchedUnits.add(u);
  }

  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    this.check(guestOffset, data.length);
    this.content.set(data, guestOffset);
  }

  async writeZeros(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.content.fill(0, offset, offset + length);
  }

  async commit(): Promise<ImageWriterSummary> {
    return { path: '', fileSize: 0, bytesWritten: 0, clustersWritten: this.touchedUnits.size };
  }

  async abort(): Promise<void> {}
}
