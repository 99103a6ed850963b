/**
 * How byte names (file names, paths, symlink targets) are shown and typed back, in the
 * style of git's quoted paths with core.quotePath=false: a name that is valid UTF-8
 * without special characters prints as it is; any other name prints inside double quotes
 * with C escapes (\t \n \" \\ ...) and octal escapes (\351) for the bytes that are not
 * printable UTF-8. So no name can forge a line or a column of a listing, and the quoted
 * form is unambiguous: unquoteName gives back the exact bytes.
 *
 * Escaped: bytes that do not form a well-formed UTF-8 sequence (Unicode 15, table 3-7),
 * control characters (C0, DEL, C1), the line and paragraph separators U+2028/U+2029, the
 * bidirectional controls (which can reorder what a terminal shows), '"' and '\'.
 */

/** C escapes, as git writes them (quote.c's table, by meaning). */
const C_ESCAPES: Readonly<Record<number, string>> = { 7: 'a', 8: 'b', 9: 't', 10: 'n', 11: 'v', 12: 'f', 13: 'r', 0x22: '"', 0x5c: '\\' };
const C_UNESCAPES: Readonly<Record<string, number>> = Object.fromEntries(Object.entries(C_ESCAPES).map(([b, c]) => [c, Number(b)]));

/** Code points printed escaped although they are valid UTF-8. */
function unsafeCodePoint(cp: number): boolean {
  return (
    cp < 0x20 ||
    cp === 0x22 ||
    cp === 0x5c ||
    (cp >= 0x7f && cp <= 0x9f) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x061c ||
    cp === 0x200e ||
    cp === 0x200f ||
    (cp >= 0x202a && cp <= 0x202e) ||
    (cp >= 0x2066 && cp <= 0x2069)
  );
}

/**
 * The well-formed UTF-8 sequence at `i` (Unicode table 3-7: no overlongs, surrogates or
 * code points above U+10FFFF): its code point and length, or undefined.
 */
function utf8At(b: Uint8Array, i: number): { cp: number; len: number } | undefined {
  const b0 = b[i]!;
  if (b0 < 0x80) return { cp: b0, len: 1 };
  const cont = (k: number, lo = 0x80, hi = 0xbf): number | undefined => {
    const x = b[i + k];
    return x !== undefined && x >= lo && x <= hi ? x & 0x3f : undefined;
  };
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    const c1 = cont(1);
    return c1 === undefined ? undefined : { cp: ((b0 & 0x1f) << 6) | c1, len: 2 };
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const c1 = cont(1, b0 === 0xe0 ? 0xa0 : 0x80, b0 === 0xed ? 0x9f : 0xbf);
    const c2 = cont(2);
    return c1 === undefined || c2 === undefined ? undefined : { cp: ((b0 & 0x0f) << 12) | (c1 << 6) | c2, len: 3 };
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const c1 = cont(1, b0 === 0xf0 ? 0x90 : 0x80, b0 === 0xf4 ? 0x8f : 0xbf);
    const c2 = cont(2);
    const c3 = cont(3);
    if (c1 === undefined || c2 === undefined || c3 === undefined) return undefined;
    return { cp: ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, len: 4 };
  }
  return undefined;
}

function escapeByte(byte: number): string {
  const c = C_ESCAPES[byte];
  return c !== undefined ? `\\${c}` : `\\${byte.toString(8).padStart(3, '0')}`;
}

/**
 * The text of `bytes` when they are all printable ASCII other than '"' and '\\' (which
 * print as they are), else undefined. Nearly every name is such: one tight loop, no
 * per-byte objects, for listings of many files.
 */
export function plainAsciiText(bytes: Uint8Array): string | undefined {
  return plainAsciiTextAt(bytes, 0, bytes.length);
}

/** plainAsciiText of bytes [at, at + length) of `bytes` (a name in place in a directory block). */
export function plainAsciiTextAt(bytes: Uint8Array, at: number, length: number): string | undefined {
  const end = at + length;
  for (let i = at; i < end; i++) {
    const b = bytes[i]!;
    if (b < 0x20 || b > 0x7e || b === 0x22 || b === 0x5c) return undefined;
  }
  // Buffer's latin1 (= ASCII here) decoder on the bytes in place (directory blocks are
  // Buffers: no view object per name); a short Uint8Array by fromCharCode over it.
  if (Buffer.isBuffer(bytes)) return bytes.toString('latin1', at, end);
  if (length <= 64 && at === 0 && length === bytes.length) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  return Buffer.from(bytes.buffer, bytes.byteOffset + at, length).toString('latin1');
}

/** Whether `bytes` print as they are (quoteName returns their UTF-8 text unquoted). */
export function isPlainName(bytes: Uint8Array): boolean {
  if (plainAsciiText(bytes) !== undefined) return true;
  for (let i = 0; i < bytes.length; ) {
    const u = utf8At(bytes, i);
    if (u === undefined || unsafeCodePoint(u.cp)) return false;
    i += u.len;
  }
  return true;
}

