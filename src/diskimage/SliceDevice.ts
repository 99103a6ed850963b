/** A window onto another device (a partition): bounds-checked, offsets shifted. */
import type { BlockDevice, ByteRange, Extent, WritableDevice } from './BlockDevice.js';
import { clipExtent, normalizeRange } from './extents.js';
import { readInto } from './readInto.js';
import { CorruptImageError, InternalError } from '../errors.js';

export class SliceDevice implements BlockDevice {
  /**
   * @param start byte offset of the slice within `parent`
   * @param size  length of the slice in bytes
   * Throws CORRUPT_IMAGE if the slice does not lie within the parent.
   */
  constructor(
    readonly parent: BlockDevice,
    readonly start: number,
    readonly size: number,
    context: { file?: string; structure?: string } = {},
  ) {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(size) || start < 0 || size < 0 || start + size > parent.size) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        ...context,
        offset: start,
        detail: `slice of ${size} bytes at byte ${start} exceeds the device (${parent.size} bytes)`,
      });
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      // Reads past the end of a partition see zeros, like past the end of a disk.
      const out = new Uint8Array(Math.max(0, length));
      await this.readInto(out, offset);
      return out;
    }
    return this.parent.read(this.start + offset, length);
  }

  /** Fills `target` from `offset` within the slice; bytes outside it read as zeros. */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const avail = offset >= 0 ? Math.max(0, Math.min(target.length, this.size - offset)) : 0;
    if (avail > 0) await readInto(this.parent, target.subarray(0, avail), this.start + offset);
    target.fill(0, avail);
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = normalizeRange(this.size, range);
    if (r.length === 0) return;
    for await (const e of this.parent.allocation({ offset: this.start + r.offset, length: r.length })) {
      const c = clipExtent(e, { offset: this.start + r.offset, length: r.length });
      if (c !== undefined) yield { ...c, offset: c.offset - this.start };
    }
  }
}

/** A SliceDevice of a WritableDevice that passes writes through (the writer's partition). */
export class WritableSliceDevice extends SliceDevice implements WritableDevice {
  constructor(
    override readonly parent: WritableDevice,
    start: number,
    size: number,
    context: { file?: string; structure?: string } = {},
  ) {
    super(parent, start, size, context);
  }

  /** Writes within the slice. Throws INTERNAL for a write that leaves it (a caller's bug). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset < 0 || offset + data.length > this.size) throw new InternalError(`write of ${data.length} bytes at ${offset} leaves the slice of ${this.size} bytes`);
    await this.parent.write(this.start + offset, data);
  }

  async discard(offset: number, length: number): Promise<void> {
    if (offset < 0 || offset + length > this.size) throw new InternalError(`discard of ${length} bytes at ${offset} leaves the slice of ${this.size} bytes`);
    await this.parent.discard?.(this.start + offset, length);
  }
}
