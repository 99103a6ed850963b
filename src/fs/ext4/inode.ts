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

/** Inode copies are carved from small shared buffers: one allocation per many inodes. */
const SLAB_BYTES = 16 << 10;
let slab = new Uint8Array(0);
let slabView = new DataView(slab.buffer);
let slabUsed = 0;

/** Copies the first `n` bytes of `bytes` into the current slab; returns their offset there. */
function copyToSlab(bytes: Uint8Array, n: number): number {
  if (slabUsed + n > slab.length) {
    slab = new Uint8Array(Math.max(SLAB_BYTES, n));
    slabView = new DataView(slab.buffer);
    slabUsed = 0;
  }
  const at = slabUsed;
  slab.set(bytes.length === n ? bytes : bytes.subarray(0, n), at);
  slabUsed += n;
  return at;
}

/** A timestamp at `o + off`, with its extra word at `o + extraOff` when the extra area (ending at `extraEnd`) holds it. */
function timeAt(v: DataView, o: number, off: number, extraOff: number, extraEnd: number): Ext4Time {
  const signed = v.getInt32(o + off, true);
  if (extraEnd < extraOff + 4) return { sec: signed, nsec: 0 };
  const extra = v.getUint32(o + extraOff, true);
  // ext4 doc, inodes.rst ("Inode Timestamps"): low 2 bits extend the signed seconds by epochs of 2^32.
  return { sec: signed + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

/**
 * Decodes an inode from its `sb.s_inode_size` bytes at device byte `deviceOffset`,
 * verifying its metadata_csum checksum. The bytes are copied (into a small slab shared
 * with neighbouring inodes), so the inode does not keep an inode-table chunk alive.
 * Throws BAD_CHECKSUM, CORRUPT_IMAGE (i_extra_isize beyond the inode or not a multiple of
 * 4), TRUNCATED (fewer bytes than an inode).
 */
export function decodeInode(bytes: Uint8Array, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number): Inode {
  const inodeSize = sb.s_inode_size;
  if (bytes.length < inodeSize) {
    // Callers pass whole inodes; a short buffer is reported as the reader would.
    fsReader(ctx, bytes, `ext4.inode[${ino}]`, deviceOffset).slice(0, inodeSize, 'raw');
  }
  // Hot path (every inode of a walk or scan): DataView reads of fixed offsets from the
  // copy at `o` in the slab, no closures; fields past 128 bytes only where i_extra_isize
  // covers them.
  const o = copyToSlab(bytes, inodeSize);
  const v = slabView;
  const raw = slab.subarray(o, o + inodeSize);
  let i_extra_isize = 0;
  if (inodeSize > EXT4_GOOD_OLD_INODE_SIZE) {
    i_extra_isize = v.getUint16(o + 0x80, true);
    if (i_extra_isize > inodeSize - EXT4_GOOD_OLD_INODE_SIZE || i_extra_isize % 4 !== 0) {
      fsReader(ctx, raw, `ext4.inode[${ino}]`, deviceOffset).fail(0x80, 'i_extra_isize', 'extra inode size beyond the inode or misaligned', {
        expected: `multiple of 4, <= ${inodeSize - EXT4_GOOD_OLD_INODE_SIZE}`,
        actual: i_extra_isize,
      });
    }
  }
  const extraEnd = EXT4_GOOD_OLD_INODE_SIZE + i_extra_isize;
  const i_generation = v.getUint32(o + 0x64, true);
  const csum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  const seed = csum ? ext4Crc32cU32(ext4Crc32cU32(sb.csumSeed, ino), i_generation) : 0;
  if (csum) {
    const hasHi = inodeSize > EXT4_GOOD_OLD_INODE_SIZE && extraEnd >= 0x84;
    const lo = v.getUint16(o + 0x7c, true);
    const hi = hasHi ? v.getUint16(o + 0x82, true) : 0;
    const stored = lo + hi * 65536;
    // The checksum covers the inode with its checksum fields zeroed: zero them in the
    // copy, then put them back.
    v.setUint16(o + 0x7c, 0, true);
    if (hasHi) v.setUint16(o + 0x82, 0, true);
    let c = ext4Crc32c(seed, raw);
    v.setUint16(o + 0x7c, lo, true);
    if (hasHi) v.setUint16(o + 0x82, hi, true);
    if (!hasHi) c &= 0xffff;
    // An all-zero inode (never used) has no checksum to check.
    if (stored !== 0 || raw.some((b) => b !== 0)) checkChecksum(ctx, `ext4.inode[${ino}].i_checksum`, deviceOffset + 0x7c, stored, c);
  }
  const blocksLo = v.getUint32(o + 0x1c, true);
  const blocksHi = v.getUint16(o + 0x74, true);
  const i_flags = v.getUint32(o + 0x20, true);
  let i_blocks = blocksLo + blocksHi * 2 ** 32;
  if ((sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_HUGE_FILE) !== 0) {
    if (i_flags & EXT4_HUGE_FILE_FL) i_blocks *= sb.blockSize / 512;
  } else {
    i_blocks = blocksLo;
  }
  return new DecodedInode(raw, v, o, extraEnd, ino, i_blocks, i_flags, i_generation, i_extra_isize, deviceOffset, seed);
}

/**
 * An Inode over its copy in a slab. The numeric fields are decoded at once; the times and
 * i_block view are made on first use (a scan or a walk decodes every inode, and most
 * callers look at a few fields), then kept.
 */
class DecodedInode implements Inode {
  readonly i_mode: number;
  readonly i_uid: number;
  readonly i_gid: number;
  readonly i_size: number;
  readonly i_links_count: number;
  readonly i_file_acl: number;
  readonly i_dtime: number;
  readonly i_projid: number;
  private atimeV: Ext4Time | undefined;
  private ctimeV: Ext4Time | undefined;
  private mtimeV: Ext4Time | undefined;
  private crtimeV: Ext4Time | undefined | null;
  private iBlockV: Uint8Array | undefined;

  constructor(
    /** The inode's bytes: a view of its copy at `o` in the slab that `view` covers. */
    readonly raw: Uint8Array,
    private readonly view: DataView,
    private readonly o: number,
    private readonly extraEnd: number,
    readonly ino: number,
    readonly i_blocks: number,
    readonly i_flags: number,
    readonly i_generation: number,
    readonly i_extra_isize: number,
    readonly deviceOffset: number,
    readonly csumSeed: number,
  ) {
    const v = view;
    this.i_mode = v.getUint16(o + 0x00, true);
    this.i_uid = v.getUint16(o + 0x02, true) + v.getUint16(o + 0x78, true) * 65536;
    this.i_gid = v.getUint16(o + 0x18, true) + v.getUint16(o + 0x7a, true) * 65536;
    this.i_size = v.getUint32(o + 0x04, true) + v.getUint32(o + 0x6c, true) * 2 ** 32;
    this.i_links_count = v.getUint16(o + 0x1a, true);
    this.i_file_acl = v.getUint32(o + 0x68, true) + v.getUint16(o + 0x76, true) * 2 ** 32;
    this.i_dtime = v.getUint32(o + 0x14, true);
    this.i_projid = extraEnd >= 0x9c + 4 ? v.getUint32(o + 0x9c, true) : 0;
  }

  get atime(): Ext4Time {
    return (this.atimeV ??= timeAt(this.view, this.o, 0x08, 0x8c, this.extraEnd));
  }
  get ctime(): Ext4Time {
    return (this.ctimeV ??= timeAt(this.view, this.o, 0x0c, 0x84, this.extraEnd));
  }
  get mtime(): Ext4Time {
    return (this.mtimeV ??= timeAt(this.view, this.o, 0x10, 0x88, this.extraEnd));
  }
  get crtime(): Ext4Time | undefined {
    if (this.crtimeV === undefined) this.crtimeV = this.extraEnd >= 0x90 + 4 ? timeAt(this.view, this.o, 0x90, 0x94, this.extraEnd) : null;
    return this.crtimeV ?? undefined;
  }
  get i_block(): Uint8Array {
    return (this.iBlockV ??= this.raw.subarray(EXT4_I_BLOCK_OFFSET, EXT4_I_BLOCK_OFFSET + EXT4_I_BLOCK_SIZE));
  }
}