/** The display form of a byte name or path (see the module comment). */
export function quoteName(bytes: Uint8Array): string {
  const ascii = plainAsciiText(bytes);
  if (ascii !== undefined) return ascii;
  let out = '';
  let quoted = false;
  for (let i = 0; i < bytes.length; ) {
    const u = utf8At(bytes, i);
    if (u !== undefined && !unsafeCodePoint(u.cp)) {
      out += String.fromCodePoint(u.cp);
      i += u.len;
      continue;
    }
    quoted = true;
    const len = u?.len ?? 1;
    for (let k = 0; k < len; k++) out += escapeByte(bytes[i + k]!);
    i += len;
  }
  return quoted ? `"${out}"` : out;
}

/**
 * The form of a display name (quoteName's) in text whose columns are separated by spaces
 * (ls lines, `name -> target`): quoted as well when it holds a space, as GNU ls quotes
 * such names on a terminal, so that `a -> b`, ` lead` or `trail ` cannot pass for a
 * symlink, or for another name. A display form that is not quoted holds no '"' or '\',
 * so the quotes alone make it a quoted form that unquoteName reads back.
 */
export function quoteSpaced(shown: string): string {
  return shown.startsWith('"') || !shown.includes(' ') ? shown : `"${shown}"`;
}

/**
 * The bytes of a quoted name ("..." with the escapes quoteName writes; other characters
 * stand for their UTF-8 bytes), or undefined if `text` is not one.
 */
export function unquoteName(text: string): Uint8Array | undefined {
  if (text.length < 2 || !text.startsWith('"') || !text.endsWith('"')) return undefined;
  const out: number[] = [];
  const enc = new TextEncoder();
  const body = text.slice(1, -1);
  for (let i = 0; i < body.length; ) {
    const ch = body[i]!;
    if (ch === '"') return undefined;
    if (ch !== '\\') {
      const cp = body.codePointAt(i)!;
      const s = String.fromCodePoint(cp);
      out.push(...enc.encode(s));
      i += s.length;
      continue;
    }
    const next = body[i + 1];
    if (next === undefined) return undefined;
    const c = C_UNESCAPES[next];
    if (c !== undefined) {
      out.push(c);
      i += 2;
      continue;
    }
    const oct = /^[0-3][0-7]{2}/.exec(body.slice(i + 1, i + 4));
    if (oct === null) return undefined;
    out.push(parseInt(oct[0], 8));
    i += 4;
  }
  return new Uint8Array(out);
}

/**
 * A path as the user typed it: UTF-8, except that the whole path, or any of its
 * '/'-separated components, may be given in the quoted form that ls and diff print
 * (e.g. `"/d/caf\351"` or `/d/"caf\351"`), which names any bytes.
 */
export function parsePathArg(arg: string): Uint8Array {
  const whole = unquoteName(arg);
  if (whole !== undefined) return whole;
  const enc = new TextEncoder();
  return joinParts(arg.split('/').map((p) => unquoteName(p) ?? enc.encode(p)));
}

// ignoreBOM: a leading U+FEFF is part of a name, not a marker to drop.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The text of `bytes` if they are well-formed UTF-8, else undefined. */
function utf8Text(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * parsePathArg for a PATH given as bytes (the exact bytes of an argument, which may not be
 * UTF-8): a part that is not UTF-8 is a name as it is; the others read as parsePathArg reads them.
 */
export function parsePathArgBytes(arg: Uint8Array): Uint8Array {
  const text = utf8Text(arg);
  if (text !== undefined) return parsePathArg(text);
  const parts: Uint8Array[] = [];
  for (let start = 0; start <= arg.length; ) {
    let end = arg.indexOf(0x2f, start);
    if (end < 0) end = arg.length;
    const part = arg.subarray(start, end);
    const partText = utf8Text(part);
    parts.push((partText !== undefined ? unquoteName(partText) : undefined) ?? part);
    start = end + 1;
  }
  return joinParts(parts);
}

function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0) + parts.length - 1);
  let o = 0;
  parts.forEach((p, k) => {
    if (k > 0) out[o++] = 0x2f;
    out.set(p, o);
    o += p.length;
  });
  return out;
}

/**
 * The JSON fields for a byte name: `{ [field]: display }`, plus `[field + 'Bytes']`
 * (base64 of the exact bytes) exactly when the display form is quoted.
 */
export function nameFields<K extends string>(field: K, bytes: Uint8Array): Record<K, string> & Partial<Record<`${K}Bytes`, string>> {
  const ascii = plainAsciiText(bytes);
  if (ascii !== undefined) return { [field]: ascii } as Record<K, string> & Partial<Record<`${K}Bytes`, string>>;
  const out: Record<string, string> = { [field]: quoteName(bytes) };
  if (!isPlainName(bytes)) out[`${field}Bytes`] = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  return out as Record<K, string> & Partial<Record<`${K}Bytes`, string>>;
}
