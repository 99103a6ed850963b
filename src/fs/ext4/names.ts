/**
 * Names as ext4 stores them. A directory entry name is up to 255 bytes in no particular
 * encoding, any byte but NUL and '/' (ext4 doc, directory.rst); symlink targets and xattr
 * names are bytes too. The model keeps them as Uint8Array; text exists only at the
 * display edge (ui/quoteName.ts). These helpers build, split, compare and key byte paths.
 */

const SLASH = 0x2f;
const DOT = 0x2e;
const utf8 = new TextEncoder();

/** The UTF-8 bytes of a text name or path (what a name typed by a user means). */
export function utf8Bytes(text: string): Uint8Array {
  return utf8.encode(text);
}

/** Whether two byte strings are equal. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  // Long arrays (file content) by memcmp; names by a loop, cheaper than a native call.
  if (a.length > 256) return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Byte-wise order (as `LC_ALL=C ls` sorts): negative, zero or positive. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  // Names are short: a loop costs less than a native call (a directory's sort makes n log n of them).
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** '.' or '..'. */
export function isDotOrDotDot(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === DOT) || (name.length === 2 && name[0] === DOT && name[1] === DOT);
}

/**
 * A lossless string key for a byte string: one char (U+0000..U+00FF) per byte, so equal
 * keys mean equal bytes, `<` on keys orders as bytes, and '/' splits keys as it splits
 * paths. For Map keys and sorting only, never for display.
 */
export function byteKey(bytes: Uint8Array): string {
  // Names (the usual key) are short: char codes straight from the bytes, no Buffer object.
  if (bytes.length <= 64) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** The bytes of a byteKey. */
export function keyBytes(key: string): Uint8Array {
  return new Uint8Array(Buffer.from(key, 'latin1'));
}

/** `dir` + '/' + `name` (an empty `dir` stands for the root's prefix: the result is '/name'). */
export function joinPath(dir: Uint8Array, name: Uint8Array): Uint8Array {
  const out = new Uint8Array(dir.length + 1 + name.length);
  out.set(dir, 0);
  out[dir.length] = SLASH;
  out.set(name, dir.length + 1);
  return out;
}

/** The non-empty '/'-separated components of a byte path. */
export function splitPath(path: Uint8Array): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === SLASH) {
      if (i > start) parts.push(path.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

/** The path '/' + the components joined by '/' ('/' alone for none). */
export function absolutePath(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 0) return new Uint8Array([SLASH]);
  let out: Uint8Array = new Uint8Array(0);
  for (const p of parts) out = joinPath(out, p);
  return out;
}
