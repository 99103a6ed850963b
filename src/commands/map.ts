/**
 * `imgdedup map IMAGE`: the allocation of every guest range, with the layer that
 * answers it, in the shape of `qemu-img map --output=json`.
 */
import { openChain } from '../diskimage/openChain.js';
import type { ChainSegment } from '../diskimage/ChainDevice.js';

/** One entry, with qemu-img map's field names (plus `compressed` and `file`). */
export interface MapEntry {
  readonly start: number;
  readonly length: number;
  readonly depth: number;
  readonly present: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  readonly compressed: boolean;
  /** Host offset in `file`, where the range is stored there contiguously and uncompressed. */
  readonly offset?: number;
  readonly file?: string;
}

export interface MapResult {
  readonly file: string;
  readonly virtualSize: number;
  readonly entries: readonly MapEntry[];
}

export interface MapOptions {
  readonly image: string;
  readonly format?: string;
  /** Called with each entry as it is found (for streaming output of huge maps). */
  readonly onEntry?: (entry: MapEntry) => void;
}

function toEntry(s: ChainSegment, files: readonly string[]): MapEntry {
  const e = s.extent;
  if (e === undefined) return { start: s.offset, length: s.length, depth: s.depth, present: false, zero: true, data: false, compressed: false };
  return {
    start: s.offset,
    length: s.length,
    depth: s.depth,
    present: true,
    zero: e.kind === 'zero',
    data: e.kind === 'data',
    compressed: Boolean(e.compressed),
    ...(e.hostOffset !== undefined ? { offset: e.hostOffset } : {}),
    file: files[s.depth]!,
  };
}

function mergeable(a: MapEntry, b: MapEntry): boolean {
  if (a.start + a.length !== b.start) return false;
  if (a.depth !== b.depth || a.present !== b.present || a.zero !== b.zero || a.data !== b.data || a.compressed !== b.compressed) return false;
  if (a.offset === undefined || b.offset === undefined) return a.offset === b.offset;
  return a.offset + a.length === b.offset;
}

/** Maps the whole chain; work grows with the number of stored ranges, not the virtual size. */
export async function map(options: MapOptions): Promise<MapResult> {
  const chain = await openChain(options.image, options.format !== undefined ? { format: options.format } : {});
  try {
    const files = chain.layers.map((l) => l.path);
    const entries: MapEntry[] = [];
    let cur: MapEntry | undefined;
    const emit = (e: MapEntry) => {
      if (options.onEntry) options.onEntry(e);
      else entries.push(e);
    };
    for await (const s of chain.device.segments()) {
      const e = toEntry(s, files);
      if (cur !== undefined && mergeable(cur, e)) cur = { ...cur, length: cur.length + e.length };
      else {
        if (cur !== undefined) emit(cur);
        cur = e;
      }
    }
    if (cur !== undefined) emit(cur);
    return { file: options.image, virtualSize: chain.device.size, entries };
  } finally {
    await chain.close();
  }
}

/** One line per entry, like `qemu-img map` in human format (stored ranges only). */
export function formatMapEntry(e: MapEntry): string | undefined {
  if (!e.present) return undefined;
  const hex = (n: number) => `0x${n.toString(16)}`;
  const kind = e.zero ? 'zero' : e.compressed ? 'compressed' : 'data';
  return `${hex(e.start).padEnd(20)}${hex(e.length).padEnd(16)}${(e.offset !== undefined ? hex(e.offset) : '-').padEnd(16)}${kind.padEnd(12)}${e.file ?? ''}`;
}

export const MAP_HEADER = `${'Offset'.padEnd(20)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}${'Kind'.padEnd(12)}File`;

/** qemu-img's JSON shape: one object per line inside a JSON array. */
export function formatMapEntryJson(e: MapEntry): string {
  return JSON.stringify(e);
}
