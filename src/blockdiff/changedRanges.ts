/**
 * Which guest byte ranges may differ between disk A and disk B (DESIGN.md, "blockdiff":
 * allocation maps first, content hashes second).
 *
 * - Overlay: when A's layers are exactly the bottom of B's chain (same files), only what
 *   B's extra top layers store can differ. Their allocation maps say where, without
 *   reading anything else: O(change), whatever the disk size. A layer may store a cluster
 *   whose content equals the one below (a guest that rewrote a block with the same bytes,
 *   `qemu-img convert -B`, 64 KiB clusters around a 4 KiB change), so exactly those ranges
 *   are read from both sides and compared byte by byte.
 * - Hash: otherwise, every range either side stores is read from both and compared per
 *   block with XXH64; ranges that neither stores read as zeros on both sides.
 * Either way the result is exact at SECTOR_BYTES granularity (a block whose hashes differ
 * is narrowed to the sectors whose bytes differ), so it maps exactly onto the blocks of
 * any filesystem block size. Past the end of the smaller disk the smaller one reads as
 * zeros (as `qemu-img compare` treats disks that differ in size): the ranges the larger
 * one stores as data there are read and only their non-zero sectors count, so the result
 * does not depend on the mode, and an overlay that grew costs what was written past the
 * old end, not the new size.
 */
import type { BlockDevice, ByteRange } from '../diskimage/BlockDevice.js';
import { ChainDevice } from '../diskimage/ChainDevice.js';
import { mergeExtents } from '../diskimage/extents.js';
import { readInto } from '../diskimage/readInto.js';
import { FifoArena } from './FifoArena.js';
import { hashBlocks } from './hashBlocks.js';
import { mapAhead } from './mapAhead.js';

/** One side of a diff: the chain's device, and its layers top first with a stable identity. */
export interface DiffSide {
  /** Name for messages (the image path as given). */
  readonly name: string;
  readonly device: BlockDevice;
  /** layers[0] is the top; `id` identifies the file (its real path). */
  readonly layers: ReadonlyArray<{ readonly id: string; readonly device: BlockDevice }>;
  /** The file's bytes are the disk's (a raw image without backing): errors then give file offsets too. */
  readonly fileIsDisk?: boolean;
}

export interface ChangedRanges {
  /** 'overlay': B's extra layers' stored ranges, compared; 'hash': everything stored, hashed. */
  readonly mode: 'overlay' | 'hash';
  /** Ascending, disjoint, merged guest byte ranges. */
  readonly ranges: readonly ByteRange[];
  /** Bytes covered by `ranges`. */
  readonly changedBytes: number;
  /** Bytes read from each side to find them (overlay mode: what B's own layers store). */
  readonly bytesCompared: number;
}

/** Granularity of the result: the smallest unit a disk stores (qcow2 subclusters, VMDK grains and ext4 blocks are multiples). */
export const SECTOR_BYTES = 512;

export interface ChangedRangesOptions {
  /** Granularity of hash comparison, bytes (default 4096). */
  readonly hashBlockSize?: number;
  /** Bytes read per side per step of comparison (default 1 MiB). */
  readonly chunkBytes?: number;
}

/** How many of B's top layers sit on top of exactly A's layers, or undefined if B is not an overlay on A. */
export function overlayDepth(a: DiffSide, b: DiffSide): number | undefined {
  const extra = b.layers.length - a.layers.length;
  if (extra < 0) return undefined;
  for (let i = 0; i < a.layers.length; i++) if (a.layers[i]!.id !== b.layers[extra + i]!.id) return undefined;
  return extra;
}

/** Appends a range to an ascending list, merging it with the last one when they touch. */
function pushRange(out: MutableRange[], offset: number, length: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  // Grown in place: a rewritten region comes sector by sector.
  if (last !== undefined && last.offset + last.length >= offset) last.length = Math.max(last.offset + last.length, offset + length) - last.offset;
  else out.push({ offset, length });
}

/** The ranges this module builds: its own objects, grown in place until returned. */
type MutableRange = { offset: number; length: number };

/** Unions ascending range lists into one ascending, merged list. */
function unionRanges(lists: ReadonlyArray<readonly ByteRange[]>): ByteRange[] {
  const all = lists.flat().sort((x, y) => x.offset - y.offset);
  const out: MutableRange[] = [];
  for (const r of all) pushRange(out, r.offset, r.length);
  return out;
}

async function collectRanges(dev: BlockDevice, limit: number): Promise<ByteRange[]> {
  const out: MutableRange[] = [];
  const len = Math.min(limit, dev.size);
  if (len <= 0) return out;
  for await (const e of mergeExtents(dev.allocation({ offset: 0, length: len }))) pushRange(out, e.offset, e.length);
  return out;
}

/**
 * What layer `i` of B may change: every range it stores as data, and the ranges it stores
 * as zeros where a layer below stores data (qemu-img convert -B writes zero clusters over
 * ranges that are zeros in the backing file too; those change nothing).
 */
