/**
 * Inodes (ext4 doc, inodes.rst): any inode size, with the extra fields (nanosecond and
 * epoch bits of the times, crtime, checksum_hi, projid) when i_extra_isize covers them.
 */
import { ext4Crc32c, ext4Crc32cAt, ext4Crc32cU32 } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context } from './context.js';
import {
  EXT4_FEATURE_RO_COMPAT_HUGE_FILE,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_HUGE_FILE_FL,
  EXT4_I_BLOCK_OFFSET,
  EXT4_I_BLOCK_SIZE,
  EXT4_XATTR_MAGIC,
  S_IFMT,
} from './constants.js';
import { InternalError, RefusedError } from '../../errors.js';
import { asBuffer, isZeroRange } from '../../diskimage/isZero.js';
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
  /** Derived: blocks used in 512-byte units, whatever the on-disk unit (see i_blocks_raw). */
  readonly i_blocks: number;
  /**
   * The on-disk i_blocks_lo + l_i_blocks_high * 2^32, as stored: in filesystem blocks when
   * hugeFileUnits, else in 512-byte units (only its low 32 bits count without huge_file).
   */
  readonly i_blocks_raw: number;
  /** huge_file is on and the inode has EXT4_HUGE_FILE_FL: i_blocks_raw counts filesystem blocks. */
  readonly hugeFileUnits: boolean;
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

const le16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const le32 = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

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
 * with neighbouring inodes), so the inode does not keep an inode-table chunk alive. The
 * result is a plain object: every field is an own property, so `{ ...inode, i_mode }`
 * keeps them all (what the writer does before encodeInode).
 * Throws BAD_CHECKSUM, CORRUPT_IMAGE (i_extra_isize beyond the inode or not a multiple of
 * 4), TRUNCATED (fewer bytes than an inode).
 */
export function decodeInode(bytes: Uint8Array, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number): Inode {
  return decodeRecord(bytes, ino, sb, ctx, deviceOffset, false, true);
}

/**
 * An inode as a plain object with every field its own (the lazy fields of a
 * decodeInodeLazy inode made): safe to spread and to pass to encodeInode.
 */
export function plainInode(i: Inode): Inode {
  return {
    ino: i.ino,
    i_mode: i.i_mode,
    i_uid: i.i_uid,
    i_gid: i.i_gid,
    i_size: i.i_size,
    i_links_count: i.i_links_count,
    i_blocks: i.i_blocks,
    i_blocks_raw: i.i_blocks_raw,
    hugeFileUnits: i.hugeFileUnits,
    i_flags: i.i_flags,
    i_generation: i.i_generation,
    i_file_acl: i.i_file_acl,
    i_dtime: i.i_dtime,
    i_extra_isize: i.i_extra_isize,
    i_projid: i.i_projid,
    atime: i.atime,
    ctime: i.ctime,
    mtime: i.mtime,
    crtime: i.crtime,
    i_block: i.i_block,
    raw: i.raw,
    deviceOffset: i.deviceOffset,
    csumSeed: i.csumSeed,
  };
}

/**
 * As decodeInode, but the times and the i_block view are made on first use: for the
 * reader's hot paths (a scan or a listing decodes every inode; most callers look at a few
 * fields). Those fields are prototype getters, so spreading the result drops them: pass
 * it through plainInode before `{ ...inode }` or encodeInode. Throws as decodeInode.
 */
export function decodeInodeLazy(bytes: Uint8Array, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number, options: { verified?: boolean } = {}): Inode {
  return decodeRecord(bytes, ino, sb, ctx, deviceOffset, options.verified === true, false);
}

