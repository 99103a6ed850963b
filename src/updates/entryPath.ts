/**
 * Entry names as bytes: normalising a name from a tar header or a tree walk into the
 * absolute, '/'-separated form of UpdateEntry.path, refusing what must never be applied,
 * and recognising OCI whiteouts (OCI image spec, layer.md "Whiteouts").
 */
import { RefusedError } from '../errors.js';

/** ext4's limit on one name (EXT4_NAME_LEN), and that of every Linux filesystem. */
export const NAME_MAX_BYTES = 255;
/** Linux PATH_MAX, counting the terminating NUL: a symlink target is at most 4095 bytes. */
export const SYMLINK_MAX_BYTES = 4095;
/** A symlink's permission bits on Linux, whatever made it (the kernel ignores them; a tar header's mode is not kept on extraction). */
export const SYMLINK_MODE = 0o777;

const SLASH = 0x2f;
const DOT = 0x2e;
/** ".wh." (OCI: a whiteout file's prefix). */
export const WHITEOUT_PREFIX = Uint8Array.of(0x2e, 0x77, 0x68, 0x2e);
/** ".wh..wh..opq" (OCI: the opaque-directory marker). */
export const OPAQUE_MARKER = new TextEncoder().encode('.wh..wh..opq');

/** The root as an UpdateEntry path. */
export const ROOT_PATH = Uint8Array.of(SLASH);

/** Where an entry comes from, for the BAD_UPDATE error. */
export interface EntryContext {
  /** The tar file or tree root. */
  readonly file: string;
  /** Byte offset of the entry's header within `file`, when the file is an uncompressed tar. */
  readonly offset?: number;
  /** Byte offset of the entry's header within the decompressed tar stream (compressed layers). */
  readonly tarOffset?: number;
}

/** A name as printable text: UTF-8 where it is, \xNN escapes for the other bytes (lossless for reading). */
export function showName(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  while (i < bytes.length) {
    // Longest valid UTF-8 sequence at i (1-4 bytes), else one escaped byte.
    let done = false;
    for (let n = 1; n <= 4 && i + n <= bytes.length && !done; n++) {
      try {
        const s = decoder.decode(bytes.subarray(i, i + n));
        if (s.codePointAt(0)! < 0x20 || s === '\\') break;
        out += s;
        i += n;
        done = true;
      } catch {
        // not a complete sequence of n bytes: try n + 1
      }
    }
    if (!done) out += `\\x${bytes[i++]!.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The BAD_UPDATE error for an entry (its name shown as text, escaped where not UTF-8). */
export function badEntry(ctx: EntryContext, entry: Uint8Array | string, detail: string): RefusedError {
  const entryName = typeof entry === 'string' ? entry : showName(entry);
  return new RefusedError('BAD_UPDATE', {
    file: ctx.file,
    ...(ctx.offset !== undefined ? { offset: ctx.offset } : {}),
    ...(ctx.tarOffset !== undefined ? { tarOffset: ctx.tarOffset } : {}),
    structure: `entry ${JSON.stringify(entryName)}`,
    entry: entryName,
    detail,
  });
}

function isDotDot(b: Uint8Array, start: number, end: number): boolean {
  return end - start === 2 && b[start] === DOT && b[start + 1] === DOT;
}

/**
 * `raw` (a tar member name, a hard link's target, a whiteout's target) as an absolute
 * normalised path: a leading '/' or "./" is dropped (tar writes both for the same
 * thing), '.' and empty components vanish, the root is "/". Refuses (BAD_UPDATE) a '..'
 * component anywhere (it could only climb out of the filesystem or be ambiguous under a
 * symlink), a component over 255 bytes, and a NUL byte.
 */
export function normaliseEntryPath(raw: Uint8Array, ctx: EntryContext): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i < raw.length && raw[i] === 0) throw badEntry(ctx, raw, 'the name contains a NUL byte');
    if (i < raw.length && raw[i] !== SLASH) continue;
    const len = i - start;
    if (len === 0 || (len === 1 && raw[start] === DOT)) {
      // empty or '.': nothing
    } else if (isDotDot(raw, start, i)) {
      throw badEntry(ctx, raw, "the name has a '..' component");
    } else if (len > NAME_MAX_BYTES) {
      throw badEntry(ctx, raw, `a component of the name is ${len} bytes long; the limit is ${NAME_MAX_BYTES}`);
    } else {
      parts.push(raw.subarray(start, i));
      total += len + 1;
    }
    start = i + 1;
  }
  if (parts.length === 0) return ROOT_PATH;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out[at++] = SLASH;
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `parent` (normalised) joined with one name (already validated as one component). */
export function joinPath(parent: Uint8Array, name: Uint8Array): Uint8Array {
  const root = parent.length === 1;
  const out = new Uint8Array((root ? 0 : parent.length) + 1 + name.length);
  if (!root) out.set(parent, 0);
  out[root ? 0 : parent.length] = SLASH;
  out.set(name, root ? 1 : parent.length + 1);
  return out;
}

/** The directory holding `path` and the last component ("/" and "" for the root). */
export function splitPath(path: Uint8Array): { parent: Uint8Array; name: Uint8Array } {
  const i = path.lastIndexOf(SLASH);
  if (path.length <= 1) return { parent: ROOT_PATH, name: new Uint8Array(0) };
  return { parent: i <= 0 ? ROOT_PATH : path.subarray(0, i), name: path.subarray(i + 1) };
}

function startsWith(b: Uint8Array, prefix: Uint8Array): boolean {
  if (b.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && startsWith(a, b);
}

/**
 * What a normalised path means under OCI whiteout rules: a whiteout of its sibling, the
 * opaque marker of its directory, or an ordinary entry. Other ".wh..wh." names (aufs's own
 * metadata, e.g. ".wh..wh.plnk") and a whiteout naming nothing, '.' or '..' are refused.
 */
export function classifyWhiteout(path: Uint8Array, ctx: EntryContext): { kind: 'whiteout' | 'opaque'; path: Uint8Array } | undefined {
  const { parent, name } = splitPath(path);
  if (!startsWith(name, WHITEOUT_PREFIX)) return undefined;
  if (bytesEqual(name, OPAQUE_MARKER)) return { kind: 'opaque', path: parent };
  const target = name.subarray(WHITEOUT_PREFIX.length);
  if (startsWith(target, WHITEOUT_PREFIX)) throw badEntry(ctx, path, 'a ".wh..wh." name other than the opaque marker ".wh..wh..opq" (aufs metadata) is not an OCI whiteout');
  if (target.length === 0 || (target.length === 1 && target[0] === DOT) || isDotDot(target, 0, target.length)) {
    throw badEntry(ctx, path, 'a whiteout must name a file');
  }
  return { kind: 'whiteout', path: joinPath(parent, target) };
}
