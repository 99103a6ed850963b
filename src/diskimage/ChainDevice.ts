/**
 * A backing chain seen as one disk: each range is answered by the top-most layer
 * that stores it; a range stored nowhere reads as zeros. A layer hides everything
 * below it beyond its own virtual size (qcow2 semantics: a backing file shorter
 * than the overlay reads as zeros past its end).
 */
import type { BlockDevice, ByteRange, ClosableDevice, Extent } from './BlockDevice.js';
import { mergeExtents, normalizeRange } from './extents.js';
import { readInto } from './readInto.js';
import { runLimited } from './runLimited.js';
import { InternalError } from '../errors.js';

/** Segment reads one chain read keeps in flight. */
const SEGMENT_READS_IN_FLIGHT = 4;

/** A piece of the resolved chain: either stored by layer `depth`, or stored nowhere. */
export interface ChainSegment {
  readonly offset: number;
  readonly length: number;
  /** Index of the answering layer; for unstored ranges, the deepest layer that covers it. */
  readonly depth: number;
  /** The layer's extent, or undefined where no layer stores the range. */
  readonly extent: Extent | undefined;
}

export class ChainDevice implements ClosableDevice {
  /** `layers[0]` is the top (the overlay), the last is the base. */
  constructor(readonly layers: readonly BlockDevice[]) {
    if (layers.length === 0) throw new InternalError('ChainDevice needs at least one layer');
  }

  get size(): number {
    return this.layers[0]!.size;
  }

  /** Every byte of `range` exactly once, in order, with the layer that answers it. */
  async *segments(range?: ByteRange): AsyncGenerator<ChainSegment> {
    const r = normalizeRange(this.size, range);
    if (r.length > 0) yield* this.resolve(0, r.offset, r.offset + r.length);
  }

  private async *resolve(depth: number, start: number, end: number): AsyncGenerator<ChainSegment> {
    const layer = this.layers[depth]!;
    const limit = Math.min(end, layer.size);
    let pos = start;
    if (start < limit) {
      for await (const e of layer.allocation({ offset: start, length: limit - start })) {
        if (e.offset > pos) yield* this.below(depth, pos, e.offset);
        yield { offset: e.offset, length: e.length, depth, extent: { ...e, depth } };
        pos = e.offset + e.length;
      }
      if (pos < limit) yield* this.below(depth, pos, limit);
      pos = Math.max(pos, limit);
    }
    // Past this layer's end, nothing below is visible.
    if (pos < end) yield { offset: pos, length: end - pos, depth: Math.max(0, depth - 1), extent: undefined };
  }

  private async *below(depth: number, start: number, end: number): AsyncGenerator<ChainSegment> {
    if (depth + 1 < this.layers.length) yield* this.resolve(depth + 1, start, end);
    else yield { offset: start, length: end - start, depth, extent: undefined };
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (this.layers.length === 1) return this.layers[0]!.read(offset, length);
    const out = new Uint8Array(length);
    await this.readInto(out, offset);
    return out;
  }

  /** Fills `target` from guest `offset`, each segment read by its layer straight into place. */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (this.layers.length === 1) return readInto(this.layers[0]!, target, offset);
    const reads: (() => Promise<void>)[] = [];
    let settled = 0; // target bytes before this are zeroed or have a read planned
    for await (const s of this.segments({ offset, length: target.length })) {
      if (s.extent === undefined || s.extent.kind === 'zero') continue;
      const at = s.offset - offset;
      target.fill(0, settled, at);
      settled = at + s.length;
      const dest = target.subarray(at, settled);
      const layer = this.layers[s.depth]!;
      reads.push(() => readInto(layer, dest, s.offset));
    }
    target.fill(0, settled);
    await runLimited(reads, SEGMENT_READS_IN_FLIGHT);
  }

  /** What any layer stores, top-most first, tagged with `depth`. */
  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const self = this;
    yield* mergeExtents(
      (async function* () {
        for await (const s of self.segments(range)) if (s.extent !== undefined) yield s.extent;
      })(),
    );
  }

  async close(): Promise<void> {
    for (const layer of this.layers) {
      const c = (layer as Partial<ClosableDevice>).close;
      if (typeof c === 'function') await c.call(layer);
    }
  }
}
