/**
 * A copy-on-write device over any BlockDevice (an image, a chain, a partition
 * slice): reads fall through to the lower device except where the layer holds
 * writes; writes of any size and alignment land in the layer, never below. The
 * layer can list its dirty ranges and be emitted into any ImageWriter: as an
 * overlay (only the dirty units, partial units completed from the lower device) or
 * as a complete image (the lower device's allocation plus the layer). Both cost
 * what the layer holds plus, for a complete image, what the lower device stores;
 * never the virtual size.
 *
 * Memory is bounded by `memoryBudgetBytes` (LayerStore); past it, data spills to an
 * unlinked temp file. Whoever creates a CowDevice closes it; closing it does not
 * close the lower device.
 */
import type { BlockDevice, ByteRange, ClosableDevice, Extent, WritableDevice } from '../BlockDevice.js';
import type { ImageWriter } from '../ImageWriter.js';
import { copyDevice, type CopyDeviceStats } from '../convertImage.js';
import { readInto } from '../readInto.js';
import { clipExtent, mergeExtents, normalizeRange } from '../extents.js';
import { ImgdedupError, InternalError, IoError } from '../../errors.js';
import { LayerStore, type LayerStoreOptions } from './LayerStore.js';
import { ReadWriteQueue } from './ReadWriteQueue.js';

export type CowDeviceOptions = LayerStoreOptions;

export interface CowEmitOptions {
  /**
   * Overlay output only: skip units whose content equals the lower device's (a
   * write that changed nothing). Costs a read of the lower device per dirty unit.
   */
  readonly skipUnchanged?: boolean;
  /** Bytes per read while emitting (rounded down to the writer's unit). Default 4 MiB. */
  readonly chunkBytes?: number;
  /** With skipUnchanged: where the layer may equal the lower device (see copyDevice's baseMayEqual); elsewhere the lower device is not read. */
  readonly baseMayEqual?: (offset: number, length: number) => boolean;
}

export interface CowEmitStats extends CopyDeviceStats {
  /** 'overlay' when the writer has a backing file (it must read as the lower device), else 'complete'. */
  readonly mode: 'overlay' | 'complete';
}

/** Spilled copies kept for reuse, and the smallest kept (small writes cost little to allocate). */
const SPARES = 4;
const SPARE_MIN_BYTES = 64 << 10;

// The public methods are async but queue their work before their first await, so
// operations take effect in the order they were called.
export class CowDevice implements ClosableDevice, WritableDevice {
  readonly size: number;
  private readonly layer: LayerStore;
  private readonly queue = new ReadWriteQueue();
  private closed = false;
  /** Copies the layer spilled, reused by later writes of the same length (spareCopy). */
  private readonly spares: Uint8Array[] = [];
  /** The error of a write that failed: the spill file may then hold half of it, so the device refuses further use. */
  private failure: ImgdedupError | undefined;

  constructor(
    readonly lower: BlockDevice,
    options: CowDeviceOptions = {},
  ) {
    this.size = lower.size;
    this.layer = new LayerStore(options);
  }

  /** Bytes of written data held in memory (at most the budget). */
  get memoryBytes(): number {
    return this.layer.memoryBytes;
  }

  /** Bytes written to the spill file so far. */
  get spilledBytes(): number {
    return this.layer.spilledBytes;
  }

  private checkOpen(op: string): void {
    if (this.closed) throw new InternalError(`CowDevice.${op} after close`);
    if (this.failure !== undefined) {
      throw new IoError({ ...this.failure.data, detail: `copy-on-write layer unusable after a failed write (${this.failure.message})` });
    }
  }

  /** Runs a layer mutation; if it fails, the device is unusable from then on. */
  private mutate(fn: () => Promise<void>): Promise<void> {
    return this.queue.write(async () => {
      try {
        await fn();
      } catch (err) {
        this.failure = err instanceof ImgdedupError ? err : new InternalError(String(err));
        throw err;
      }
    });
  }

