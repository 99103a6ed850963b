/**
 * The contents of a copy-on-write layer: a sorted interval map of disjoint guest
 * byte ranges, each stored as zeros (no data), in memory, in the spill file, or as a
 * reference to the same bytes of another device (linked).
 * Later writes replace earlier ones byte for byte (last write wins).
 *
 * Memory: data in memory sits in chunks (one per write, shared by the pieces a
 * later overwrite splits it into). `memoryBytes` counts every live chunk and never
 * exceeds the budget: a write that would pass it goes to the spill file, and a
 * piece that keeps less than half of its chunk alive is copied out (or spilled) so
 * dead bytes cannot pin memory. The map itself costs O(pieces), outside the budget.
 *
 * Not safe for concurrent mutation: CowDevice serialises writes.
 */
import type { BlockDevice, ByteRange } from '../BlockDevice.js';
import { readInto } from '../readInto.js';
import { PieceList } from './PieceList.js';
import { SpillFile } from './SpillFile.js';

interface Chunk {
  readonly bytes: Uint8Array;
  /** Pieces that reference this chunk. */
  refs: number;
}

export type Piece =
  | { readonly start: number; readonly end: number; readonly kind: 'zero' }
  | { readonly start: number; readonly end: number; readonly kind: 'memory'; readonly chunk: Chunk; readonly chunkOffset: number }
  /** Spilled data for guest byte X sits at spill file byte X. */
  | { readonly start: number; readonly end: number; readonly kind: 'spilled' }
  /** Guest byte X reads as byte X of `source` (a device that does not change while the layer lives). */
  | { readonly start: number; readonly end: number; readonly kind: 'linked'; readonly source: BlockDevice };

export interface LayerStoreOptions {
  /** Bytes of written data kept in memory before spilling to a temp file. Default 64 MiB. */
  readonly memoryBudgetBytes?: number;
  /** Directory for the spill file. Default: the OS temp directory. */
  readonly tempDir?: string;
}

export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

export class LayerStore {
  /** Sorted, disjoint, no empty pieces. */
  private readonly pieces = new PieceList<Piece>();
  private readonly spill: SpillFile;
  readonly memoryBudgetBytes: number;
  /** Bytes held by live memory chunks. */
  private memBytes = 0;
  private spilledTotal = 0;

  constructor(options: LayerStoreOptions = {}) {
    this.memoryBudgetBytes = Math.max(0, options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET);
    this.spill = new SpillFile(options.tempDir);
  }

  /** Bytes of data currently held in memory (never above the budget). */
  get memoryBytes(): number {
    return this.memBytes;
  }

  /** Bytes ever written to the spill file (0 if nothing was spilled). */
  get spilledBytes(): number {
    return this.spilledTotal;
  }

  /** Number of pieces in the map. */
  get pieceCount(): number {
    return this.pieces.length;
  }

  /** The pieces overlapping `[start, end)`, unclipped, in order. */
  overlapping(start: number, end: number): Piece[] {
    return [...this.pieces.overlapping(start, end)];
  }

  /** The first piece ending after `offset` (for streaming while the map may change). */
  pieceAfter(offset: number): Piece | undefined {
    return this.pieces.firstEndingAfter(offset);
  }

  /** Copies the data of `p` clipped to `[start, start + into.length)` into `into` at `p.start - start`. */
  async readPiece(p: Piece, into: Uint8Array, start: number): Promise<void> {
    const s = Math.max(p.start, start);
    const e = Math.min(p.end, start + into.length);
    if (e <= s) return;
    const dst = into.subarray(s - start, e - start);
    if (p.kind === 'zero') dst.fill(0);
    else if (p.kind === 'memory') dst.set(p.chunk.bytes.subarray(p.chunkOffset + (s - p.start), p.chunkOffset + (e - p.start)));
    else if (p.kind === 'linked') await readInto(p.source, dst, s);
    else await this.spill.readInto(dst, s);
  }