async function layerChanges(b: DiffSide, i: number, limit: number): Promise<ByteRange[]> {
  const dev = b.layers[i]!.device;
  const len = Math.min(limit, dev.size);
  const out: MutableRange[] = [];
  if (len <= 0) return out;
  const below = i + 1 < b.layers.length ? new ChainDevice(b.layers.slice(i + 1).map((l) => l.device)) : undefined;
  for await (const e of mergeExtents(dev.allocation({ offset: 0, length: len }))) {
    if (e.kind === 'data') pushRange(out, e.offset, e.length);
    else if (below !== undefined) {
      for await (const x of below.allocation({ offset: e.offset, length: e.length })) if (x.kind === 'data') pushRange(out, x.offset, x.length);
    }
  }
  return out;
}

/** Appends the sectors of [offset, offset+x.length) whose bytes differ between x and y. */
function pushDifferingSectors(out: MutableRange[], offset: number, x: Uint8Array, y: Uint8Array): void {
  // Buffer#compare with offsets: no view object per sector. Whole spans of COMPARE_SPAN
  // sectors first: most of what an overlay stores around a change is equal.
  const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  // The run of differing sectors being gathered, pushed when an equal sector ends it.
  let runStart = 0;
  let runEnd = 0;
  for (let s = 0; s < x.length; s += COMPARE_SPAN) {
    const e = Math.min(x.length, s + COMPARE_SPAN);
    if (bx.compare(y, s, e, s, e) === 0) continue;
    for (let o = s; o < e; o += SECTOR_BYTES) {
      const n = Math.min(SECTOR_BYTES, e - o);
      if (bx.compare(y, o, o + n, o, o + n) === 0) continue;
      if (runEnd !== o || runEnd === runStart) {
        pushRange(out, offset + runStart, runEnd - runStart);
        runStart = o;
      }
      runEnd = o + n;
    }
  }
  pushRange(out, offset + runStart, runEnd - runStart);
}

/** Bytes compared at once before narrowing to sectors. */
const COMPARE_SPAN = 8 * SECTOR_BYTES;

/** Ranges aligned outwards to `unit` bytes, clipped to `limit`. */
function* aligned(ranges: readonly ByteRange[], unit: number, limit: number): Generator<[start: number, end: number]> {
  let done = 0;
  for (const r of ranges) {
    // Two ranges within one unit: the unit is compared once, so the output stays ascending.
    const start = Math.max(done, Math.floor(r.offset / unit) * unit);
    const end = Math.min(limit, Math.ceil((r.offset + r.length) / unit) * unit);
    if (end > start) yield [start, end];
    done = Math.max(done, end);
  }
}

/** Ranges cut into pieces of at most `chunk` bytes: [offset, length]. */
function* chunked(ranges: Iterable<[start: number, end: number]>, chunk: number): Generator<[number, number]> {
  for (const [start, end] of ranges) for (let off = start; off < end; off += chunk) yield [off, Math.min(chunk, end - off)];
}

/** Bytes read at a time: `options.chunkBytes` (default 1 MiB: AHEAD keeps several in flight) in whole `unit`s, at least one. */
function chunkBytes(options: ChangedRangesOptions, unit: number): number {
  return Math.max(unit, Math.floor((options.chunkBytes ?? 1 << 20) / unit) * unit);
}

/** Pieces read ahead of the one being compared: many small ranges (an overlay's clusters) keep the thread pool busy; at most 4 MiB per side held. */
const AHEAD = { ahead: 16, cost: ([, len]: [number, number]) => len, maxCost: 4 << 20 } as const;

/**
 * Arenas of finished diffs, not yet collected: a rebase diffs one client after another,
 * and a pair of fresh arenas per client is garbage the collector frees late.
 */
const idleArenas: Array<WeakRef<FifoArena>> = [];

/** An idle arena of `size` bytes if one is still alive, else a new one. */
function idleArena(size: number): FifoArena {
  while (idleArenas.length > 0) {
    const arena = idleArenas.pop()!.deref();
    if (arena !== undefined && arena.capacity === size) return arena;
  }
  return new FifoArena(size);
}

/** Whether [off, off+len) lies inside one range of the ascending, merged `ranges`. */
function within(ranges: readonly ByteRange[], off: number, len: number): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid]!;
    if (r.offset + r.length <= off) lo = mid + 1;
    else if (r.offset > off) hi = mid - 1;
    else return off + len <= r.offset + r.length;
  }
  return false;
}

/**
 * Reads pieces from both sides at once into buffers of two arenas (one per side) that
 * hold what mapAhead keeps in flight, plus the piece being compared: `done` gives a
 * piece's buffers back once it is compared. B's piece comes from `top.device` (B's top
 * layer) when it lies within the ranges that layer stores (`top.stored`, ascending, merged).
 */
