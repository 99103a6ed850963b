/** A BlockDevice over bytes in memory, for tests that corrupt a generated image in place. */
import type { BlockDevice, ByteRange, Extent } from '../../../src/diskimage/BlockDevice.js';

export class MemoryDevice implements BlockDevice {
  constructor(readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (offset < this.size) out.set(this.bytes.subarray(offset, Math.min(this.size, offset + length)));
    return out;
  }
  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = range ?? { offset: 0, length: this.size };
    if (r.length > 0) yield { offset: r.offset, length: r.length, kind: 'data' };
  }
}