  /**
   * Stores `data` at guest byte `offset`. Returns true if the layer kept `data` itself (in
   * memory, no copy: the caller must not touch it again), false if the caller may reuse
   * it (spilled, or a view of a larger buffer, which is kept as a copy). Throws IO (spill file).
   */
  async write(offset: number, data: Uint8Array): Promise<boolean> {
    if (data.length === 0) return false;
    const end = offset + data.length;
    if (this.memBytes + data.length <= this.memoryBudgetBytes) {
      // A view of a larger buffer would keep all of it alive: kept as a copy of its own, so the budget counts what is held.
      const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
      const chunk: Chunk = { bytes: whole ? data : new Uint8Array(data), refs: 0 };
      this.memBytes += data.length;
      await this.replace(this.memoryPiece(offset, end, chunk, 0));
      return whole;
    }
    await this.replace({ start: offset, end, kind: 'spilled' }, () => this.spill.write(offset, data));
    this.spilledTotal += data.length;
    return false;
  }

  /**
   * Records that `[offset, offset + length)` reads as the same bytes of `source`, storing
   * nothing: the bytes are read from `source` when the range is read or emitted.
   */
  async link(offset: number, length: number, source: BlockDevice): Promise<void> {
    if (length > 0) await this.replace({ start: offset, end: offset + length, kind: 'linked', source });
  }

  /** Stores nothing for `[offset, offset + length)` any more: it reads as the device below (see WritableDevice.discard). */
  async forget(offset: number, length: number): Promise<void> {
    if (length <= 0) return;
    const start = offset;
    const end = offset + length;
    const replaced = this.overlapping(start, end);
    if (replaced.length === 0) return;
    const survivors: Piece[] = [];
    await this.keepOutside(replaced, start, end, survivors);
    for (const r of replaced) this.release(r);
    this.pieces.remove(start, end);
    if (survivors.length > 0) this.pieces.insert(survivors);
  }

  /** Records that `[offset, offset + length)` reads as zeros. */
  async writeZeros(offset: number, length: number): Promise<void> {
    if (length > 0) await this.replace({ start: offset, end: offset + length, kind: 'zero' });
  }

  private memoryPiece(start: number, end: number, chunk: Chunk, chunkOffset: number): Piece {
    chunk.refs++;
    return { start, end, kind: 'memory', chunk, chunkOffset };
  }

  private release(p: Piece): void {
    if (p.kind === 'memory' && --p.chunk.refs === 0) this.memBytes -= p.chunk.bytes.length;
  }

  /** The part `[start, end)` of `p` as a piece of its own (a new reference for memory). */
  private async trim(p: Piece, start: number, end: number): Promise<Piece> {
    if (p.kind !== 'memory') return { ...p, start, end };
    const from = p.chunkOffset + (start - p.start);
    const length = end - start;
    if (length * 2 >= p.chunk.bytes.length) return this.memoryPiece(start, end, p.chunk, from);
    // A small survivor of a large chunk: copy it out so the rest can be freed.
    const bytes = p.chunk.bytes.subarray(from, from + length);
    if (this.memBytes + length <= this.memoryBudgetBytes) {
      const chunk: Chunk = { bytes: bytes.slice(), refs: 0 };
      this.memBytes += length;
      return this.memoryPiece(start, end, chunk, 0);
    }
    await this.spill.write(start, bytes);
    this.spilledTotal += length;
    return { start, end, kind: 'spilled' };
  }

  /**
   * Appends to `into` the parts of `replaced` (the pieces overlapping `[start, end)`, in
   * order) that lie outside that range: the first's head and the last's tail. Pushed one by
   * one, so a caller that meets a failure releases those already made.
   */
  private async keepOutside(replaced: readonly Piece[], start: number, end: number, into: Piece[]): Promise<void> {
    const first = replaced[0];
    const last = replaced[replaced.length - 1];
    if (first !== undefined && first.start < start) into.push(await this.trim(first, first.start, start));
    if (last !== undefined && last.end > end) into.push(await this.trim(last, end, last.end));
  }

