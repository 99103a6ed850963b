/**
 * Extended attributes (ext4 doc, attributes.rst): entries in the inode body after
 * i_extra_isize, and in one shared xattr block (h_refcount counts its users). Also the
 * on-disk POSIX ACL format of system.posix_acl_access/_default ("POSIX ACLs").
 */
import { InternalError, RefusedError } from '../../errors.js';
import { ext4Crc32c, ext4Crc32cU64 } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context, type FsByteReader } from './context.js';
import {
  ACL_GROUP,
  ACL_GROUP_OBJ,
  ACL_MASK,
  ACL_OTHER,
  ACL_USER,
  ACL_USER_OBJ,
  EXT4_ACL_VERSION,
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_XATTR_BLOCK_HEADER_SIZE,
  EXT4_XATTR_ENTRY_HEADER_SIZE,
  EXT4_XATTR_MAGIC,
  EXT4_XATTR_INDEX_SYSTEM,
  XATTR_PREFIXES,
} from './constants.js';
import { bytesEqual, utf8Bytes } from './names.js';

export interface Xattr {
  /** Full name as bytes, prefix included (e.g. `user.foo`, `system.posix_acl_access`); the suffix is any bytes. */
  readonly name: Uint8Array;
  readonly nameIndex: number;
  /** The value as stored (ACLs in the ext4 on-disk format, as `debugfs ea_list` prints them). */
  readonly value: Uint8Array;
  readonly where: 'inode' | 'block';
  /** ea_inode: the value is the content of this inode (`value` is then filled in by Ext4Fs). */
  readonly valueInum?: number;
  /** e_value_size (equals value.length once the value is read). */
  readonly valueSize: number;
  /** e_hash as stored (0 is allowed in the inode body: older kernels and e2fsprogs write it so). */
  readonly e_hash?: number;
  /** e_value_offs as stored: the encoders keep the decoded layout when it is still valid. */
  readonly e_value_offs?: number;
}

/** XATTR_SIZE_MAX of Linux: the largest xattr value (ext4 doc, attributes.rst, ea_inode). */
export const XATTR_SIZE_MAX = 65536;

export interface XattrBlockHeader {
  readonly h_magic: number;
  readonly h_refcount: number;
  readonly h_blocks: number;
  readonly h_hash: number;
  readonly h_checksum: number;
}

const PREFIX_BYTES: Readonly<Record<number, Uint8Array>> = Object.fromEntries(Object.entries(XATTR_PREFIXES).map(([k, v]) => [k, utf8Bytes(v)]));
/** The xattr that holds inline data beyond i_block (ext4 doc, inline_data.rst). */
const SYSTEM_DATA = utf8Bytes('system.data');

/** Whether `x` is system.data, the inline data continued (content, not an attribute). */
export function isInlineDataXattr(x: Xattr): boolean {
  return x.nameIndex === EXT4_XATTR_INDEX_SYSTEM && bytesEqual(x.name, SYSTEM_DATA);
}

function decodeEntries(r: FsByteReader, entriesStart: number, valuesBase: number, end: number, where: 'inode' | 'block', eaInode: boolean): Xattr[] {
  const out: Xattr[] = [];
  let pos = entriesStart;
  for (;;) {
    if (pos + 4 > end) r.fail(pos, 'entry', 'xattr entries run past their area');
    if (r.u32le(pos) === 0) break;
    if (pos + EXT4_XATTR_ENTRY_HEADER_SIZE > end) r.fail(pos, 'entry', 'xattr entry header runs past its area');
    const nameLen = r.u8(pos, 'e_name_len');
    const nameIndex = r.u8(pos + 1, 'e_name_index');
    const valueOffs = r.u16le(pos + 2, 'e_value_offs');
    const valueInum = r.u32le(pos + 4, 'e_value_inum');
    const valueSize = r.u32le(pos + 8, 'e_value_size');
    const e_hash = r.u32le(pos + 12);
    const next = pos + EXT4_XATTR_ENTRY_HEADER_SIZE + ((nameLen + 3) & ~3);
    if (next > end) r.fail(pos, 'e_name_len', 'xattr name runs past its area', { actual: nameLen });
    if (valueInum !== 0 && !eaInode) r.fail(pos + 4, 'e_value_inum', 'xattr value in an inode (ea_inode) without the ea_inode feature', { actual: valueInum });
    if (valueInum !== 0 && valueSize > XATTR_SIZE_MAX) r.fail(pos + 8, 'e_value_size', 'xattr value larger than 64 KiB', { actual: valueSize });
    const vStart = valuesBase + valueOffs;
    if (valueInum === 0 && valueSize > 0 && (vStart < entriesStart || vStart + valueSize > end)) {
      r.fail(pos + 2, 'e_value_offs', 'xattr value outside its area', { expected: `${entriesStart - valuesBase}..${end - valuesBase - valueSize}`, actual: valueOffs });
    }
    // An index without a known prefix (e.g. e2fsprogs' verity tests) is shown bare, as debugfs does.
    const prefix = PREFIX_BYTES[nameIndex] ?? new Uint8Array(0);
    const name = new Uint8Array(prefix.length + nameLen);
    name.set(prefix, 0);
    name.set(r.slice(pos + EXT4_XATTR_ENTRY_HEADER_SIZE, nameLen), prefix.length);
    if (valueInum !== 0) out.push({ name, nameIndex, value: new Uint8Array(0), where, valueInum, valueSize, e_hash, e_value_offs: valueOffs });
    else out.push({ name, nameIndex, value: r.slice(vStart, valueSize).slice(), where, valueSize, e_hash, e_value_offs: valueOffs });
    pos = next;
  }
  return out;
}