/** decodeInodeLazy, or with `plain` decodeInode: the plain object made at once (no lazy inode to copy from). */
function decodeRecord(bytes: Uint8Array, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number, verified: boolean, plain: boolean): Inode {
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
  const i_generation = v.getUint32(o + 0x64, true);
  const seed = checkInodeRecord(slab, o, ino, sb, ctx, deviceOffset, verified);
  // Checked above: within the inode and a multiple of 4.
  const i_extra_isize = inodeSize > EXT4_GOOD_OLD_INODE_SIZE ? v.getUint16(o + 0x80, true) : 0;
  const extraEnd = EXT4_GOOD_OLD_INODE_SIZE + i_extra_isize;
  const blocksLo = v.getUint32(o + 0x1c, true);
  const blocksHi = v.getUint16(o + 0x74, true);
  const i_flags = v.getUint32(o + 0x20, true);
  const i_blocks_raw = blocksLo + blocksHi * 2 ** 32;
  let i_blocks = i_blocks_raw;
  let hugeFileUnits = false;
  if ((sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_HUGE_FILE) !== 0) {
    hugeFileUnits = (i_flags & EXT4_HUGE_FILE_FL) !== 0;
    if (hugeFileUnits) i_blocks *= sb.blockSize / 512;
  } else {
    i_blocks = blocksLo;
  }
  if (!plain) return new DecodedInode(raw, v, o, extraEnd, ino, i_blocks, i_blocks_raw, hugeFileUnits, i_flags, i_generation, i_extra_isize, deviceOffset, seed);
  // The fields as DecodedInode decodes them, in plainInode's order.
  return {
    ino,
    i_mode: v.getUint16(o + 0x00, true),
    i_uid: v.getUint16(o + 0x02, true) + v.getUint16(o + 0x78, true) * 65536,
    i_gid: v.getUint16(o + 0x18, true) + v.getUint16(o + 0x7a, true) * 65536,
    i_size: v.getUint32(o + 0x04, true) + v.getUint32(o + 0x6c, true) * 2 ** 32,
    i_links_count: v.getUint16(o + 0x1a, true),
    i_blocks,
    i_blocks_raw,
    hugeFileUnits,
    i_flags,
    i_generation,
    i_file_acl: v.getUint32(o + 0x68, true) + v.getUint16(o + 0x76, true) * 2 ** 32,
    i_dtime: v.getUint32(o + 0x14, true),
    i_extra_isize,
    i_projid: extraEnd >= 0x9c + 4 ? v.getUint32(o + 0x9c, true) : 0,
    atime: timeAt(v, o, 0x08, 0x8c, extraEnd),
    ctime: timeAt(v, o, 0x0c, 0x84, extraEnd),
    mtime: timeAt(v, o, 0x10, 0x88, extraEnd),
    crtime: extraEnd >= 0x90 + 4 ? timeAt(v, o, 0x90, 0x94, extraEnd) : undefined,
    i_block: raw.subarray(EXT4_I_BLOCK_OFFSET, EXT4_I_BLOCK_OFFSET + EXT4_I_BLOCK_SIZE),
    raw,
    deviceOffset,
    csumSeed: seed,
  };
}

/**
 * Checks the inode record at `at` of `bytes` (s_inode_size bytes, which the caller has
 * made sure are there) as decodeInodeLazy does: i_extra_isize within the inode and a
 * multiple of 4, i_size below 2^32 blocks, and the metadata_csum checksum (unless `verified`: the caller did it).
 * The checksum fields are zeroed for the crc and put back before it returns (no await in
 * between). Returns the inode's checksum seed (0 without metadata_csum).
 * Throws CORRUPT_IMAGE, BAD_CHECKSUM.
 */