  private checkRange(op: string, offset: number, length: number): void {
    this.checkOpen(op);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new InternalError(`CowDevice.${op}: range must lie within the device`, { guestOffset: offset, length, size: this.size });
    }
  }

  /**
   * Reads guest bytes: the layer where it holds writes, the lower device elsewhere
   * (bytes past the end read as zeros). Throws what the lower device throws, IO.
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkOpen('read');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new InternalError('CowDevice.read: offset and length must be non-negative integers', { guestOffset: offset, length });
    }
    return this.queue.read(() => this.readNow(offset, length));
  }

  private async readNow(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.fillNow(out, offset);
    return out;
  }

  /**
   * Fills `target` from guest `offset` like read, into the caller's buffer (a copy of a
   * whole disk then allocates nothing per chunk). Throws as read.
   */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('read');
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InternalError('CowDevice.readInto: offset must be a non-negative integer', { guestOffset: offset, length: target.length });
    return this.queue.read(() => this.fillNow(target, offset));
  }

  private async fillNow(target: Uint8Array, offset: number): Promise<void> {
    const end = offset + target.length;
    const work: Promise<void>[] = [];
    let pos = offset;
    const gap = (to: number) => {
      if (to > pos) work.push(this.lowerInto(target.subarray(pos - offset, to - offset), pos));
    };
    for (const p of this.layer.overlapping(offset, end)) {
      gap(Math.max(offset, p.start));
      work.push(this.layer.readPiece(p, target, offset));
      pos = Math.min(end, p.end);
    }
    gap(end);
    await Promise.all(work);
  }

  /** The lower device's bytes at `offset` into `dst`; past its end, zeros. */
  private async lowerInto(dst: Uint8Array, offset: number): Promise<void> {
    const avail = Math.max(0, Math.min(dst.length, this.size - offset));
    if (avail > 0) await readInto(this.lower, dst.subarray(0, avail), offset);
    dst.fill(0, avail);
  }

  /** Writes `data` at guest byte `offset` (any alignment). Throws INTERNAL out of range, IO (spill file). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange('write', offset, data.length);
    // Copied now (the queue may run the write later), so the caller may reuse its buffer.
    const copy = this.spareCopy(data);
    return this.mutate(async () => {
      if (!(await this.layer.write(offset, copy))) this.keepSpare(copy);
    });
  }

  /**
   * A copy of `data`. Once the layer is past its memory budget every write is copied and
   * spilled, and a fresh copy per write would pile up as garbage faster than it is
   * collected; so a large copy goes into a buffer of the next power of two in size, which
   * the layer gives back when it spills it (or keeps a copy of its own), for later writes
   * of about the same size.
   */
  private spareCopy(data: Uint8Array): Uint8Array {
    // new Uint8Array(view) copies (a Buffer's slice would not).
    if (data.length < SPARE_MIN_BYTES) return new Uint8Array(data);
    const size = 2 ** Math.ceil(Math.log2(data.length));
    const i = this.spares.findIndex((b) => b.length === size);
    const buf = i < 0 ? new Uint8Array(size) : this.spares.splice(i, 1)[0]!;
    const copy = buf.subarray(0, data.length);
    copy.set(data);
    return copy;
  }

  /** Keeps the buffer of a copy the layer spilled, for a later write (large ones only, a few). */
  private keepSpare(copy: Uint8Array): void {
    if (copy.length < SPARE_MIN_BYTES) return;
    if (this.spares.length >= SPARES) this.spares.shift();
    this.spares.push(new Uint8Array(copy.buffer));
  }

  /**
   * Makes `[offset, offset + length)` read as the same bytes of `source` (a device of this
   * one's coordinates, e.g. another chain over the same base), storing no data: they are
   * read from `source` when read or emitted, so `source` must stay open and unchanged
   * while this device lives. A rebase puts a client's own data into its merged layer so,
   * instead of copying it through memory or the spill file. Throws INTERNAL out of range.
   */
  async link(offset: number, length: number, source: BlockDevice): Promise<void> {
    this.checkRange('link', offset, length);
    if (offset + length > source.size) throw new InternalError('CowDevice.link: range must lie within the source', { guestOffset: offset, length, size: source.size });
    return this.mutate(() => this.layer.link(offset, length, source));
  }

  /** Stores nothing more for `[offset, offset + length)`: it reads as the lower device again (see WritableDevice.discard). */
  async discard(offset: number, length: number): Promise<void> {
    this.checkRange('discard', offset, length);
    return this.mutate(() => this.layer.forget(offset, length));
  }

  /** Makes `[offset, offset + length)` read as zeros, storing no data. Throws INTERNAL out of range. */
  async writeZeros(offset: number, length: number): Promise<void> {
    this.checkRange('writeZeros', offset, length);
    return this.mutate(() => this.layer.writeZeros(offset, length));
  }

  /**
   * The guest byte ranges written since creation (data or zeros), ascending and
   * coalesced where they touch, within `range`. Streams: O(1) memory, and it may
   * be consumed while writes continue (it then sees some of them).
   */
  async *dirtyRanges(range?: ByteRange): AsyncGenerator<ByteRange> {
    this.checkOpen('dirtyRanges');
    const r = normalizeRange(this.size, range);
    const end = r.offset + r.length;
    let pos = r.offset;
    let cur: { start: number; end: number } | undefined;
    for (;;) {
      const p = this.layer.pieceAfter(pos);
      if (p === undefined || p.start >= end) break;
      const s = Math.max(p.start, pos);
      const e = Math.min(p.end, end);
      if (cur !== undefined && s <= cur.end) cur.end = e;
      else {
        if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
        cur = { start: s, end: e };
      }
      pos = e;
    }
    if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
  }

  /** What the layer alone stores: 'data' for written bytes, 'zero' for writeZeros ranges. */
  async *layerAllocation(range?: ByteRange): AsyncGenerator<Extent> {
    this.checkOpen('layerAllocation');
    const r = normalizeRange(this.size, range);
    yield* mergeExtents(
      (async function* (layer: LayerStore) {
        for (const x of layer.ranges(r)) yield x;
      })(this.layer),
    );
  }

  /**
   * What the whole stack stores (this is what makes the device readable like a
   * ChainDevice): the layer's extents with depth 0, and in between the lower
   * device's extents with their depth plus one.
   */
  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    this.checkOpen('allocation');
    const r = normalizeRange(this.size, range);
    const self = this;
    yield* mergeExtents(
      (async function* () {
        let pos = r.offset;
        const end = r.offset + r.length;
        const lowerBetween = async function* (from: number, to: number): AsyncGenerator<Extent> {
          if (to <= from) return;
          for await (const e of self.lower.allocation({ offset: from, length: to - from })) {
            const c = clipExtent(e, { offset: from, length: to - from });
            if (c !== undefined) yield { ...c, depth: (c.depth ?? 0) + 1 };
          }
        };
        for (const x of self.layer.ranges(r)) {
          yield* lowerBetween(pos, x.offset);
          yield { offset: x.offset, length: x.length, kind: x.kind, depth: 0 };
          pos = x.offset + x.length;
        }
        yield* lowerBetween(pos, end);
      })(),
    );
  }

  /**
   * Emits the layer into `writer` (which must have this device's size):
   * - writer with a backing file (`hasBacking`), whose backing must read as the
   *   lower device: an overlay holding only the units the layer touched; a unit
   *   written in part is completed from the lower device; all-zero units become
   *   zero units (they must hide the backing).
   * - writer without backing: a complete image (the lower device's stored ranges
   *   plus the layer, zero units skipped).
   * The caller commits or aborts the writer. No writes may run meanwhile.
   * Throws INTERNAL on a size mismatch, and what the lower device and writer throw.
   */
  async emitTo(writer: ImageWriter, options: CowEmitOptions = {}): Promise<CowEmitStats> {
    this.checkOpen('emitTo');
    if (writer.size !== this.size) throw new InternalError('CowDevice.emitTo: writer and device sizes differ', { expected: this.size, actual: writer.size });
    if (!writer.hasBacking) {
      const stats = await copyDevice(this, writer, options.chunkBytes !== undefined ? { chunkBytes: options.chunkBytes } : {});
      return { ...stats, mode: 'complete' };
    }
    // Only the units the layer touched, each read through the layer (completed from the
    // lower device); copyDevice writes all-zero units as zeros over a backing file.
    const stats = await copyDevice(this, writer, {
      ranges: () => this.dirtyRanges(),
      ...(options.skipUnchanged ? { base: this.lower, ...(options.baseMayEqual ? { baseMayEqual: options.baseMayEqual } : {}) } : {}),
      ...(options.chunkBytes !== undefined ? { chunkBytes: options.chunkBytes } : {}),
    });
    return { ...stats, mode: 'overlay' };
  }

  /** Frees the layer (memory and spill file); the lower device stays open. Idempotent, never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let issued operations finish before the store goes away.
    await this.queue.write(async () => undefined).catch(() => undefined);
    await this.layer.close();
  }
}