/**
 * The xattrs stored in an inode body (after 128 + i_extra_isize). Returns [] when the area
 * does not start with the magic. Throws CORRUPT_IMAGE (entries or values outside the area).
 */
export function decodeInodeXattrs(raw: Uint8Array, extraIsize: number, ctx: Ext4Context, ino: number, deviceOffset: number, opts: { eaInode?: boolean } = {}): Xattr[] {
  const start = EXT4_GOOD_OLD_INODE_SIZE + extraIsize;
  if (raw.length <= EXT4_GOOD_OLD_INODE_SIZE || start + 4 > raw.length) return [];
  const r = fsReader(ctx, raw, `ext4.inode[${ino}].xattr`, deviceOffset);
  if (r.u32le(start) !== EXT4_XATTR_MAGIC) return [];
  // ext4 doc, attributes.rst: in-inode value offsets count from the first entry.
  return decodeEntries(r, start + 4, start + 4, raw.length, 'inode', opts.eaInode ?? false);
}

/**
 * Decodes an xattr block (block number `blockNo`), verifying its magic, h_blocks and,
 * under metadata_csum, its checksum. Throws CORRUPT_IMAGE, BAD_CHECKSUM.
 */
export function decodeXattrBlock(bytes: Uint8Array, blockNo: number, ctx: Ext4Context, opts: { metadataCsum: boolean; csumSeed: number; eaInode?: boolean }): { header: XattrBlockHeader; xattrs: Xattr[] } {
  const off = blockNo * bytes.length;
  const r = fsReader(ctx, bytes, `ext4.xattr_block[${blockNo}]`, off);
  const h_magic = r.u32le(0, 'h_magic');
  if (h_magic !== EXT4_XATTR_MAGIC) r.fail(0, 'h_magic', 'bad xattr block magic', { expected: '0xea020000', actual: `0x${h_magic.toString(16)}` });
  const header: XattrBlockHeader = {
    h_magic,
    h_refcount: r.u32le(4),
    h_blocks: r.u32le(8, 'h_blocks'),
    h_hash: r.u32le(12),
    h_checksum: r.u32le(16),
  };
  if (header.h_blocks !== 1) r.fail(8, 'h_blocks', 'xattr block must span one block', { expected: 1, actual: header.h_blocks });
  if (opts.metadataCsum) checkChecksum(ctx, `ext4.xattr_block[${blockNo}].h_checksum`, off + 16, header.h_checksum, xattrBlockChecksum(opts.csumSeed, blockNo, bytes));
  return { header, xattrs: decodeEntries(r, EXT4_XATTR_BLOCK_HEADER_SIZE, 0, bytes.length, 'block', opts.eaInode ?? false) };
}

/** One POSIX ACL entry. `id` is set for `user` and `group` entries only. */
export interface AclEntry {
  readonly tag: 'user_obj' | 'user' | 'group_obj' | 'group' | 'mask' | 'other';
  readonly perm: number;
  readonly id?: number;
}

