/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320, as zlib and the UEFI spec's GPT
 * headers use it) in JS, and the native CRC functions of @node-rs/crc32 loaded on first
 * need rather than at startup: its loader reads files and opens a native binding (4 to 15
 * ms), which a listing that checks a few small structures never repays.
 */
import { createRequire } from 'node:module';

/** A native CRC: the standard (inverted) CRC of `input`, continuing from `initialState`. */
export type NativeCrc = (input: Uint8Array, initialState?: number) => number;

let native: { readonly crc32: NativeCrc; readonly crc32c: NativeCrc } | null | undefined;

/** The native functions, loaded now if not yet; undefined where they cannot be loaded (callers fall back to JS). */
export function nativeCrc(): { readonly crc32: NativeCrc; readonly crc32c: NativeCrc } | undefined {
  if (native === undefined) {
    try {
      native = createRequire(import.meta.url)('@node-rs/crc32') as { crc32: NativeCrc; crc32c: NativeCrc };
    } catch {
      native = null;
    }
  }
  return native ?? undefined;
}

/** The byte table of a reflected CRC-32 with polynomial `poly` (0xedb88320 for CRC-32, 0x82f63b78 for CRC-32C). */
export function reflectedCrcTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
}

let table: Uint32Array | undefined;

/**
 * The standard CRC-32 of `data` continuing from `initial` (the result of a previous call;
 * 0 to start), as zlib's crc32 and @node-rs/crc32's crc32 compute it (check value of
 * "123456789": 0xcbf43926). Table-driven: GPT headers and entry arrays are a few KiB.
 */
export function crc32(data: Uint8Array, initial = 0): number {
  const t = (table ??= reflectedCrcTable(0xedb88320));
  let c = ~initial >>> 0;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
