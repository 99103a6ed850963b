/**
 * Extended attributes (ext4 doc, attributes.rst): entries in the inode body after
 * i_extra_isize, and in one shared xattr block (h_refcount counts its users). Also the
 * on-disk POSIX ACL format of system.posix_acl_access/_default ("POSIX ACLs").
 */
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
    if (valueInum !== 0) out.push({ name, nameIndex, value: new Uint8Array(0), where, valueInum, valueSize });
    else out.push({ name, nameIndex, value: r.slice(vStart, valueSize).slice(), where, valueSize });
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
  if (opts.metadataCsum) {
    const z = bytes.slice();
    z.fill(0, 16, 20);
    checkChecksum(ctx, `ext4.xattr_block[${blockNo}].h_checksum`, off + 16, header.h_checksum, ext4Crc32c(ext4Crc32cU64(opts.csumSeed, blockNo), z));
  }
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