export function checkInodeRecord(bytes: Uint8Array, at: number, ino: number, sb: Superblock, ctx: Ext4Context, deviceOffset: number, verified = false): number {
  const inodeSize = sb.s_inode_size;
  const b = bytes;
  let i_extra_isize = 0;
  if (inodeSize > EXT4_GOOD_OLD_INODE_SIZE) {
    i_extra_isize = le16(b, at + 0x80);
    if (i_extra_isize > inodeSize - EXT4_GOOD_OLD_INODE_SIZE || i_extra_isize % 4 !== 0) {
      fsReader(ctx, b.subarray(at, at + inodeSize), `ext4.inode[${ino}]`, deviceOffset).fail(0x80, 'i_extra_isize', 'extra inode size beyond the inode or misaligned', {
        expected: `multiple of 4, <= ${inodeSize - EXT4_GOOD_OLD_INODE_SIZE}`,
        actual: i_extra_isize,
      });
    }
  }
  const extraEnd = EXT4_GOOD_OLD_INODE_SIZE + i_extra_isize;
  // No file holds 2^32 blocks or more (the kernel's largest, extent-mapped, holds 2^32 - 1;
  // e2fsck: "i_size is ..., should be ..."): a larger i_size is damage, and past 2^53 it
  // would not even be read exactly.
  const sizeHigh = (le16(b, at + 0x6c) | (le16(b, at + 0x6e) << 16)) >>> 0;
  if (sizeHigh >= sb.blockSize) {
    fsReader(ctx, b.subarray(at, at + inodeSize), `ext4.inode[${ino}]`, deviceOffset).fail(0x6c, 'i_size_high', 'file size of 2^32 blocks or more (larger than any ext4 file)', {
      expected: `< ${sb.blockSize} (size < 2^32 blocks of ${sb.blockSize} bytes)`,
      actual: sizeHigh,
    });
  }
  const csum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  if (!csum) return 0;
  const i_generation = (le16(b, at + 0x64) | (le16(b, at + 0x66) << 16)) >>> 0;
  const seed = ext4Crc32cU32(ext4Crc32cU32(sb.csumSeed, ino), i_generation);
  if (verified) return seed;
  const hasHi = inodeSize > EXT4_GOOD_OLD_INODE_SIZE && extraEnd >= 0x84;
  const lo = le16(b, at + 0x7c);
  const hi = hasHi ? le16(b, at + 0x82) : 0;
  const stored = lo + hi * 65536;
  // The checksum covers the inode with its checksum fields zeroed: zero them, then put them back.
  b[at + 0x7c] = 0;
  b[at + 0x7d] = 0;
  if (hasHi) {
    b[at + 0x82] = 0;
    b[at + 0x83] = 0;
  }
  let c = ext4Crc32cAt(seed, b, at, inodeSize);
  b[at + 0x7c] = lo & 0xff;
  b[at + 0x7d] = lo >>> 8;
  if (hasHi) {
    b[at + 0x82] = hi & 0xff;
    b[at + 0x83] = hi >>> 8;
  }
  if (!hasHi) c &= 0xffff;
  // An all-zero inode (never used) has no checksum to check. (A match is decided here:
  // checkChecksum's structure name is a string made per call.)
  if (stored >>> 0 !== c >>> 0 && (stored !== 0 || !isZeroRange(asBuffer(b), at, at + inodeSize))) checkChecksum(ctx, `ext4.inode[${ino}].i_checksum`, deviceOffset + 0x7c, stored, c);
  return seed;
}

