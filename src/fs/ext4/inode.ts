/**
 * Inodes (ext4 doc, inodes.rst): any inode size, with the extra fields (nanosecond and
 * epoch bits of the times, crtime, checksum_hi, projid) when i_extra_isize covers them.
 */
import { ext4Crc32c, ext4Crc32cU32 } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context } from './context.js';
import {
  EXT4_FEATURE_RO_COMPAT_HUGE_FILE,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_HUGE_FILE_FL,
  EXT4_I_BLOCK_OFFSET,
  EXT4_I_BLOCK_SIZE,
  S_IFMT,
} from './constants.js';
import type { Superblock } from './superblock.js';

/** A timestamp: seconds since the epoch (with the 2 epoch bits applied) and nanoseconds. */
export interface Ext4Time {
  readonly sec: number;
  readonly nsec: number;
}

/** A decoded inode, spec names for raw fields, derived values in camelCase. */
export interface Inode {
  readonly ino: number;
  readonly i_mode: number;
  readonly i_uid: number;
  readonly i_gid: number;
  readonly i_size: number;
  readonly i_links_count: number;
  /** i_blocks in 512-byte units (or in filesystem blocks with huge_file + EXT4_HUGE_FILE_FL, already converted). */
  readonly i_blocks: number;
  readonly i_flags: number;
  readonly i_generation: number;
  readonly i_file_acl: number;
  readonly i_dtime: number;
  readonly i_extra_isize: number;
  readonly i_projid: number;
  readonly atime: Ext4Time;
  readonly ctime: Ext4Time;
  readonly mtime: Ext4Time;
  readonly crtime: Ext4Time | undefined;
  /** The 60 bytes of i_block (extent root, block map, inline data or fast symlink). */
  readonly i_block: Uint8Array;
  /** The raw inode bytes (inode_size), for the in-inode xattr area. */
  readonly raw: Uint8Array;
  /** Device byte offset of the inode. */
  readonly deviceOffset: number;
  /** Seed for checksums of this inode's metadata blocks (extent nodes, directory blocks). */
  readonly csumSeed: number;
}

/** S_IFMT part of the mode. */
export function fileType(mode: number): number {
  return mode & S_IFMT;
}

/**
 * Decodes an inode from its `sb.s_inode_size` bytes at device byte `deviceOffset`,
 * verifying its metadata_csum checksum. Throws BAD_CHECKSUM, CORRUPT_IMAGE (i_extra_isize
 * beyond the inode or not a multiple of 4).
 */
export function decodeInode(bytes: Uint8Array, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number): Inode {
  const r = fsReader(ctx, bytes, `ext4.inode[${ino}]`, deviceOffset);
  const inodeSize = sb.s_inode_size;
  let i_extra_isize = 0;
  if (inodeSize > EXT4_GOOD_OLD_INODE_SIZE) {
    i_extra_isize = r.u16le(0x80, 'i_extra_isize');
    if (i_extra_isize > inodeSize - EXT4_GOOD_OLD_INODE_SIZE || i_extra_isize % 4 !== 0) {
      r.fail(0x80, 'i_extra_isize', 'extra inode size beyond the inode or misaligned', {
        expected: `multiple of 4, <= ${inodeSize - EXT4_GOOD_OLD_INODE_SIZE}`,
        actual: i_extra_isize,
      });
    }
  }
  const fits = (off: number, size: number): boolean => EXT4_GOOD_OLD_INODE_SIZE + i_extra_isize >= off + size;
  const i_generation = r.u32le(0x64);
  const csum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  const seed = csum ? ext4Crc32cU32(ext4Crc32cU32(sb.csumSeed, ino), i_generation) : 0;
  if (csum) {
    const hasHi = inodeSize > EXT4_GOOD_OLD_INODE_SIZE && fits(0x82, 2);
    const stored = r.u16le(0x7c) + (hasHi ? r.u16le(0x82) * 65536 : 0);
    const z = bytes.slice(0, inodeSize);
    z[0x7c] = 0;
    z[0x7d] = 0;
    if (hasHi) {
      z[0x82] = 0;
      z[0x83] = 0;
    }
    let c = ext4Crc32c(seed, z);
    if (!hasHi) c &= 0xffff;
    // An all-zero inode (never used) has no checksum to check.
    if (stored !== 0 || bytes.some((b) => b !== 0)) checkChecksum(ctx, `ext4.inode[${ino}].i_checksum`, deviceOffset + 0x7c, stored, c);
  }
  const time = (off: number, extraOff: number | undefined): Ext4Time => {
    const lo = r.u32le(off);
    const signed = lo | 0;
    if (extraOff === undefined || !fits(extraOff, 4)) return { sec: signed, nsec: 0 };
    const extra = r.u32le(extraOff);
    // ext4 doc, inodes.rst ("Inode Timestamps"): low 2 bits extend the signed seconds by epochs of 2^32.
    return { sec: signed + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
  };
  const blocksLo = r.u32le(0x1c);
  const blocksHi = r.u16le(0x74);
  const i_flags = r.u32le(0x20);
  let i_blocks = blocksLo + blocksHi * 2 ** 32;
  if ((sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_HUGE_FILE) !== 0) {
    if (i_flags & EXT4_HUGE_FILE_FL) i_blocks *= sb.blockSize / 512;
  } else {
    i_blocks = blocksLo;
  }
  return {
    ino,
    i_mode: r.u16le(0x00),
    i_uid: r.u16le(0x02) + r.u16le(0x78) * 65536,
    i_gid: r.u16le(0x18) + r.u16le(0x7a) * 65536,
    i_size: r.u32le(0x04) + r.u32le(0x6c) * 2 ** 32,
    i_links_count: r.u16le(0x1a),
    i_blocks,
    i_flags,
    i_generation,
    i_file_acl: r.u32le(0x68) + r.u16le(0x76) * 2 ** 32,
    i_dtime: r.u32le(0x14),
    i_extra_isize,
    i_projid: fits(0x9c, 4) ? r.u32le(0x9c) : 0,
    atime: time(0x08, 0x8c),
    ctime: time(0x0c, 0x84),
    mtime: time(0x10, 0x88),
    crtime: fits(0x90, 4) ? time(0x90, 0x94) : undefined,
    i_block: r.slice(EXT4_I_BLOCK_OFFSET, EXT4_I_BLOCK_SIZE),
    raw: bytes,
    deviceOffset,
    csumSeed: seed,
  };
}
