/**
 * The ext4 superblock (ext4 doc, super.rst): decoded at the spec's offsets, validated
 * before any field is used (magic, sizes, counts, feature bits, checksum).
 */
import { InternalError, UnsupportedError } from '../../errors.js';
import { ext4Crc32c } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context } from './context.js';
import {
  EXT4_CRC32C_CHKSUM,
  EXT4_FEATURE_INCOMPAT_64BIT,
  EXT4_FEATURE_INCOMPAT_CSUM_SEED,
  EXT4_FEATURE_INCOMPAT_META_BG,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_GOOD_OLD_FIRST_INO,
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_MAX_DESC_SIZE,
  EXT4_MIN_DESC_SIZE,
  EXT4_MIN_DESC_SIZE_64BIT,
  EXT4_SUPERBLOCK_OFFSET,
  EXT4_SUPERBLOCK_SIZE,
  EXT4_SUPER_MAGIC,
  COMPAT_NAMES,
  INCOMPAT_NAMES,
  RO_COMPAT_NAMES,
  SUPPORTED_INCOMPAT,
  UNSUPPORTED_RO_COMPAT,
} from './constants.js';

/** The superblock fields this project uses, with the spec's names. */
export interface Superblock {
  readonly s_inodes_count: number;
  readonly s_blocks_count: number;
  readonly s_r_blocks_count: number;
  readonly s_free_blocks_count: number;
  readonly s_free_inodes_count: number;
  readonly s_first_data_block: number;
  readonly s_log_block_size: number;
  readonly s_log_cluster_size: number;
  readonly s_blocks_per_group: number;
  readonly s_clusters_per_group: number;
  readonly s_inodes_per_group: number;
  readonly s_mtime: number;
  readonly s_wtime: number;
  readonly s_magic: number;
  readonly s_state: number;
  readonly s_errors: number;
  readonly s_minor_rev_level: number;
  readonly s_creator_os: number;
  readonly s_rev_level: number;
  readonly s_first_ino: number;
  readonly s_inode_size: number;
  readonly s_block_group_nr: number;
  readonly s_feature_compat: number;
  readonly s_feature_incompat: number;
  readonly s_feature_ro_compat: number;
  readonly s_uuid: Uint8Array;
  readonly s_volume_name: string;
  readonly s_reserved_gdt_blocks: number;
  readonly s_journal_inum: number;
  readonly s_journal_dev: number;
  readonly s_last_orphan: number;
  readonly s_hash_seed: readonly number[];
  readonly s_def_hash_version: number;
  readonly s_desc_size: number;
  readonly s_first_meta_bg: number;
  readonly s_mkfs_time: number;
  readonly s_min_extra_isize: number;
  readonly s_want_extra_isize: number;
  readonly s_flags: number;
  readonly s_log_groups_per_flex: number;
  readonly s_checksum_type: number;
  readonly s_backup_bgs: readonly [number, number];
  readonly s_checksum_seed: number;
  readonly s_encoding: number;
  readonly s_orphan_file_inum: number;
  readonly s_checksum: number;
  /** s_kbytes_written: KiB written over the filesystem's lifetime. */
  readonly s_kbytes_written: number;
  /** The 1024 bytes as read (a copy): what encodeSuperblock keeps of the fields not modelled here. */
  readonly raw: Uint8Array;
  /** Derived: bytes per block. */
  readonly blockSize: number;
  /** Derived: number of block groups. */
  readonly groupCount: number;
  /** Derived: bytes per group descriptor (32 without 64bit). */
  readonly descSize: number;
  /** Derived: the metadata_csum seed (s_checksum_seed or crc32c(~0, s_uuid)). */
  readonly csumSeed: number;
}

const LOG_BLOCK_SIZE_MAX = 6; // 1024 << 6 = 64 KiB, the largest block size ext4 allows (super.rst).

function featureNames(bits: number, names: Readonly<Record<number, string>>): string[] {
  const out: string[] = [];
  for (let b = 0; b < 32; b++) {
    const bit = (1 << b) >>> 0;
    if (bits & bit) out.push(names[bit] ?? `FEATURE_0x${bit.toString(16)}`);
  }
  return out;
}