/** What a listing shows of an inode (Ext4Fs.listings' stat columns): one holder, refilled per inode. */
export interface InodeStatFields {
  mode: number;
  links: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/**
 * Reads InodeStatFields from the inode record at `at` of `b` (checked: see
 * checkInodeRecord), in place, as DecodedInode decodes the same fields.
 */
export function readStatFields(b: Uint8Array, at: number, inodeSize: number, out: InodeStatFields): void {
  const extraEnd = EXT4_GOOD_OLD_INODE_SIZE + (inodeSize > EXT4_GOOD_OLD_INODE_SIZE ? le16(b, at + 0x80) : 0);
  out.mode = le16(b, at);
  out.links = le16(b, at + 0x1a);
  out.uid = le16(b, at + 0x02) + le16(b, at + 0x78) * 65536;
  out.gid = le16(b, at + 0x18) + le16(b, at + 0x7a) * 65536;
  out.size = le32(b, at + 0x04) + le32(b, at + 0x6c) * 2 ** 32;
  // As timeAt: the signed low word, extended by the extra word's epoch bits where present.
  const signed = le32(b, at + 0x10) | 0;
  if (extraEnd < 0x88 + 4) {
    out.mtimeSec = signed;
    out.mtimeNsec = 0;
  } else {
    const extra = le32(b, at + 0x88);
    out.mtimeSec = signed + (extra & 3) * 2 ** 32;
    out.mtimeNsec = extra >>> 2;
  }
}

/**
 * An Inode over its copy in a slab. The numeric fields are decoded at once; the times and
 * i_block view are made on first use (a scan or a listing decodes every inode, and most
 * callers look at a few fields), then kept. They are getters on the prototype, so that
 * `{ ...inode }` would drop them: decodeInode hands out plainInode copies, and only the
 * reader's hot paths (decodeInodeLazy) see these.
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
    readonly i_blocks_raw: number,
    readonly hugeFileUnits: boolean,
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

/**
 * What encodeInode writes: the decoded Inode's fields (an Inode is one). `i_blocks` is the
 * 512-byte count; `i_blocks_raw`/`hugeFileUnits` are kept as given when they still
 * describe `i_blocks`, else the encoding is chosen as the kernel's ext4_inode_blocks_set
 * chooses it.
 */
export interface InodeFields {
  readonly ino: number;
  readonly i_mode: number;
  readonly i_uid: number;
  readonly i_gid: number;
  readonly i_size: number;
  readonly i_links_count: number;
  readonly i_blocks: number;
  readonly i_blocks_raw?: number;
  readonly hugeFileUnits?: boolean;
  readonly i_flags: number;
  readonly i_generation: number;
  readonly i_file_acl: number;
  readonly i_dtime: number;
  readonly i_extra_isize: number;
  readonly i_projid: number;
  readonly atime: Ext4Time;
  readonly ctime: Ext4Time;
  readonly mtime: Ext4Time;
  /** Stored only where i_extra_isize covers i_crtime (dropped otherwise, as the kernel does). */
  readonly crtime?: Ext4Time | undefined;
  /** The 60 bytes of i_block. */
  readonly i_block: Uint8Array;
  /** The in-inode xattr area (inode_size - 128 - i_extra_isize bytes, see encodeInodeXattrs); default: raw's bytes there. */
  readonly xattrArea?: Uint8Array;
}

const bad = (ino: number, field: string, actual: number | string, expected: string): never => {
  throw new InternalError(`inode field out of range for encoding`, { structure: `ext4.inode[${ino}]`, field, actual, expected });
};

function checkRange(ino: number, field: string, v: number, max: number): void {
  if (!Number.isSafeInteger(v) || v < 0 || v > max) bad(ino, field, v, `0..${max}`);
}

/**
 * Seconds an inode time can hold (ext4 doc, inodes.rst, "Inode Timestamps"): the low 32
 * bits signed, and with the extra word (inodes larger than 128 bytes) 2 epoch bits more.
 */
export function storableSeconds(hasExtra: boolean): { readonly min: number; readonly max: number } {
  return { min: -(2 ** 31), max: hasExtra ? 2 ** 31 - 1 + 3 * 2 ** 32 : 2 ** 31 - 1 };
}

/**
 * Where the kernel stores a time: the low 32 bits signed, and with an extra word the 2
 * epoch bits and nanoseconds. Seconds outside the representable range (storableSeconds)
 * are clamped, as the kernel clamps them to s_time_min/max.
 */
function putTime(v: DataView, off: number, extraOff: number, extraEnd: number, t: Ext4Time): void {
  const hasExtra = extraEnd >= extraOff + 4;
  const { min, max } = storableSeconds(hasExtra);
  const sec = Math.min(max, Math.max(min, Math.floor(t.sec)));
  const lo = ((sec % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const signed = lo >= 2 ** 31 ? lo - 2 ** 32 : lo;
  v.setInt32(off, signed, true);
  if (hasExtra) {
    const nsec = Math.min(2 ** 30 - 1, Math.max(0, Math.floor(t.nsec)));
    v.setUint32(extraOff, ((nsec << 2) >>> 0) + (sec - signed) / 2 ** 32, true);
  }
}

/** The on-disk i_blocks form for `fields`: the given one if it still says i_blocks, else the kernel's choice. */
function blocksEncoding(f: InodeFields, sb: Superblock): { raw: number; huge: boolean } {
  const hugeFeature = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_HUGE_FILE) !== 0;
  const unit = sb.blockSize / 512;
  if (f.i_blocks_raw !== undefined && f.hugeFileUnits !== undefined && Number.isSafeInteger(f.i_blocks_raw) && f.i_blocks_raw >= 0 && f.i_blocks_raw < 2 ** 48) {
    const derived = !hugeFeature ? f.i_blocks_raw % 2 ** 32 : f.hugeFileUnits ? f.i_blocks_raw * unit : f.i_blocks_raw;
    if (derived === f.i_blocks && (hugeFeature || !f.hugeFileUnits)) return { raw: f.i_blocks_raw, huge: f.hugeFileUnits };
  }
  const n = f.i_blocks;
  checkRange(f.ino, 'i_blocks', n, Number.MAX_SAFE_INTEGER);
  if (n < 2 ** 32) return { raw: n, huge: false };
  if (!hugeFeature) {
    throw new RefusedError('WRITE_REFUSED', { structure: `ext4.inode[${f.ino}].i_blocks`, detail: 'file too large for a filesystem without huge_file', actual: n, expected: `< ${2 ** 32}` });
  }
  if (n < 2 ** 48) return { raw: n, huge: false };
  if (n % unit !== 0 || n / unit >= 2 ** 48) bad(f.ino, 'i_blocks', n, `a multiple of ${unit} below ${unit * 2 ** 48}`);
  return { raw: n / unit, huge: true };
}

/**
 * The inode's `sb.s_inode_size` bytes (ext4 doc, inodes.rst), starting from a copy of
 * `opts.raw` when given so that fields not modelled here (i_version, osd fields, the
 * reserved words) are kept, with the metadata_csum checksum set as decodeInode verifies
 * it. The extra fields are written only where i_extra_isize covers them, as decodeInode
 * reads them. Throws InternalError for a field the format cannot hold (a caller's bug),
 * WRITE_REFUSED for an i_blocks above 2^32 - 1 without huge_file.
 */
export function encodeInode(f: InodeFields, sb: Superblock, opts: { raw?: Uint8Array } = {}): Uint8Array {
  const inodeSize = sb.s_inode_size;
  const out = new Uint8Array(inodeSize);
  if (opts.raw !== undefined) out.set(opts.raw.subarray(0, inodeSize));
  const v = new DataView(out.buffer);
  const ino = f.ino;
  // A spread decodeInodeLazy inode lacks its lazy fields (prototype getters): refuse it
  // rather than write zeros or the raw bytes' old values where the caller meant the fields.
  for (const k of ['atime', 'ctime', 'mtime', 'i_block'] as const) if ((f[k] as unknown) === undefined) bad(ino, k, 'missing', 'a value (pass a decodeInodeLazy inode through plainInode before spreading it)');
  const maxExtra = inodeSize - EXT4_GOOD_OLD_INODE_SIZE;
  if (f.i_extra_isize % 4 !== 0 || f.i_extra_isize < 0 || f.i_extra_isize > maxExtra) bad(ino, 'i_extra_isize', f.i_extra_isize, `multiple of 4, <= ${maxExtra}`);
  const extraEnd = EXT4_GOOD_OLD_INODE_SIZE + f.i_extra_isize;
  checkRange(ino, 'i_mode', f.i_mode, 0xffff);
  checkRange(ino, 'i_uid', f.i_uid, 0xffffffff);
  checkRange(ino, 'i_gid', f.i_gid, 0xffffffff);
  // A 64-bit i_size above 2^53 (only in damaged or odd inodes) decodes inexactly: unchanged, its bytes are kept from raw.
  const sizeFromRaw = opts.raw !== undefined && !Number.isSafeInteger(f.i_size) && v.getUint32(0x04, true) + v.getUint32(0x6c, true) * 2 ** 32 === f.i_size;
  if (!sizeFromRaw) checkRange(ino, 'i_size', f.i_size, Number.MAX_SAFE_INTEGER);
  checkRange(ino, 'i_links_count', f.i_links_count, 0xffff);
  checkRange(ino, 'i_flags', f.i_flags, 0xffffffff);
  checkRange(ino, 'i_generation', f.i_generation, 0xffffffff);
  checkRange(ino, 'i_file_acl', f.i_file_acl, 2 ** 48 - 1);
  checkRange(ino, 'i_dtime', f.i_dtime, 0xffffffff);
  checkRange(ino, 'i_projid', f.i_projid, 0xffffffff);
  if (f.i_projid !== 0 && extraEnd < 0x9c + 4) bad(ino, 'i_projid', f.i_projid, '0 (i_extra_isize does not cover i_projid)');
  if (f.i_block.length !== EXT4_I_BLOCK_SIZE) bad(ino, 'i_block', f.i_block.length, `${EXT4_I_BLOCK_SIZE} bytes`);

  const blocks = blocksEncoding(f, sb);
  // Under huge_file, EXT4_HUGE_FILE_FL says which unit i_blocks is in, so it follows the encoding chosen; without it the flag means nothing and stays as given.
  const hugeFeature = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_HUGE_FILE) !== 0;
  const flags = !hugeFeature ? f.i_flags : blocks.huge ? (f.i_flags | EXT4_HUGE_FILE_FL) >>> 0 : (f.i_flags & ~EXT4_HUGE_FILE_FL) >>> 0;

  v.setUint16(0x00, f.i_mode, true);
  v.setUint16(0x02, f.i_uid & 0xffff, true);
  v.setUint16(0x78, f.i_uid >>> 16, true);
  v.setUint16(0x18, f.i_gid & 0xffff, true);
  v.setUint16(0x7a, f.i_gid >>> 16, true);
  if (!sizeFromRaw) {
    v.setUint32(0x04, f.i_size % 2 ** 32, true);
    v.setUint32(0x6c, Math.floor(f.i_size / 2 ** 32), true);
  }
  v.setUint16(0x1a, f.i_links_count, true);
  v.setUint32(0x1c, blocks.raw % 2 ** 32, true);
  v.setUint16(0x74, Math.floor(blocks.raw / 2 ** 32), true);
  v.setUint32(0x20, flags, true);
  v.setUint32(0x64, f.i_generation, true);
  v.setUint32(0x68, f.i_file_acl % 2 ** 32, true);
  v.setUint16(0x76, Math.floor(f.i_file_acl / 2 ** 32), true);
  v.setUint32(0x14, f.i_dtime, true);
  out.set(f.i_block, EXT4_I_BLOCK_OFFSET);
  putTime(v, 0x08, 0x8c, extraEnd, f.atime);
  putTime(v, 0x0c, 0x84, extraEnd, f.ctime);
  putTime(v, 0x10, 0x88, extraEnd, f.mtime);
  if (inodeSize > EXT4_GOOD_OLD_INODE_SIZE) {
    // A new i_extra_isize moves the xattr area: keeping raw's bytes would leave its entries
    // where they are no longer read (xattrs lost without a word), so the caller must give them.
    if (opts.raw !== undefined && f.xattrArea === undefined) {
      const rawExtra = opts.raw[0x80]! | (opts.raw[0x81]! << 8);
      const at = EXT4_GOOD_OLD_INODE_SIZE + rawExtra;
      const hadXattrs = at + 4 <= inodeSize && new DataView(opts.raw.buffer, opts.raw.byteOffset + at, 4).getUint32(0, true) === EXT4_XATTR_MAGIC;
      if (rawExtra !== f.i_extra_isize && hadXattrs) bad(ino, 'xattrArea', 'missing', 'the xattr area (encodeInodeXattrs) when i_extra_isize changes');
    }
    v.setUint16(0x80, f.i_extra_isize, true);
    if (f.crtime !== undefined && extraEnd >= 0x90 + 4) putTime(v, 0x90, 0x94, extraEnd, f.crtime);
    if (extraEnd >= 0x9c + 4) v.setUint32(0x9c, f.i_projid, true);
    if (f.xattrArea !== undefined) {
      if (f.xattrArea.length !== inodeSize - extraEnd) bad(ino, 'xattrArea', f.xattrArea.length, `${inodeSize - extraEnd} bytes`);
      out.set(f.xattrArea, extraEnd);
    }
  } else if (f.i_extra_isize !== 0) {
    bad(ino, 'i_extra_isize', f.i_extra_isize, '0 in a 128-byte inode');
  }
  if ((sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0) {
    const hasHi = inodeSize > EXT4_GOOD_OLD_INODE_SIZE && extraEnd >= 0x84;
    // An all-zero inode may carry no checksum (never written: decodeInode accepts it, mke2fs
    // leaves unused inodes so) or a real one (mke2fs writes the reserved inodes): keep
    // which of the two the starting bytes had.
    const unwritten = isZeroInode(out, hasHi) && v.getUint16(0x7c, true) === 0 && (!hasHi || v.getUint16(0x82, true) === 0);
    const c = unwritten ? 0 : inodeChecksum(out, ino, f.i_generation, sb, extraEnd);
    v.setUint16(0x7c, c & 0xffff, true);
    if (hasHi) v.setUint16(0x82, c >>> 16, true);
  }
  return out;
}

/** Whether the inode is all zeros but for its checksum fields. */
function isZeroInode(b: Uint8Array, hasHi: boolean): boolean {
  for (let i = 0; i < b.length; i++) {
    if (i === 0x7c || i === 0x7d || (hasHi && (i === 0x82 || i === 0x83))) continue;
    if (b[i] !== 0) return false;
  }
  return true;
}

/**
 * The metadata_csum checksum of inode bytes (ext4 doc, checksums.rst): crc32c seeded
 * with the filesystem seed, inode number and generation, over the inode with its checksum
 * fields zeroed; 16 bits when i_checksum_hi is outside the extra area.
 */
function inodeChecksum(bytes: Uint8Array, ino: number, generation: number, sb: Superblock, extraEnd: number): number {
  const z = bytes.slice();
  const hasHi = z.length > EXT4_GOOD_OLD_INODE_SIZE && extraEnd >= 0x84;
  z[0x7c] = 0;
  z[0x7d] = 0;
  if (hasHi) {
    z[0x82] = 0;
    z[0x83] = 0;
  }
  const c = ext4Crc32c(ext4Crc32cU32(ext4Crc32cU32(sb.csumSeed, ino), generation), z);
  return hasHi ? c : c & 0xffff;
}