const TAGS: Readonly<Record<number, AclEntry['tag']>> = {
  [ACL_USER_OBJ]: 'user_obj',
  [ACL_USER]: 'user',
  [ACL_GROUP_OBJ]: 'group_obj',
  [ACL_GROUP]: 'group',
  [ACL_MASK]: 'mask',
  [ACL_OTHER]: 'other',
};

/**
 * Decodes the ext4 on-disk ACL format (version 1; 4-byte entries, 8 bytes for user and
 * group entries that carry an id). Throws CORRUPT_IMAGE (bad version, unknown tag,
 * truncated entry).
 */
export function decodeAcl(value: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number): AclEntry[] {
  const r = fsReader(ctx, value, structure, deviceOffset);
  const version = r.u32le(0, 'a_version');
  if (version !== EXT4_ACL_VERSION) r.fail(0, 'a_version', 'unknown ACL version', { expected: 1, actual: version });
  const out: AclEntry[] = [];
  let pos = 4;
  while (pos < value.length) {
    const tagNo = r.u16le(pos, 'e_tag');
    const perm = r.u16le(pos + 2, 'e_perm');
    const tag = TAGS[tagNo] ?? r.fail(pos, 'e_tag', 'unknown ACL tag', { actual: tagNo });
    if (tag === 'user' || tag === 'group') {
      out.push({ tag, perm, id: r.u32le(pos + 4, 'e_id') });
      pos += 8;
    } else {
      out.push({ tag, perm });
      pos += 4;
    }
  }
  return out;
}

/**
 * The ACL in the ext4 on-disk format (version 1; 4-byte entries, 8 for `user` and `group`
 * entries with their id), as decodeAcl reads it: what system.posix_acl_access/_default
 * hold on disk. Entries are written in the order given (the kernel keeps them sorted by
 * tag, then id, as posix_acl_valid requires).
 */
export function encodeAcl(entries: readonly AclEntry[]): Uint8Array {
  const tagNo = Object.fromEntries(Object.entries(TAGS).map(([k, t]) => [t, Number(k)])) as Record<AclEntry['tag'], number>;
  const size = entries.reduce((n, e) => n + (e.tag === 'user' || e.tag === 'group' ? 8 : 4), 4);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, EXT4_ACL_VERSION, true);
  let pos = 4;
  for (const e of entries) {
    v.setUint16(pos, tagNo[e.tag], true);
    v.setUint16(pos + 2, e.perm, true);
    if (e.tag === 'user' || e.tag === 'group') {
      v.setUint32(pos + 4, e.id ?? 0, true);
      pos += 8;
    } else {
      pos += 4;
    }
  }
  return out;
}

const permText = (p: number): string => `${p & 4 ? 'r' : '-'}${p & 2 ? 'w' : '-'}${p & 1 ? 'x' : '-'}`;

/** The ACL as getfacl's short text: `user::rw-,user:1000:r--,group::r--,mask::rw-,other::r--`. */
export function formatAcl(entries: readonly AclEntry[]): string {
  return entries
    .map((e) => {
      const kind = e.tag.startsWith('user') ? 'user' : e.tag.startsWith('group') ? 'group' : e.tag;
      return `${kind}:${e.id ?? ''}:${permText(e.perm)}`;
    })
    .join(',');
}

/**
 * The ACL in the Linux xattr format (version 2, 8-byte entries, id 0 where there is none):
 * what getxattr(2) and `debugfs ea_get` return.
 */
export function decodePosixAclXattr(value: Uint8Array): AclEntry[] | undefined {
  // Linux's posix_acl_xattr (what getfattr, tar's PAX records and setxattr(2) carry): version 2, then 8-byte entries.
  if (value.length < 4 || (value.length - 4) % 8 !== 0) return undefined;
  const v = new DataView(value.buffer, value.byteOffset, value.length);
  if (v.getUint32(0, true) !== 2) return undefined;
  const out: AclEntry[] = [];
  for (let pos = 4; pos < value.length; pos += 8) {
    const tag = TAGS[v.getUint16(pos, true)];
    if (tag === undefined) return undefined;
    const perm = v.getUint16(pos + 2, true);
    out.push(tag === 'user' || tag === 'group' ? { tag, perm, id: v.getUint32(pos + 4, true) } : { tag, perm });
  }
  return out;
}