/** dumpe2fs-style names of all feature bits set in a superblock. */
export function superblockFeatures(sb: Superblock): string[] {
  return [
    ...featureNames(sb.s_feature_compat, COMPAT_NAMES),
    ...featureNames(sb.s_feature_incompat, INCOMPAT_NAMES),
    ...featureNames(sb.s_feature_ro_compat, RO_COMPAT_NAMES),
  ];
}

/** Reads s_magic from raw superblock bytes, to tell whether a device holds ext2/3/4 at all. */
export function hasExt4Magic(bytes: Uint8Array): boolean {
  return bytes.length >= 0x3a && (bytes[0x38]! | (bytes[0x39]! << 8)) === EXT4_SUPER_MAGIC;
}

/**
 * Decodes and validates the 1024 superblock bytes read from device byte 1024.
 * Throws CORRUPT_IMAGE (bad magic, impossible sizes or counts), UNSUPPORTED_FEATURE
 * (an incompatible feature we cannot read, named in `data.feature`), BAD_CHECKSUM
 * (metadata_csum mismatch, unless ctx.verifyChecksums is 'warn').
 */
export function decodeSuperblock(bytes: Uint8Array, ctx: Ext4Context): Superblock {
  const base = EXT4_SUPERBLOCK_OFFSET;
  const r = fsReader(ctx, bytes, 'ext4.superblock', base);
  if (bytes.length < EXT4_SUPERBLOCK_SIZE) r.u8(EXT4_SUPERBLOCK_SIZE - 1, 'size');
  const s_magic = r.u16le(0x38, 's_magic');
  if (s_magic !== EXT4_SUPER_MAGIC) {
    r.fail(0x38, 's_magic', 'not an ext2/3/4 filesystem', { expected: '0xef53', actual: `0x${s_magic.toString(16)}` });
  }
  const s_rev_level = r.u32le(0x4c, 's_rev_level');
  if (s_rev_level > 1) r.fail(0x4c, 's_rev_level', 'unknown revision level', { expected: '0 or 1', actual: s_rev_level });
  const dynamic = s_rev_level >= 1;
  const s_feature_compat = dynamic ? r.u32le(0x5c) : 0;
  const s_feature_incompat = dynamic ? r.u32le(0x60) : 0;
  const s_feature_ro_compat = dynamic ? r.u32le(0x64) : 0;

  const unsupportedIncompat = s_feature_incompat & ~SUPPORTED_INCOMPAT;
  if (unsupportedIncompat !== 0) {
    const names = featureNames(unsupportedIncompat, INCOMPAT_NAMES);
    throw new UnsupportedError('UNSUPPORTED_FEATURE', {
      ...r.at(0x60, 's_feature_incompat'),
      feature: names[0],
      features: names,
      detail: `incompatible feature${names.length > 1 ? 's' : ''} ${names.join(', ')} not supported`,
    });
  }
  if (s_feature_ro_compat & UNSUPPORTED_RO_COMPAT) {
    const names = featureNames(s_feature_ro_compat & UNSUPPORTED_RO_COMPAT, RO_COMPAT_NAMES);
    throw new UnsupportedError('UNSUPPORTED_FEATURE', {
      ...r.at(0x64, 's_feature_ro_compat'),
      feature: names[0],
      features: names,
      detail: `feature ${names.join(', ')} not supported`,
    });
  }

  const metadataCsum = (s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  const s_checksum_type = r.u8(0x175);
  const s_checksum = r.u32le(0x3fc);
  if (metadataCsum) {
    if (s_checksum_type !== EXT4_CRC32C_CHKSUM) {
      r.fail(0x175, 's_checksum_type', 'unknown checksum type', { expected: EXT4_CRC32C_CHKSUM, actual: s_checksum_type });
    }
    checkChecksum(ctx, 'ext4.superblock.s_checksum', base + 0x3fc, s_checksum, ext4Crc32c(0xffffffff, bytes.subarray(0, 0x3fc)));
  }

  const s_log_block_size = r.u32le(0x18, 's_log_block_size');
  if (s_log_block_size > LOG_BLOCK_SIZE_MAX) {
    r.fail(0x18, 's_log_block_size', 'block size above 64 KiB', { actual: s_log_block_size });
  }
  const blockSize = 1024 << s_log_block_size;
  const s_blocks_count_lo = r.u32le(0x04);
  const is64 = (s_feature_incompat & EXT4_FEATURE_INCOMPAT_64BIT) !== 0;
  const hi = (off: number): number => (is64 ? r.u32le(off) : 0);
  const s_blocks_count = s_blocks_count_lo + hi(0x150) * 2 ** 32;
  const s_first_data_block = r.u32le(0x14, 's_first_data_block');
  if (s_first_data_block !== (blockSize === 1024 ? 1 : 0)) {
    r.fail(0x14, 's_first_data_block', 'wrong first data block for the block size', {
      expected: blockSize === 1024 ? 1 : 0,
      actual: s_first_data_block,
    });
  }
  if (s_blocks_count <= s_first_data_block || !Number.isSafeInteger(s_blocks_count * blockSize)) {
    r.fail(0x04, 's_blocks_count', 'impossible block count', { actual: s_blocks_count });
  }
  const s_blocks_per_group = r.u32le(0x20, 's_blocks_per_group');
  if (s_blocks_per_group === 0 || s_blocks_per_group > blockSize * 8) {
    r.fail(0x20, 's_blocks_per_group', 'blocks per group out of range', { expected: `1..${blockSize * 8}`, actual: s_blocks_per_group });
  }
  const s_inodes_per_group = r.u32le(0x28, 's_inodes_per_group');
  if (s_inodes_per_group === 0 || s_inodes_per_group > blockSize * 8) {
    r.fail(0x28, 's_inodes_per_group', 'inodes per group out of range', { expected: `1..${blockSize * 8}`, actual: s_inodes_per_group });
  }
  const groupCount = Math.ceil((s_blocks_count - s_first_data_block) / s_blocks_per_group);
  const s_inodes_count = r.u32le(0x00, 's_inodes_count');
  if (s_inodes_count > s_inodes_per_group * groupCount || s_inodes_count < EXT4_GOOD_OLD_FIRST_INO) {
    r.fail(0x00, 's_inodes_count', 'inode count does not match the groups', {
      expected: `<= ${s_inodes_per_group * groupCount}`,
      actual: s_inodes_count,
    });
  }
  const s_inode_size = dynamic ? r.u16le(0x58, 's_inode_size') : EXT4_GOOD_OLD_INODE_SIZE;
  if (s_inode_size < EXT4_GOOD_OLD_INODE_SIZE || s_inode_size > blockSize || (s_inode_size & (s_inode_size - 1)) !== 0) {
    r.fail(0x58, 's_inode_size', 'inode size must be a power of two from 128 to the block size', { actual: s_inode_size });
  }
  const s_first_ino = dynamic ? r.u32le(0x54, 's_first_ino') : EXT4_GOOD_OLD_FIRST_INO;
  if (s_first_ino < EXT4_GOOD_OLD_FIRST_INO || s_first_ino > s_inodes_count) {
    r.fail(0x54, 's_first_ino', 'first non-reserved inode out of range', { actual: s_first_ino });
  }
  let descSize = EXT4_MIN_DESC_SIZE;
  const s_desc_size = r.u16le(0xfe);
  if (is64) {
    if (s_desc_size < EXT4_MIN_DESC_SIZE_64BIT || s_desc_size > EXT4_MAX_DESC_SIZE || (s_desc_size & (s_desc_size - 1)) !== 0) {
      r.fail(0xfe, 's_desc_size', 'group descriptor size must be a power of two from 64 to 1024', { actual: s_desc_size });
    }
    descSize = s_desc_size;
  }
  const s_reserved_gdt_blocks = r.u16le(0xce);
  if (s_reserved_gdt_blocks > blockSize / 4) {
    r.fail(0xce, 's_reserved_gdt_blocks', 'more reserved GDT blocks than one indirect block can list', { actual: s_reserved_gdt_blocks });
  }
  const s_first_meta_bg = r.u32le(0x104);
  if ((s_feature_incompat & EXT4_FEATURE_INCOMPAT_META_BG) !== 0) {
    const descBlocks = Math.ceil(groupCount / (blockSize / descSize));
    if (s_first_meta_bg > descBlocks) {
      r.fail(0x104, 's_first_meta_bg', 'first meta block group beyond the descriptor blocks', { expected: `<= ${descBlocks}`, actual: s_first_meta_bg });
    }
  }
  const s_uuid = r.slice(0x68, 16).slice();
  const s_checksum_seed = r.u32le(0x270);
  const csumSeed = (s_feature_incompat & EXT4_FEATURE_INCOMPAT_CSUM_SEED) !== 0 ? s_checksum_seed : ext4Crc32c(0xffffffff, s_uuid);
  const nul = (b: Uint8Array): string => {
    const end = b.indexOf(0);
    return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
  };
  return {
    s_inodes_count,
    s_blocks_count,
    s_r_blocks_count: r.u32le(0x08) + hi(0x154) * 2 ** 32,
    s_free_blocks_count: r.u32le(0x0c) + hi(0x158) * 2 ** 32,
    s_free_inodes_count: r.u32le(0x10),
    s_first_data_block,
    s_log_block_size,
    s_log_cluster_size: r.u32le(0x1c),
    s_blocks_per_group,
    s_clusters_per_group: r.u32le(0x24),
    s_inodes_per_group,
    // super.rst: s_mtime_hi/s_wtime_hi/s_mkfs_time_hi extend the times past 2038.
    s_mtime: r.u32le(0x2c) + r.u8(0x275) * 2 ** 32,
    s_wtime: r.u32le(0x30) + r.u8(0x274) * 2 ** 32,
    s_magic,
    s_state: r.u16le(0x3a),
    s_errors: r.u16le(0x3c),
    s_minor_rev_level: r.u16le(0x3e),
    s_creator_os: r.u32le(0x48),
    s_rev_level,
    s_first_ino,
    s_inode_size,
    s_block_group_nr: r.u16le(0x5a),
    s_feature_compat,
    s_feature_incompat,
    s_feature_ro_compat,
    s_uuid,
    s_volume_name: nul(r.slice(0x78, 16)),
    s_reserved_gdt_blocks,
    s_journal_inum: r.u32le(0xe0),
    s_journal_dev: r.u32le(0xe4),
    s_last_orphan: r.u32le(0xe8),
    s_hash_seed: [r.u32le(0xec), r.u32le(0xf0), r.u32le(0xf4), r.u32le(0xf8)],
    s_def_hash_version: r.u8(0xfc),
    s_desc_size,
    s_first_meta_bg,
    s_mkfs_time: r.u32le(0x108) + r.u8(0x276) * 2 ** 32,
    s_min_extra_isize: r.u16le(0x15c),
    s_want_extra_isize: r.u16le(0x15e),
    s_flags: r.u32le(0x160),
    s_log_groups_per_flex: r.u8(0x174),
    s_checksum_type,
    s_backup_bgs: [r.u32le(0x24c), r.u32le(0x250)],
    s_checksum_seed,
    s_encoding: r.u16le(0x27c),
    s_orphan_file_inum: r.u32le(0x280),
    s_checksum,
    s_kbytes_written: r.u32le(0x178) + r.u32le(0x17c) * 2 ** 32,
    raw: bytes.slice(0, EXT4_SUPERBLOCK_SIZE),
    blockSize,
    groupCount,
    descSize,
    csumSeed,
  };
}

/** Computes the metadata_csum superblock checksum of 1024 superblock bytes (for writers and tests). */
export function superblockChecksum(bytes: Uint8Array): number {
  return ext4Crc32c(0xffffffff, bytes.subarray(0, 0x3fc));
}

/** The superblock fields a writer changes; encodeSuperblock writes these and keeps every other byte of `raw`. */
export type WritableSuperblockFields = Pick<
  Superblock,
  | 's_free_blocks_count'
  | 's_free_inodes_count'
  | 's_mtime'
  | 's_wtime'
  | 's_state'
  | 's_errors'
  | 's_block_group_nr'
  | 's_feature_compat'
  | 's_feature_incompat'
  | 's_feature_ro_compat'
  | 's_last_orphan'
  | 's_flags'
  | 's_kbytes_written'
>;

/**
 * The 1024 superblock bytes (ext4 doc, super.rst): `sb.raw` with the fields a writer
 * changes (WritableSuperblockFields: free counts, times, state, errors, group number,
 * feature flags, orphan list head, flags, KiB written) written from `sb`, and the crc32c
 * s_checksum set when metadata_csum is on. Every other byte is kept. Throws InternalError
 * for a value the field cannot hold (a caller's bug).
 */
export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = sb.raw.slice(0, EXT4_SUPERBLOCK_SIZE);
  const v = new DataView(out.buffer);
  const is64 = (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_64BIT) !== 0;
  const check = (field: string, x: number, max: number): number => {
    if (!Number.isSafeInteger(x) || x < 0 || x > max) throw new InternalError('superblock field out of range for encoding', { structure: 'ext4.superblock', field, actual: x, expected: `0..${max}` });
    return x;
  };
  const free = check('s_free_blocks_count', sb.s_free_blocks_count, is64 ? 2 ** 53 - 1 : 2 ** 32 - 1);
  v.setUint32(0x0c, free % 2 ** 32, true);
  if (is64) v.setUint32(0x158, Math.floor(free / 2 ** 32), true);
  v.setUint32(0x10, check('s_free_inodes_count', sb.s_free_inodes_count, 2 ** 32 - 1), true);
  const time = (field: string, t: number, lo: number, hi: number): void => {
    check(field, t, 2 ** 40 - 1);
    v.setUint32(lo, t % 2 ** 32, true);
    out[hi] = Math.floor(t / 2 ** 32);
  };
  time('s_mtime', sb.s_mtime, 0x2c, 0x275);
  time('s_wtime', sb.s_wtime, 0x30, 0x274);
  v.setUint16(0x3a, check('s_state', sb.s_state, 0xffff), true);
  v.setUint16(0x3c, check('s_errors', sb.s_errors, 0xffff), true);
  v.setUint16(0x5a, check('s_block_group_nr', sb.s_block_group_nr, 0xffff), true);
  v.setUint32(0x5c, check('s_feature_compat', sb.s_feature_compat, 2 ** 32 - 1), true);
  v.setUint32(0x60, check('s_feature_incompat', sb.s_feature_incompat, 2 ** 32 - 1), true);
  v.setUint32(0x64, check('s_feature_ro_compat', sb.s_feature_ro_compat, 2 ** 32 - 1), true);
  v.setUint32(0xe8, check('s_last_orphan', sb.s_last_orphan, 2 ** 32 - 1), true);
  v.setUint32(0x160, check('s_flags', sb.s_flags, 2 ** 32 - 1), true);
  const kib = check('s_kbytes_written', sb.s_kbytes_written, 2 ** 53 - 1);
  v.setUint32(0x178, kib % 2 ** 32, true);
  v.setUint32(0x17c, Math.floor(kib / 2 ** 32), true);
  if (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) v.setUint32(0x3fc, superblockChecksum(out), true);
  return out;
}

/**
 * The backup copy of the superblock that group `group` holds (groupHasSuper): the
 * primary's bytes with s_block_group_nr = group and its own checksum, as e2fsprogs'
 * ext2fs_flush writes the copies. e2fsck never checks backups under -n, and otherwise
 * compares only the first one's feature flags, block and inode counts and UUID with the
 * primary (check_backup_super_block), so stale free counts in backups are normal; a
 * writer must rewrite the backups when it changes features or geometry.
 */
export function encodeBackupSuperblock(sb: Superblock, group: number): Uint8Array {
  return encodeSuperblock({ ...sb, s_block_group_nr: group });
}
