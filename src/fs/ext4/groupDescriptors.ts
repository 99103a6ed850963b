/**
 * Block group descriptors (ext4 doc, group_descr.rst) and where each group's copies of
 * the superblock and descriptor table sit (ext4 doc, blockgroup.rst: sparse_super,
 * sparse_super2, meta_bg, resize_inode's reserved GDT blocks).
 */
import { InternalError } from '../../errors.js';
import { crc16, ext4Crc32c, ext4Crc32cU32 } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context } from './context.js';
import {
  EXT4_FEATURE_COMPAT_SPARSE_SUPER2,
  EXT4_FEATURE_INCOMPAT_64BIT,
  EXT4_FEATURE_INCOMPAT_META_BG,
  EXT4_FEATURE_RO_COMPAT_GDT_CSUM,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_FEATURE_RO_COMPAT_SPARSE_SUPER,
} from './constants.js';
import type { Superblock } from './superblock.js';

/** One group descriptor, lo/hi halves combined, with the spec's names. */
export interface GroupDescriptor {
  readonly bg_block_bitmap: number;
  readonly bg_inode_bitmap: number;
  readonly bg_inode_table: number;
  readonly bg_free_blocks_count: number;
  readonly bg_free_inodes_count: number;
  readonly bg_used_dirs_count: number;
  readonly bg_flags: number;
  readonly bg_exclude_bitmap: number;
  readonly bg_block_bitmap_csum: number;
  readonly bg_inode_bitmap_csum: number;
  readonly bg_itable_unused: number;
  readonly bg_checksum: number;
  /** The descriptor's bytes as read (a copy): what encodeGroupDescriptor keeps of the fields not modelled here. */
  readonly raw?: Uint8Array;
}

/** Whether group checksums of either kind (gdt_csum or metadata_csum) are in use. */
export function hasGroupChecksums(sb: Superblock): boolean {
  return (sb.s_feature_ro_compat & (EXT4_FEATURE_RO_COMPAT_GDT_CSUM | EXT4_FEATURE_RO_COMPAT_METADATA_CSUM)) !== 0;
}

/** The checksum a group descriptor should carry (ext4 doc, group_descr.rst: bg_checksum). */
export function groupDescriptorChecksum(sb: Superblock, group: number, desc: Uint8Array): number {
  const zeroed = desc.slice();
  zeroed[0x1e] = 0;
  zeroed[0x1f] = 0;
  if (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) {
    return ext4Crc32c(ext4Crc32cU32(sb.csumSeed, group), zeroed) & 0xffff;
  }
  // gdt_csum: crc16 over uuid, group number, then the descriptor without its checksum field.
  let c = crc16(0xffff, sb.s_uuid);
  const g = new Uint8Array(4);
  new DataView(g.buffer).setUint32(0, group, true);
  c = crc16(c, g);
  c = crc16(c, desc.subarray(0, 0x1e));
  if ((sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_64BIT) !== 0 && desc.length > 0x20) c = crc16(c, desc.subarray(0x20));
  return c;
}

/**
 * Decodes the descriptor of `group` from its `sb.descSize` bytes read at device byte
 * `deviceOffset`, verifying its checksum. Throws BAD_CHECKSUM, CORRUPT_IMAGE (a bitmap
 * or inode table outside the filesystem or overlapping the group's own superblock copy).
 */