/** The inverse of decodePosixAclXattr: the ACL as Linux passes it through setxattr(2). */
export function encodePosixAclXattr(entries: readonly AclEntry[]): Uint8Array {
  const out = new Uint8Array(4 + entries.length * 8);
  const v = new DataView(out.buffer);
  v.setUint32(0, 2, true);
  const tagNo = Object.fromEntries(Object.entries(TAGS).map(([k, t]) => [t, Number(k)])) as Record<AclEntry['tag'], number>;
  entries.forEach((e, i) => {
    v.setUint16(4 + i * 8, tagNo[e.tag], true);
    v.setUint16(6 + i * 8, e.perm, true);
    v.setUint32(8 + i * 8, e.id ?? 0, true);
  });
  return out;
}

/** An xattr to encode: its full name (prefix included) and value; e_hash 0 keeps a zero hash in the inode body. */
export interface XattrEntry {
  readonly name: Uint8Array;
  readonly value: Uint8Array;
  /** As decoded. In the inode body a stored 0 stays 0 (e2fsck accepts it there); otherwise the hash is computed. */
  readonly e_hash?: number;
  /** e_name_index as decoded: kept (with its prefix taken off the name) even for an index without a known prefix. Default: from the name. */
  readonly nameIndex?: number;
  /** e_value_offs as decoded: kept when every entry has one and they still form a valid layout (see layOut). */
  readonly e_value_offs?: number;
}

/**
 * Name prefixes by decreasing specificity, as the kernel and e2fsprogs match them: the
 * ACL names before `system.`, which they start with.
 */
const PREFIX_ORDER: ReadonlyArray<[number, Uint8Array]> = [3, 2, 8, 6, 4, 7, 1].map((i) => [i, PREFIX_BYTES[i]!]);

/** e_name_index and the stored name suffix of a full name (index 0 and the whole name when no prefix matches). */
export function splitXattrName(name: Uint8Array): { index: number; suffix: Uint8Array } {
  for (const [index, p] of PREFIX_ORDER) {
    if (name.length >= p.length && bytesEqual(name.subarray(0, p.length), p)) return { index, suffix: name.subarray(p.length) };
  }
  return { index: 0, suffix: name };
}

const pad4 = (n: number): number => (n + 3) & ~3;
const rotl = (h: number, s: number): number => ((h << s) | (h >>> (32 - s))) >>> 0;

/**
 * e_hash of an entry as the kernel's ext4_xattr_hash_entry computes it (attributes.rst):
 * the stored name suffix byte by byte (unsigned), then the value as little-endian 32-bit
 * words, zero-padded to 4 bytes.
 */
export function xattrEntryHash(suffix: Uint8Array, value: Uint8Array): number {
  let h = 0;
  for (let i = 0; i < suffix.length; i++) h = (rotl(h, 5) ^ suffix[i]!) >>> 0;
  for (let i = 0; i < value.length; i += 4) {
    const w = (value[i] ?? 0) | ((value[i + 1] ?? 0) << 8) | ((value[i + 2] ?? 0) << 16) | ((value[i + 3] ?? 0) << 24);
    h = (rotl(h, 16) ^ w) >>> 0;
  }
  return h;
}

/** h_hash of an xattr block from its entries' hashes, as ext4_xattr_rehash: 0 if any entry hash is 0. */
export function xattrBlockHash(entryHashes: readonly number[]): number {
  let h = 0;
  for (const e of entryHashes) {
    if (e === 0) return 0;
    h = (rotl(h, 16) ^ e) >>> 0;
  }
  return h;
}

interface PreparedEntry {
  readonly index: number;
  readonly suffix: Uint8Array;
  readonly value: Uint8Array;
  readonly keepZeroHash: boolean;
  readonly offs: number | undefined;
}

/** The index and suffix of an entry: its own nameIndex when it has one whose prefix the name carries. */
function indexAndSuffix(e: XattrEntry): { index: number; suffix: Uint8Array } {
  if (e.nameIndex !== undefined && e.nameIndex >= 0 && e.nameIndex <= 255) {
    const p = PREFIX_BYTES[e.nameIndex] ?? new Uint8Array(0);
    if (e.name.length >= p.length && bytesEqual(e.name.subarray(0, p.length), p)) return { index: e.nameIndex, suffix: e.name.subarray(p.length) };
  }
  return splitXattrName(e.name);
}

