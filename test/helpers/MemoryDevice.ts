/**
 * An in-memory BlockDevice for unit tests: stores given ranges, each filled with a
 * recognisable byte, so a test can tell which layer answered.
 */
import type { BlockDevice, ByteRange, Extent } from '../../src/diskimage/BlockDevice.js';
import { clipExtent, normalizeRange } from '../../src/diskimage/extents.js';

export class MemoryDevice implements BlockDevice {
  constructor(
    readonly size: number,
    /** Stored ranges, ascending and disjoint; 'data' ranges read as `fill`. */
    readonly stored: readonly { offset: number; length: number; kind: 'data' | 'zero' }[],
    readonly fill: number,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    for (const s of this.stored) {
      const c = clipExtent(s, { offset, length });
      if (c && c.kind === 'data') out.fill(this.fill, c.offset - offset, c.offset - offset + c.length);
    }
    return out;
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = normalizeRange(this.size, range);
    for (const s of this.stored) {
      const c = clipExtent(s, r);
      if (c) yield c;
    }
  }
}