export function decodeGroupDescriptor(bytes: Uint8Array, group: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number): GroupDescriptor {
  const r = fsReader(ctx, bytes, `ext4.group_desc[${group}]`, deviceOffset);
  const big = sb.descSize >= 64;
  const hi32 = (off: number): number => (big ? r.u32le(off) * 2 ** 32 : 0);
  const hi16 = (off: number): number => (big ? r.u16le(off) * 65536 : 0);
  const d: GroupDescriptor = {
    bg_block_bitmap: r.u32le(0x00) + hi32(0x20),
    bg_inode_bitmap: r.u32le(0x04) + hi32(0x24),
    bg_inode_table: r.u32le(0x08) + hi32(0x28),
    bg_free_blocks_count: r.u16le(0x0c) + hi16(0x2c),
    bg_free_inodes_count: r.u16le(0x0e) + hi16(0x2e),
    bg_used_dirs_count: r.u16le(0x10) + hi16(0x30),
    bg_flags: r.u16le(0x12),
    bg_exclude_bitmap: r.u32le(0x14) + hi32(0x34),
    bg_block_bitmap_csum: r.u16le(0x18) + hi16(0x38),
    bg_inode_bitmap_csum: r.u16le(0x1a) + hi16(0x3a),
    bg_itable_unused: r.u16le(0x1c) + hi16(0x32),
    bg_checksum: r.u16le(0x1e),
    raw: bytes.slice(0, sb.descSize),
  };
  if (hasGroupChecksums(sb)) {
    checkChecksum(ctx, `ext4.group_desc[${group}].bg_checksum`, deviceOffset + 0x1e, d.bg_checksum, groupDescriptorChecksum(sb, group, bytes));
  }
  const itableBlocks = Math.ceil((sb.s_inodes_per_group * sb.s_inode_size) / sb.blockSize);
  const check = (field: 'bg_block_bitmap' | 'bg_inode_bitmap' | 'bg_inode_table', off: number, len: number): void => {
    const v = d[field];
    if (v < sb.s_first_data_block || v + len > sb.s_blocks_count) {
      r.fail(off, field, 'block outside the filesystem', { expected: `${sb.s_first_data_block}..${sb.s_blocks_count - len}`, actual: v });
    }
  };
  check('bg_block_bitmap', 0x00, 1);
  check('bg_inode_bitmap', 0x04, 1);
  check('bg_inode_table', 0x08, itableBlocks);
  return d;
}

/**
 * The `sb.descSize` bytes of group `group`'s descriptor (ext4 doc, group_descr.rst): lo
 * halves at 0x00..0x1f, hi halves at 0x20..0x3f in 64-byte descriptors, starting from
 * `gd.raw` so bytes not modelled here (bg_exclude_bitmap_hi's neighbours, reserved words)
 * are kept, and bg_checksum set (crc16 under gdt_csum, crc32c under metadata_csum; as
 * given without either). Throws InternalError for a value the descriptor cannot hold
 * (e.g. a block number above 2^32 in a 32-byte descriptor).
 */
export function encodeGroupDescriptor(gd: GroupDescriptor, group: number, sb: Superblock): Uint8Array {
  const size = sb.descSize;
  const big = size >= 64;
  const out = new Uint8Array(size);
  if (gd.raw !== undefined) out.set(gd.raw.subarray(0, size));
  const v = new DataView(out.buffer);
  const split = (field: keyof GroupDescriptor, loOff: number, hiOff: number, loBits: 16 | 32): void => {
    const x = gd[field] as number;
    const max = big ? 2 ** (loBits * 2) - 1 : 2 ** loBits - 1;
    if (!Number.isSafeInteger(x) || x < 0 || x > max) {
      throw new InternalError('group descriptor field out of range for encoding', { structure: `ext4.group_desc[${group}]`, field, actual: x, expected: `0..${max}` });
    }
    const lo = x % 2 ** loBits;
    const hi = Math.floor(x / 2 ** loBits);
    if (loBits === 32) {
      v.setUint32(loOff, lo, true);
      if (big) v.setUint32(hiOff, hi, true);
    } else {
      v.setUint16(loOff, lo, true);
      if (big) v.setUint16(hiOff, hi, true);
    }
  };
  split('bg_block_bitmap', 0x00, 0x20, 32);
  split('bg_inode_bitmap', 0x04, 0x24, 32);
  split('bg_inode_table', 0x08, 0x28, 32);
  split('bg_free_blocks_count', 0x0c, 0x2c, 16);
  split('bg_free_inodes_count', 0x0e, 0x2e, 16);
  split('bg_used_dirs_count', 0x10, 0x30, 16);
  v.setUint16(0x12, gd.bg_flags & 0xffff, true);
  split('bg_exclude_bitmap', 0x14, 0x34, 32);
  split('bg_block_bitmap_csum', 0x18, 0x38, 16);
  split('bg_inode_bitmap_csum', 0x1a, 0x3a, 16);
  split('bg_itable_unused', 0x1c, 0x32, 16);
  v.setUint16(0x1e, hasGroupChecksums(sb) ? groupDescriptorChecksum(sb, group, out) : gd.bg_checksum & 0xffff, true);
  return out;
}

