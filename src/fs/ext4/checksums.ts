/**
 * The two checksum functions of ext4 (ext4 doc, checksums.rst): crc32c as the kernel's
 * `ext4_chksum` computes it (a raw crc32c register with no final inversion, chained
 * from a seed) for metadata_csum, and the crc16 of the older uninit_bg/gdt_csum feature.
 */
import { nativeCrc, reflectedCrcTable } from '../../diskimage/crc32.js';

/**
 * Bytes checksummed in JS before the native crc32c is loaded for large inputs (see nativeCrc):
 * loading it costs 8 ms, about what JS takes for 8 MiB, and more than an `ls -R` of 100,000
 * files checksums in directory blocks (5 MB).
 */
const JS_BYTES_BEFORE_NATIVE = 8 << 20;
/** Inputs at most this long are always checksummed in JS (a native call costs more). */
const JS_ALWAYS_BYTES = 512;
let jsBytes = 0;

/**
 * The kernel's crc32c(seed, data): the register starts at `seed` and is not inverted
 * at the end. @node-rs/crc32's crc32c(data, prev) is the standard (inverted) CRC that
 * continues `prev`, so raw(seed) = ~std(data, ~seed). Small inputs, and everything until
 * 8 MiB have been checksummed (a listing of 100,000 files reads 5 MB of directories), are done in JS
 * (ext4Crc32cAt); then large ones natively, where it loads.
 */
export function ext4Crc32c(seed: number, data: Uint8Array): number {
  if (data.length > JS_ALWAYS_BYTES && jsBytes >= JS_BYTES_BEFORE_NATIVE) {
    const n = nativeCrc();
    if (n !== undefined) return ~n.crc32c(data, ~seed >>> 0) >>> 0;
  }
  jsBytes += data.length;
  return ext4Crc32cAt(seed, data, 0, data.length);
}

/** Slicing-by-8 tables: table t maps a byte to its CRC register t bytes further on (table 0 is the byte table). */
let crc32cTables: Uint32Array | undefined;

function slicingTables(): Uint32Array {
  const t = new Uint32Array(8 * 256);
  t.set(reflectedCrcTable(0x82f63b78));
  for (let k = 1; k < 8; k++) for (let i = 0; i < 256; i++) t[k * 256 + i] = (t[(k - 1) * 256 + i]! >>> 8) ^ t[t[(k - 1) * 256 + i]! & 0xff]!;
  return t;
}

/** Whether typed arrays are little-endian here (they are on every platform Node runs on; checked, not assumed). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** A 32-bit view of the last buffer checksummed by words (inode-table chunks: many records each). */
let words: Int32Array | undefined;

/**
 * ext4Crc32c of bytes [at, at + length) of `bytes`, in JS (slicing by 8): for records
 * checked in place (an inode in its table chunk), where a native call on a fresh view of
 * each costs more than the loop (a walk checks 100,000s of 256-byte inodes). Where the
 * range is 4-byte aligned it is read a 32-bit word at a time.
 */
export function ext4Crc32cAt(seed: number, bytes: Uint8Array, at: number, length: number): number {
  const t = (crc32cTables ??= slicingTables());
  const b = bytes;
  let c = seed | 0;
  let i = at;
  const end = at + length;
  const abs = b.byteOffset + at;
  if (LITTLE_ENDIAN && length >= 64 && (abs & 3) === 0) {
    let w = words;
    if (w === undefined || w.buffer !== b.buffer) words = w = new Int32Array(b.buffer, 0, b.buffer.byteLength >> 2);
    const wEnd = (abs >> 2) + (length >> 3) * 2;
    for (let k = abs >> 2; k < wEnd; k += 2) {
      const lo = c ^ w[k]!;
      const hi = w[k + 1]!;
      c = t[1792 + (lo & 0xff)]! ^ t[1536 + ((lo >>> 8) & 0xff)]! ^ t[1280 + ((lo >>> 16) & 0xff)]! ^ t[1024 + (lo >>> 24)]! ^ t[768 + (hi & 0xff)]! ^ t[512 + ((hi >>> 8) & 0xff)]! ^ t[256 + ((hi >>> 16) & 0xff)]! ^ t[hi >>> 24]!;
    }
    i = at + (length >> 3) * 8;
  }
  for (; i + 8 <= end; i += 8) {
    const lo = c ^ (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24));
    c = t[1792 + (lo & 0xff)]! ^ t[1536 + ((lo >>> 8) & 0xff)]! ^ t[1280 + ((lo >>> 16) & 0xff)]! ^ t[1024 + (lo >>> 24)]! ^ t[768 + b[i + 4]!]! ^ t[512 + b[i + 5]!]! ^ t[256 + b[i + 6]!]! ^ t[b[i + 7]!]!;
  }
  for (; i < end; i++) c = t[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/**
 * ext4Crc32c of a little-endian 32-bit value (inode numbers, group numbers, generations).
 * Computed here byte by byte (reflected polynomial 0x82f63b78): it runs twice per inode
 * read, and four table steps cost less than a native call on a fresh 4-byte buffer.
 */
export function ext4Crc32cU32(seed: number, value: number): number {
  // Table 0 of the slicing tables: the byte table.
  const t = (crc32cTables ??= slicingTables());
  let c = seed >>> 0;
  for (let k = 0; k < 32; k += 8) c = t[(c ^ (value >>> k)) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** ext4Crc32c of a little-endian 64-bit value (xattr block numbers). */
export function ext4Crc32cU64(seed: number, value: number): number {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return ext4Crc32c(seed, b);
}

let crc16Table: Uint16Array | undefined;

/** crc16 (polynomial 0x8005, reflected as 0xa001), continuing from `crc`, as the gdt_csum feature uses. */
export function crc16(crc: number, data: Uint8Array): number {
  if (crc16Table === undefined) {
    crc16Table = new Uint16Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
      crc16Table[i] = c;
    }
  }
  let c = crc & 0xffff;
  for (let i = 0; i < data.length; i++) c = (c >>> 8) ^ crc16Table[(c ^ data[i]!) & 0xff]!;
  return c;
}