function prepare(entries: readonly XattrEntry[]): PreparedEntry[] {
  return entries.map((e) => {
    const { index, suffix } = indexAndSuffix(e);
    if (suffix.length > 255) throw new RefusedError('BAD_UPDATE', { structure: 'ext4.xattr', detail: 'xattr name longer than 255 bytes after its prefix', actual: suffix.length });
    if (e.value.length > XATTR_SIZE_MAX) throw new RefusedError('BAD_UPDATE', { structure: 'ext4.xattr', detail: 'xattr value larger than 64 KiB', actual: e.value.length });
    return { index, suffix, value: e.value, keepZeroHash: e.e_hash === 0, offs: e.e_value_offs };
  });
}

/** Bytes the entries take: entry headers with padded names, the 4-byte terminator, values padded to 4. */
function spaceNeeded(p: readonly PreparedEntry[]): number {
  let n = 4;
  for (const e of p) n += EXT4_XATTR_ENTRY_HEADER_SIZE + pad4(e.suffix.length) + pad4(e.value.length);
  return n;
}

/** Whether `entries` fit in an inode body xattr area of `areaSize` bytes (inode_size - 128 - i_extra_isize), magic included. */
export function xattrsFitInInode(entries: readonly XattrEntry[], areaSize: number): boolean {
  return entries.length === 0 || 4 + spaceNeeded(prepare(entries)) <= areaSize;
}

/** Whether `entries` fit in one xattr block of `blockSize` bytes, header included. */
export function xattrsFitInBlock(entries: readonly XattrEntry[], blockSize: number): boolean {
  return EXT4_XATTR_BLOCK_HEADER_SIZE + spaceNeeded(prepare(entries)) <= blockSize;
}

/**
 * The value offsets given with the entries (as decoded), if they still form a valid
 * layout: every value 4-byte aligned, after the entries and their terminator, inside the
 * area, none overlapping. Layouts differ by writer (the kernel places each new value
 * below the lowest one, e2fsprogs in entry order), so keeping them makes decode-encode
 * lossless for both.
 */