/** ext4 doc, blockgroup.rst: does group `g` hold a superblock copy (and, without meta_bg, a GDT copy)? */
export function groupHasSuper(sb: Superblock, g: number): boolean {
  if (g === 0) return true;
  if (sb.s_feature_compat & EXT4_FEATURE_COMPAT_SPARSE_SUPER2) return g === sb.s_backup_bgs[0] || g === sb.s_backup_bgs[1];
  if (g <= 1 || !(sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_SPARSE_SUPER)) return true;
  if (!(g & 1)) return false;
  const isPow = (n: number, b: number): boolean => {
    let x = b;
    while (x < n) x *= b;
    return x === n;
  };
  return isPow(g, 3) || isPow(g, 5) || isPow(g, 7);
}

/** Groups whose descriptors fill one descriptor block. */
export function descriptorsPerBlock(sb: Superblock): number {
  return sb.blockSize / sb.descSize;
}

/** Blocks the whole descriptor table takes. */
export function descriptorBlockCount(sb: Superblock): number {
  return Math.ceil(sb.groupCount / descriptorsPerBlock(sb));
}

/** First block of group `g`. */
export function groupFirstBlock(sb: Superblock, g: number): number {
  return sb.s_first_data_block + g * sb.s_blocks_per_group;
}

/** Blocks in group `g` (the last group may be short). */
export function groupBlockCount(sb: Superblock, g: number): number {
  return Math.min(sb.s_blocks_per_group, sb.s_blocks_count - groupFirstBlock(sb, g));
}

/**
 * Device block of the primary copy of descriptor block `i` (ext4 doc, blockgroup.rst):
 * right after the primary superblock, or, with meta_bg and i >= s_first_meta_bg, in the
 * first group of its meta group (after that group's superblock copy, if any).
 */
export function descriptorBlockLocation(sb: Superblock, i: number): number {
  const metaBg = (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_META_BG) !== 0;
  if (!metaBg || i < sb.s_first_meta_bg) return sb.s_first_data_block + 1 + i;
  const g = i * descriptorsPerBlock(sb);
  return groupFirstBlock(sb, g) + (groupHasSuper(sb, g) ? 1 : 0);
}

/** A run of blocks with a role in a group's fixed layout. */
export interface GroupMetaRun {
  readonly block: number;
  readonly count: number;
  readonly role: 'superblock' | 'group descriptors' | 'reserved GDT';
}

/**
 * The superblock, descriptor and reserved-GDT copies that group `g` holds, as e2fsprogs'
 * ext2fs_super_and_bgd_loc2 places them.
 */
export function groupSuperAndDescriptors(sb: Superblock, g: number): GroupMetaRun[] {
  const out: GroupMetaRun[] = [];
  const start = groupFirstBlock(sb, g);
  const hasSuper = groupHasSuper(sb, g);
  const metaBg = (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_META_BG) !== 0;
  const oldDescBlocks = metaBg ? sb.s_first_meta_bg : descriptorBlockCount(sb);
  if (hasSuper) {
    // With 1 KiB blocks group 0 starts at block 1 and block 0 is the boot block (reported separately).
    out.push({ block: start, count: 1, role: 'superblock' });
    if (oldDescBlocks > 0) out.push({ block: start + 1, count: oldDescBlocks, role: 'group descriptors' });
    if (!metaBg && sb.s_reserved_gdt_blocks > 0) {
      out.push({ block: start + 1 + oldDescBlocks, count: sb.s_reserved_gdt_blocks, role: 'reserved GDT' });
    }
  }
  if (metaBg) {
    const per = descriptorsPerBlock(sb);
    const metaGroup = Math.floor(g / per);
    const pos = g % per;
    if (metaGroup >= sb.s_first_meta_bg && (pos === 0 || pos === 1 || pos === per - 1)) {
      out.push({ block: start + (hasSuper ? 1 : 0), count: 1, role: 'group descriptors' });
    }
  }
  return out;
}
