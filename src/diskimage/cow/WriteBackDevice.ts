/**
 * A write-back cache of small writes in front of a WritableDevice: writes shorter than two
 * units are gathered into whole units held in memory (read-modify-write on the unit's
 * first touch) and reach the device at `flush`, each unit once and adjacent units in one
 * write. The ext4 writer rewrites the same inode-table and directory blocks for every file
 * it adds (an inode here, an entry there): thousands of small writes that the layer below
 * would copy and index one by one, for a few hundred blocks that end up changed.
 *
 * Reads see the cached bytes; larger writes go straight through (and update or drop the
 * cached units they overlap), so the device's content after `flush` is what the writes
 * made it in order. `allocation` flushes first (the cache is not in the device's map).
 * Memory: at most `maxBytes` of units, then everything is flushed.
 *
 * Like the device below, writes take effect in the order they complete: a caller awaits a
 * write before it reads what the write wrote or writes the same bytes again (the ext4
 * writer does both, one operation at a time).
 */
import type { ByteRange, Extent, WritableDevice } from '../BlockDevice.js';
import { InternalError } from '../../errors.js';
import { readInto } from '../readInto.js';

/** Units written to the lower device at most per call when flushing. */
const FLUSH_UNITS = 256;

export interface WriteBackOptions {
  /** Bytes per cached unit (a filesystem block); a power of two. */
  readonly unit: number;
  /** Bytes of units held before all are flushed. Default 8 MiB. */
  readonly maxBytes?: number;
}

export class WriteBackDevice implements WritableDevice {
  readonly size: number;
  private readonly unit: number;
  private readonly maxUnits: number;
  /** Unit index -> the unit's bytes as the writes made them (the tail unit may be short). */
  private readonly units = new Map<number, Uint8Array>();

  constructor(
    private readonly lower: WritableDevice,
    options: WriteBackOptions,
  ) {
    if (!Number.isInteger(Math.log2(options.unit))) throw new InternalError('WriteBackDevice: the unit must be a power of two', { actual: options.unit });
    this.size = lower.size;
    this.unit = options.unit;
    this.maxUnits = Math.max(1, Math.floor((options.maxBytes ?? 8 << 20) / options.unit));
  }

  /** Bytes held (not yet written to the device). */
  get heldBytes(): number {
    return this.units.size * this.unit;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(out, offset);
    return out;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    await readInto(this.lower, target, offset);
    if (this.units.size > 0) this.overlay(target, offset);
  }

  /** Copies the cached units' bytes over `target` (device bytes from `offset`). */
  private overlay(target: Uint8Array, offset: number): void {
    const end = offset + target.length;
    const first = Math.floor(offset / this.unit);
    const last = Math.floor((end - 1) / this.unit);
    for (let u = first; u <= last; u++) {
      const bytes = this.units.get(u);
      if (bytes === undefined) continue;
      const start = u * this.unit;
      const from = Math.max(offset, start);
      const to = Math.min(end, start + bytes.length);
      if (to > from) target.set(bytes.subarray(from - start, to - start), from - offset);
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    const end = offset + data.length;
    const first = Math.floor(offset / this.unit);
    const last = Math.floor((end - 1) / this.unit);
    if (last - first + 1 > 2 || data.length > 2 * this.unit) {
      // Large (file content): straight through; cached units it overlaps take its bytes or go.
      for (let u = first; u <= last && this.units.size > 0; u++) {
        const bytes = this.units.get(u);
        if (bytes === undefined) continue;
        const start = u * this.unit;
        if (offset <= start && end >= start + bytes.length) this.units.delete(u);
        else this.patch(bytes, start, offset, data);
      }
      await this.lower.write(offset, data);
      return;
    }
    for (let u = first; u <= last; u++) {
      const start = u * this.unit;
      let bytes = this.units.get(u);
      if (bytes === undefined) {
        const fresh = new Uint8Array(Math.min(this.unit, this.size - start));
        // A unit the write covers whole needs no read.
        if (offset > start || end < start + fresh.length) await readInto(this.lower, fresh, start);
        // Only whole, current units are ever in the map (a read meanwhile sees the device's bytes).
        bytes = this.units.get(u) ?? fresh;
        this.units.set(u, bytes);
      }
      this.patch(bytes, start, offset, data);
    }
    if (this.units.size > this.maxUnits) await this.flush();
  }

  /** Forgets what is held for the range (a unit it covers part of takes the device's bytes there) and passes the discard on. */
  async discard(offset: number, length: number): Promise<void> {
    if (length <= 0) return;
    const end = offset + length;
    const partial: number[] = [];
    for (let u = Math.floor(offset / this.unit); u <= Math.floor((end - 1) / this.unit) && this.units.size > 0; u++) {
      const bytes = this.units.get(u);
      if (bytes === undefined) continue;
      const start = u * this.unit;
      if (offset <= start && end >= start + bytes.length) this.units.delete(u);
      else partial.push(u);
    }
    await this.lower.discard?.(offset, length);
    // The part of a held unit in the range reads as the device now reads it.
    for (const u of partial) {
      const bytes = this.units.get(u);
      if (bytes === undefined) continue;
      const start = u * this.unit;
      const from = Math.max(offset, start);
      const to = Math.min(end, start + bytes.length);
      await readInto(this.lower, bytes.subarray(from - start, to - start), from);
    }
  }

  /** Copies the part of `data` (device bytes from `offset`) that falls in the unit at `start`. */
  private patch(bytes: Uint8Array, start: number, offset: number, data: Uint8Array): void {
    const from = Math.max(offset, start);
    const to = Math.min(offset + data.length, start + bytes.length);
    if (to > from) bytes.set(data.subarray(from - offset, to - offset), from - start);
  }

  /** Writes every cached unit to the device (adjacent ones together) and forgets them. Throws what the device throws. */
  async flush(): Promise<void> {
    if (this.units.size === 0) return;
    const order = [...this.units.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < order.length) {
      let j = i + 1;
      // Runs of at most FLUSH_UNITS: a lower device that copies writes (CowDevice keeps a few
      // of its copy buffers for reuse) then holds small buffers, not one the size of the cache.
      while (j < order.length && j - i < FLUSH_UNITS && order[j] === order[j - 1]! + 1) j++;
      const run: Uint8Array[] = [];
      for (const u of order.slice(i, j)) {
        const b = this.units.get(u);
        if (b === undefined) break;
        run.push(b);
        this.units.delete(u);
      }
      // Issued before the next await: a read or write of these units from here on finds them in the device.
      if (run.length > 0) await this.lower.write(order[i]! * this.unit, run.length === 1 ? run[0]! : Buffer.concat(run));
      i += Math.max(1, run.length);
    }
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    await this.flush();
    yield* this.lower.allocation(range);
  }
}