function bothReader(a: DiffSide, b: DiffSide, chunk: number, top?: { readonly device: BlockDevice; readonly stored: readonly ByteRange[] }) {
  // mapAhead keeps at most maxCost in flight (pieces are smaller) while the consumer holds
  // one piece; a piece that does not fit before the ring's end wastes less than one more.
  const size = AHEAD.maxCost + 2 * chunk;
  const [arenaA, arenaB] = [idleArena(size), idleArena(size)];
  return {
    /** After the last piece is compared (nothing in flight): the arenas may serve the next diff. */
    finish: (): void => {
      idleArenas.push(new WeakRef(arenaA), new WeakRef(arenaB));
    },
    read: async ([off, len]: [number, number]): Promise<{ off: number; da: Uint8Array; db: Uint8Array }> => {
      const [da, db] = [arenaA.take(len), arenaB.take(len)];
      const bDevice = top !== undefined && within(top.stored, off, len) ? top.device : b.device;
      await Promise.all([readInto(a.device, da, off), readInto(bDevice, db, off)]);
      return { off, da, db };
    },
    done: (p: { da: Uint8Array; db: Uint8Array }): void => {
      arenaA.release(p.da);
      arenaB.release(p.db);
    },
  };
}

/**
 * The guest byte ranges where A and B differ (see the module comment).
 * Throws what the devices throw (CORRUPT_IMAGE, TRUNCATED, IO).
 */
export async function changedRanges(a: DiffSide, b: DiffSide, options: ChangedRangesOptions = {}): Promise<ChangedRanges> {
  const common = Math.min(a.device.size, b.device.size);
  const larger = a.device.size > b.device.size ? a.device : b.device;
  const tail: MutableRange[] = [];
  if (larger.size > common) {
    // Past the smaller end the smaller side reads as zeros: only the larger side's non-zero sectors differ.
    const chunk = chunkBytes(options, SECTOR_BYTES);
    for await (const e of mergeExtents(larger.allocation({ offset: common, length: larger.size - common }))) {
      if (e.kind !== 'data') continue;
      for (let off = e.offset; off < e.offset + e.length; off += chunk) {
        const len = Math.min(chunk, e.offset + e.length - off);
        pushDifferingSectors(tail, off, await larger.read(off, len), new Uint8Array(len));
      }
    }
  }
  const depth = overlayDepth(a, b);
  const out: MutableRange[] = [];
  let compared = 0;
  if (depth !== undefined) {
    const lists: ByteRange[][] = [];
    for (let i = 0; i < depth; i++) lists.push(await layerChanges(b, i, common));
    // Read only what B's own layers store, from both sides. With one layer of its own, B's
    // bytes there are that layer's: read from it, not through the chain (which would ask
    // each layer's allocation for every piece).
    const chunk = chunkBytes(options, SECTOR_BYTES);
    const pieces = chunked(aligned(unionRanges(lists), SECTOR_BYTES, common), chunk);
    const top = depth === 1 ? { device: b.layers[0]!.device, stored: lists[0]! } : undefined;
    const reader = bothReader(a, b, chunk, top);
    for await (const piece of mapAhead(pieces, reader.read, AHEAD)) {
      compared += piece.da.length;
      pushDifferingSectors(out, piece.off, piece.da, piece.db);
      reader.done(piece);
    }
    reader.finish();
    for (const t of tail) pushRange(out, t.offset, t.length);
    return { mode: 'overlay', ranges: out, changedBytes: total(out), bytesCompared: compared };
  }
  const stored = unionRanges([await collectRanges(a.device, common), await collectRanges(b.device, common)]);
  const bs = options.hashBlockSize ?? 4096;
  const chunk = chunkBytes(options, bs);
  // Align to hash blocks so each block is compared whole.
  const reader = bothReader(a, b, chunk);
  for await (const piece of mapAhead(chunked(aligned(stored, bs, common), chunk), reader.read, AHEAD)) {
    const { off, da, db } = piece;
    const len = da.length;
    compared += len;
    const [ha, hb] = await Promise.all([hashBlocks(da, bs), hashBlocks(db, bs)]);
    for (let i = 0; i < ha.length; i++) {
      if (ha[i] === hb[i]) continue;
      const o = i * bs;
      const n = Math.min(bs, len - o);
      pushDifferingSectors(out, off + o, da.subarray(o, o + n), db.subarray(o, o + n));
    }
    reader.done(piece);
  }
  reader.finish();
  for (const t of tail) pushRange(out, t.offset, t.length);
  return { mode: 'hash', ranges: out, changedBytes: total(out), bytesCompared: compared };
}

function total(ranges: readonly ByteRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.length;
  return n;
}

/** The parts of `ranges` inside [start, start+length), shifted to start at 0. */
export function rangesWithin(ranges: readonly ByteRange[], start: number, length: number): ByteRange[] {
  const out: ByteRange[] = [];
  const end = start + length;
  for (const r of ranges) {
    const s = Math.max(start, r.offset);
    const e = Math.min(end, r.offset + r.length);
    if (e > s) out.push({ offset: s - start, length: e - s });
  }
  return out;
}
