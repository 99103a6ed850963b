/** Helpers for streams of Extents: clipping to a range and merging neighbours. */
import type { ByteRange, Extent } from './BlockDevice.js';

/** True if `b` continues `a` with the same attributes (and contiguous host offsets). */
export function extentsMergeable(a: Extent, b: Extent): boolean {
  if (a.offset + a.length !== b.offset) return false;
  if (a.kind !== b.kind || a.depth !== b.depth || Boolean(a.compressed) !== Boolean(b.compressed)) return false;
  if (a.hostOffset === undefined || b.hostOffset === undefined) return a.hostOffset === b.hostOffset;
  return a.hostOffset + a.length === b.hostOffset;
}

/** Merges adjacent alike extents of an ascending stream. */
export async function* mergeExtents(source: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  let cur: Extent | undefined;
  for await (const e of source) {
    if (e.length === 0) continue;
    if (cur !== undefined && extentsMergeable(cur, e)) {
      cur = { ...cur, length: cur.length + e.length };
    } else {
      if (cur !== undefined) yield cur;
      cur = e;
    }
  }
  if (cur !== undefined) yield cur;
}

/** Clips an extent to a range; undefined if they do not overlap. */
export function clipExtent(e: Extent, range: ByteRange): Extent | undefined {
  const start = Math.max(e.offset, range.offset);
  const end = Math.min(e.offset + e.length, range.offset + range.length);
  if (end <= start) return undefined;
  const shift = start - e.offset;
  return {
    ...e,
    offset: start,
    length: end - start,
    ...(e.hostOffset !== undefined ? { hostOffset: e.hostOffset + shift } : {}),
  };
}

/** The whole device as a range, or the requested range clipped to the device. */
export function normalizeRange(size: number, range?: ByteRange): ByteRange {
  if (range === undefined) return { offset: 0, length: size };
  const offset = Math.max(0, Math.min(size, range.offset));
  const end = Math.max(offset, Math.min(size, range.offset + range.length));
  return { offset, length: end - offset };
}

/** Collects an async iterable into an array (for small results and tests). */
export async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of source) out.push(x);
  return out;
}
