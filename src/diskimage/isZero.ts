/**
 * All-zero detection at memory speed: memcmp (Buffer.compare) against one shared
 * zero block, never a JS loop per byte or word.
 */

/** Granularity of one comparison; small enough to stay in the CPU cache. */
export const ZERO_BLOCK_BYTES = 64 * 1024;
const ZERO_BLOCK = Buffer.alloc(ZERO_BLOCK_BYTES);

/** `bytes` seen as a Buffer, without a copy. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** True if bytes [start, end) of `buf` are all zero. */
export function isZeroRange(buf: Buffer, start: number, end: number): boolean {
  for (let at = start; at < end; at += ZERO_BLOCK_BYTES) {
    const n = Math.min(ZERO_BLOCK_BYTES, end - at);
    if (buf.compare(ZERO_BLOCK, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/** True if every byte of `bytes` is zero. */
export function isZero(bytes: Uint8Array): boolean {
  return isZeroRange(asBuffer(bytes), 0, bytes.length);
}