  /**
   * Puts `piece` into the map, cutting whatever it overlaps, merging alike
   * neighbours. `store` writes the piece's data to the spill file; it runs after
   * the cut pieces' survivors are secured (they may be spilled too, outside the
   * piece), so if anything fails the map and every byte it points at are unchanged.
   */
  private async replace(piece: Piece, store?: () => Promise<void>): Promise<void> {
    const replaced = this.overlapping(piece.start, piece.end);
    const first = replaced[0];
    const last = replaced[replaced.length - 1];
    const cutsFirst = first !== undefined && first.start < piece.start;
    const cutsLast = last !== undefined && last.end > piece.end;
    const survivors: Piece[] = [];
    try {
      await this.keepOutside(replaced, piece.start, piece.end, survivors);
      await store?.();
    } catch (err) {
      for (const s of survivors) this.release(s);
      this.release(piece);
      throw err;
    }
    const out: Piece[] = [];
    if (cutsFirst) out.push(survivors.shift()!);
    out.push(piece);
    if (cutsLast) out.push(survivors.shift()!);
    for (const r of replaced) this.release(r);
    this.pieces.remove(piece.start, piece.end);
    // Merge with the neighbours where storage continues.
    const before = this.pieces.lastEndingAtOrBefore(out[0]!.start);
    if (before !== undefined && mergeable(before, out[0]!)) {
      this.pieces.remove(before.start, before.end);
      out[0] = merged(before, out[0]!);
    }
    const after = this.pieces.firstEndingAfter(out[out.length - 1]!.end);
    if (after !== undefined && mergeable(out[out.length - 1]!, after)) {
      this.pieces.remove(after.start, after.end);
      out[out.length - 1] = merged(out[out.length - 1]!, after);
    }
    for (let k = out.length - 1; k > 0; k--) {
      if (mergeable(out[k - 1]!, out[k]!)) out.splice(k - 1, 2, merged(out[k - 1]!, out[k]!));
    }
    this.pieces.insert(out);
  }

  /** What the layer stores within `range`, clipped, ascending, one entry per piece. */
  *ranges(range: ByteRange): Generator<{ readonly offset: number; readonly length: number; readonly kind: 'data' | 'zero' }> {
    const end = range.offset + range.length;
    // Looked up afresh at each step, so a write between steps cannot derail the walk.
    let pos = range.offset;
    for (let p = this.pieces.firstEndingAfter(pos); p !== undefined && p.start < end; p = this.pieces.firstEndingAfter(pos)) {
      const s = Math.max(p.start, pos);
      pos = Math.min(p.end, end);
      yield { offset: s, length: pos - s, kind: p.kind === 'zero' ? 'zero' : 'data' };
    }
  }

  /** Frees memory and the spill file. Never throws. */
  async close(): Promise<void> {
    for (const p of this.pieces) this.release(p);
    this.pieces.clear();
    await this.spill.close();
  }
}

function mergeable(a: Piece, b: Piece): boolean {
  if (a.end !== b.start || a.kind !== b.kind) return false;
  if (a.kind === 'memory' && b.kind === 'memory') return a.chunk === b.chunk && a.chunkOffset + (a.end - a.start) === b.chunkOffset;
  if (a.kind === 'linked' && b.kind === 'linked') return a.source === b.source;
  return true; // zeros, and spilled data (stored at its guest offset, so contiguous)
}

/** One piece for two mergeable neighbours; a shared chunk keeps one reference. */
function merged(a: Piece, b: Piece): Piece {
  if (a.kind === 'memory' && b.kind === 'memory') {
    b.chunk.refs--; // two references become one; the chunk stays alive through `a`
    return { ...a, end: b.end };
  }
  return { ...a, end: b.end };
}
