/**
 * Which guest byte ranges may differ between disk A and disk B (DESIGN.md, "blockdiff":
 * allocation maps first, content hashes second).
 *
 * - Overlay: when A's layers are exactly the bottom of B's chain (same files), only what
 *   B's extra top layers store can differ. Their allocation maps give it without reading
 *   data: O(change), whatever the disk size. The result is a superset (a layer may store
 *   a cluster whose content equals the one below); callers verify where it matters.
 * - Hash: otherwise, every range either side stores is read from both and compared per
 *   block with XXH64; ranges that neither stores read as zeros on both sides. The result
 *   is exact at `hashBlockSize` granularity.
 * Bytes past the end of the smaller disk always count as changed.
 */
import type { BlockDevice, ByteRange } from '../diskimage/BlockDevice.js';
import { ChainDevice } from '../diskimage/ChainDevice.js';
import { mergeExtents } from '../diskimage/extents.js';
import { hashBlocks } from './hashBlocks.js';

/** One side of a diff: the chain's device, and its layers top first with a stable identity. */
export interface DiffSide {
  /** Name for messages (the image path as given). */
  readonly name: string;
  readonly device: BlockDevice;
  /** layers[0] is the top; `id` identifies the file (its real path). */
  readonly layers: ReadonlyArray<{ readonly id: string; readonly device: BlockDevice }>;
}

export interface ChangedRanges {
  /** 'overlay': from B's extra layers' allocation; 'hash': by comparing content. */
  readonly mode: 'overlay' | 'hash';
  /** Ascending, disjoint, merged guest byte ranges. */
  readonly ranges: readonly ByteRange[];
  /** Bytes covered by `ranges`. */
  readonly changedBytes: number;
  /** Bytes read from each side to find them (0 in overlay mode). */
  readonly bytesCompared: number;
}

export interface ChangedRangesOptions {
  /** Granularity of hash comparison, bytes (default 4096). */
  readonly hashBlockSize?: number;
  /** Bytes read per side per step of hash comparison (default 4 MiB). */
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
function pushRange(out: ByteRange[], offset: number, length: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  if (last !== undefined && last.offset + last.length >= offset) {
    out[out.length - 1] = { offset: last.offset, length: Math.max(last.offset + last.length, offset + length) - last.offset };
  } else out.push({ offset, length });
}

/** Unions ascending range lists into one ascending, merged list. */
function unionRanges(lists: ReadonlyArray<readonly ByteRange[]>): ByteRange[] {
  const all = lists.flat().sort((x, y) => x.offset - y.offset);
  const out: ByteRange[] = [];
  for (const r of all) pushRange(out, r.offset, r.length);
  return out;
}

async function collectRanges(dev: BlockDevice, limit: number): Promise<ByteRange[]> {
  const out: ByteRange[] = [];
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
  const out: ByteRange[] = [];
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

/**
 * The guest byte ranges where A and B may differ (see the module comment).
 * Throws what the devices throw (CORRUPT_IMAGE, TRUNCATED, IO).
 */
export async function changedRanges(a: DiffSide, b: DiffSide, options: ChangedRangesOptions = {}): Promise<ChangedRanges> {
  const common = Math.min(a.device.size, b.device.size);
  const tail: ByteRange[] = Math.max(a.device.size, b.device.size) > common ? [{ offset: common, length: Math.max(a.device.size, b.device.size) - common }] : [];
  const depth = overlayDepth(a, b);
  if (depth !== undefined) {
    const lists: ByteRange[][] = [tail];
    for (let i = 0; i < depth; i++) lists.push(await layerChanges(b, i, common));
    const ranges = unionRanges(lists);
    return { mode: 'overlay', ranges, changedBytes: total(ranges), bytesCompared: 0 };
  }
  const stored = unionRanges([await collectRanges(a.device, common), await collectRanges(b.device, common)]);
  const bs = options.hashBlockSize ?? 4096;
  const chunk = Math.max(bs, Math.floor((options.chunkBytes ?? 4 << 20) / bs) * bs);
  const out: ByteRange[] = [];
  let compared = 0;
  for (const r of stored) {
    // Align to hash blocks so each block is compared whole.
    const start = Math.floor(r.offset / bs) * bs;
    const end = Math.min(common, Math.ceil((r.offset + r.length) / bs) * bs);
    for (let off = start; off < end; off += chunk) {
      const len = Math.min(chunk, end - off);
      const [da, db] = await Promise.all([a.device.read(off, len), b.device.read(off, len)]);
      compared += len;
      const [ha, hb] = await Promise.all([hashBlocks(da, bs), hashBlocks(db, bs)]);
      for (let i = 0; i < ha.length; i++) {
        if (ha[i] !== hb[i]) pushRange(out, off + i * bs, Math.min(bs, len - i * bs));
      }
    }
  }
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