function givenOffsets(p: readonly PreparedEntry[], start: number, end: number, valuesBase: number): number[] | undefined {
  if (p.length === 0 || p.some((e) => e.offs === undefined)) return undefined;
  let entriesEnd = start;
  for (const e of p) entriesEnd += EXT4_XATTR_ENTRY_HEADER_SIZE + pad4(e.suffix.length);
  const spans: Array<[number, number]> = [];
  for (const e of p) {
    if (e.value.length === 0) continue;
    const at = valuesBase + e.offs!;
    if (at % 4 !== (valuesBase % 4) || at < entriesEnd + 4 || at + pad4(e.value.length) > end) return undefined;
    spans.push([at, at + pad4(e.value.length)]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) if (spans[i]![0] < spans[i - 1]![1]) return undefined;
  return p.map((e) => (e.value.length === 0 ? (e.offs! <= end - valuesBase ? e.offs! : 0) : e.offs!));
}

/**
 * Lays out entries from `start` and values down from `end` of `out`, each value 4-byte
 * aligned and zero-padded, in entry order (as e2fsprogs lays them out), unless the
 * entries bring a valid layout of their own (givenOffsets); value offsets count from
 * `valuesBase`, an empty value's is 0. Returns the entry hashes written.
 */
function layOut(out: Uint8Array, p: readonly PreparedEntry[], start: number, end: number, valuesBase: number, hashZeroAllowed: boolean): number[] {
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const kept = givenOffsets(p, start, end, valuesBase);
  let pos = start;
  let valueEnd = end;
  const hashes: number[] = [];
  p.forEach((e, i) => {
    let offs: number;
    if (kept !== undefined) {
      offs = kept[i]!;
      if (e.value.length > 0) out.set(e.value, valuesBase + offs);
    } else {
      valueEnd -= pad4(e.value.length);
      out.set(e.value, valueEnd);
      offs = e.value.length === 0 ? 0 : valueEnd - valuesBase;
    }
    out[pos] = e.suffix.length;
    out[pos + 1] = e.index;
    v.setUint16(pos + 2, offs, true);
    v.setUint32(pos + 4, 0, true);
    v.setUint32(pos + 8, e.value.length, true);
    const h = hashZeroAllowed && e.keepZeroHash ? 0 : xattrEntryHash(e.suffix, e.value);
    v.setUint32(pos + 12, h, true);
    out.set(e.suffix, pos + EXT4_XATTR_ENTRY_HEADER_SIZE);
    hashes.push(h);
    pos += EXT4_XATTR_ENTRY_HEADER_SIZE + pad4(e.suffix.length);
  });
  return hashes;
}

/**
 * The inode body's xattr area (`areaSize` bytes after 128 + i_extra_isize; ext4 doc,
 * attributes.rst): the magic, the entries in the order given (the kernel does not sort
 * the inode body), the values from the area's end, offsets counted from the first
 * entry, each entry's e_hash (kept 0 where the entry says so). No entries: all zeros.
 * Throws InternalError if they do not fit, BAD_UPDATE for a name or value ext4 cannot hold.
 */
export function encodeInodeXattrs(entries: readonly XattrEntry[], areaSize: number): Uint8Array {
  const out = new Uint8Array(areaSize);
  if (entries.length === 0) return out;
  const p = prepare(entries);
  if (4 + spaceNeeded(p) > areaSize) throw new InternalError('xattrs do not fit the inode body (check with xattrsFitInInode first)', { structure: 'ext4.xattr', actual: 4 + spaceNeeded(p), expected: `<= ${areaSize}` });
  new DataView(out.buffer).setUint32(0, EXT4_XATTR_MAGIC, true);
  layOut(out, p, 4, areaSize, 4, true);
  return out;
}

/** Orders xattr block entries as the kernel keeps them (ext4_xattr_find_entry, sorted): by name index, name length, then name bytes. */
function compareBlockEntries(a: PreparedEntry, b: PreparedEntry): number {
  if (a.index !== b.index) return a.index - b.index;
  if (a.suffix.length !== b.suffix.length) return a.suffix.length - b.suffix.length;
  for (let i = 0; i < a.suffix.length; i++) if (a.suffix[i] !== b.suffix[i]) return a.suffix[i]! - b.suffix[i]!;
  return 0;
}

/**
 * An xattr block (ext4 doc, attributes.rst): header (magic, h_refcount, h_blocks = 1,
 * h_hash from the entry hashes as ext4_xattr_rehash, crc32c h_checksum seeded with the
 * block number when metadataCsum), entries sorted by (name index, name length, name),
 * values from the block's end 4-byte aligned, offsets from the block start, every
 * e_hash computed. `zeroBlockHash` writes h_hash 0 instead, as e2fsprogs does (valid: the
 * kernel then never shares the block through its mbcache). Throws InternalError if they do not fit, BAD_UPDATE for a name or
 * value ext4 cannot hold.
 */
export function encodeXattrBlock(
  entries: readonly XattrEntry[],
  opts: { refcount: number; blockNo: number; seed: number; metadataCsum: boolean; blockSize: number; zeroBlockHash?: boolean },
): Uint8Array {
  const out = new Uint8Array(opts.blockSize);
  const v = new DataView(out.buffer);
  const p = prepare(entries).sort(compareBlockEntries);
  if (EXT4_XATTR_BLOCK_HEADER_SIZE + spaceNeeded(p) > opts.blockSize) {
    throw new InternalError('xattrs do not fit one block (check with xattrsFitInBlock first)', { structure: `ext4.xattr_block[${opts.blockNo}]`, actual: EXT4_XATTR_BLOCK_HEADER_SIZE + spaceNeeded(p), expected: `<= ${opts.blockSize}` });
  }
  for (let i = 1; i < p.length; i++) {
    if (compareBlockEntries(p[i - 1]!, p[i]!) === 0) throw new InternalError('duplicate xattr name', { structure: `ext4.xattr_block[${opts.blockNo}]` });
  }
  const hashes = layOut(out, p, EXT4_XATTR_BLOCK_HEADER_SIZE, opts.blockSize, 0, false);
  v.setUint32(0, EXT4_XATTR_MAGIC, true);
  v.setUint32(4, opts.refcount, true);
  v.setUint32(8, 1, true);
  v.setUint32(12, opts.zeroBlockHash ? 0 : xattrBlockHash(hashes), true);
  if (opts.metadataCsum) v.setUint32(16, xattrBlockChecksum(opts.seed, opts.blockNo, out), true);
  return out;
}

/**
 * h_checksum of an xattr block (ext4 doc, attributes.rst): crc32c seeded with the
 * filesystem seed, over the block number (64-bit) and the block with h_checksum zeroed.
 * So a block moved elsewhere needs a new checksum.
 */
export function xattrBlockChecksum(csumSeed: number, blockNo: number, block: Uint8Array): number {
  const z = block.slice();
  z.fill(0, 16, 20);
  return ext4Crc32c(ext4Crc32cU64(csumSeed, blockNo), z);
}
