/**
 * Directories (ext4 doc, directory.rst): linear blocks of ext4_dir_entry_2 records with
 * an optional 12-byte checksum tail, and hash-tree (htree) directories whose root and
 * interior blocks hide behind records that cover the whole block.
 */
import { ext4Crc32c } from './checksums.js';
import { checkChecksum, fsReader, type Ext4Context, type FsByteReader } from './context.js';
import { EXT4_DIR_TAIL_SIZE, EXT4_FT_DIR_CSUM, EXT4_HTREE_LEVEL, EXT4_HTREE_LEVEL_COMPAT } from './constants.js';

/** One directory entry. `name` holds the name's bytes as stored (any encoding; see names.ts). */
export interface DirEntry {
  readonly ino: number;
  readonly name: Uint8Array;
  /** ext4_dir_entry_2 file_type (0 without the filetype feature). */
  readonly fileType: number;
}

/** ext4 doc, directory.rst: rec_len on disk; 64 KiB blocks store 65536 as 0 or 65535. */
export function recLenFromDisk(v: number, blockSize: number): number {
  if (blockSize < 65536) return v;
  if (v === 65535 || v === 0) return blockSize;
  return (v & 65532) | ((v & 3) << 16);
}

export interface DirBlockOptions {
  readonly filetype: boolean;
  /** The block is expected to end with a checksum tail (metadata_csum). */
  readonly metadataCsum: boolean;
  readonly inodeCsumSeed: number;
  readonly inodesCount: number;
}

/**
 * Decodes the entries of one linear directory block (or the dirent area of an inline
 * directory) at device byte `deviceOffset`, skipping deleted entries (ino 0) and the
 * checksum tail, whose crc32c it verifies. Throws CORRUPT_IMAGE (rec_len too small,
 * misaligned or past the block end, name_len beyond rec_len, inode number beyond
 * s_inodes_count), BAD_CHECKSUM.
 */
export function decodeDirBlock(
  bytes: Uint8Array,
  ctx: Ext4Context,
  structure: string,
  deviceOffset: number,
  opts: DirBlockOptions,
  blockSize: number,
): DirEntry[] {
  const r = fsReader(ctx, bytes, structure, deviceOffset);
  let end = bytes.length;
  if (opts.metadataCsum) {
    const t = end - EXT4_DIR_TAIL_SIZE;
    const hasTail = t >= 0 && r.u32le(t) === 0 && r.u16le(t + 4) === EXT4_DIR_TAIL_SIZE && r.u8(t + 6) === 0 && r.u8(t + 7) === EXT4_FT_DIR_CSUM;
    if (!hasTail) r.fail(Math.max(0, t), 'dirent_tail', 'directory block has no checksum tail');
    checkChecksum(ctx, `${structure}.det_checksum`, deviceOffset + t + 8, r.u32le(t + 8), ext4Crc32c(opts.inodeCsumSeed, bytes.subarray(0, t)));
    end = t;
  }
  return decodeDirEntries(r, end, opts, blockSize);
}

/** Decodes the records of [0, end) of a directory area. See decodeDirBlock for throws. */
export function decodeDirEntries(r: FsByteReader, end: number, opts: Pick<DirBlockOptions, 'filetype' | 'inodesCount'>, blockSize: number): DirEntry[] {
  const out: DirEntry[] = [];
  const bytes = r.bytes;
  // Hot path (every entry of a walk): reads straight from the bytes, the checks below
  // keeping every read inside [0, end); r only builds the errors.
  if (end > bytes.length) r.fail(bytes.length, 'rec_len', 'directory area beyond its bytes', { expected: `<= ${bytes.length}`, actual: end });
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let copy: Uint8Array | undefined;
  let pos = 0;
  while (pos < end) {
    if (end - pos < 8) r.fail(pos, 'rec_len', 'directory record header crosses the block end', { actual: end - pos });
    const ino = v.getUint32(pos, true);
    const recLen = recLenFromDisk(v.getUint16(pos + 4, true), blockSize);
    const nameLen = opts.filetype ? bytes[pos + 6]! : v.getUint16(pos + 6, true);
    const fileType = opts.filetype ? bytes[pos + 7]! : 0;
    if (recLen < 8 || recLen % 4 !== 0 || pos + recLen > end) {
      r.fail(pos + 4, 'rec_len', 'directory record length invalid or past the block end', { expected: `8..${end - pos}, multiple of 4`, actual: recLen });
    }
    if (nameLen + 8 > recLen || nameLen > 255) {
      r.fail(pos + 6, 'name_len', 'name longer than its record', { expected: `<= ${Math.min(255, recLen - 8)}`, actual: nameLen });
    }
    if (ino !== 0) {
      if (ino > opts.inodesCount) r.fail(pos, 'inode', 'inode number beyond s_inodes_count', { expected: `<= ${opts.inodesCount}`, actual: ino });
      if (nameLen === 0) r.fail(pos + 6, 'name_len', 'empty name in a used directory record');
      // Views of one copy of the area: names outlive the (possibly large, prefetched)
      // buffer they were read from, and one copy costs less than one per name.
      copy ??= bytes.slice(0, end);
      out.push({ ino, name: copy.subarray(pos + 8, pos + 8 + nameLen), fileType });
    }
    pos += recLen;
  }
  return out;
}

/** An htree index node: which logical blocks it points at. */
export interface DxNode {
  readonly limit: number;
  readonly count: number;
  /** dx_entry hashes (entry 0's hash slot holds limit/count and is reported as 0). */
  readonly hashes: readonly number[];
  readonly blocks: readonly number[];
}

/** The dx_root_info of an htree root block. */
export interface DxRootInfo {
  readonly hash_version: number;
  readonly info_length: number;
  readonly indirect_levels: number;
}

export interface DxOptions {
  readonly metadataCsum: boolean;
  readonly inodeCsumSeed: number;
  readonly largedir: boolean;
  /** The directory's size in blocks: every pointer must be below it. */
  readonly dirBlocks: number;
}

function decodeDxEntries(r: FsByteReader, at: number, blockSize: number, opts: DxOptions, deviceOffset: number, structure: string, ctx: Ext4Context): DxNode {
  const limit = r.u16le(at, 'limit');
  const count = r.u16le(at + 2, 'count');
  const tailBytes = opts.metadataCsum ? 8 : 0;
  const maxLimit = Math.floor((blockSize - at - tailBytes) / 8);
  if (limit !== maxLimit) r.fail(at, 'limit', 'htree node limit does not match the block size', { expected: maxLimit, actual: limit });
  if (count === 0 || count > limit) r.fail(at + 2, 'count', 'htree node count out of range', { expected: `1..${limit}`, actual: count });
  const hashes: number[] = [];
  const blocks: number[] = [];
  let prev = -1;
  for (let i = 0; i < count; i++) {
    const hash = i === 0 ? 0 : r.u32le(at + i * 8);
    const block = r.u32le(at + i * 8 + 4, `entries[${i}].block`);
    if (block >= opts.dirBlocks) r.fail(at + i * 8 + 4, `entries[${i}].block`, 'htree pointer beyond the directory', { expected: `< ${opts.dirBlocks}`, actual: block });
    if (i > 0 && hash < prev) r.fail(at + i * 8, `entries[${i}].hash`, 'htree hashes out of order', { actual: hash });
    prev = hash;
    hashes.push(hash);
    blocks.push(block);
  }
  if (opts.metadataCsum) {
    // ext4 doc, directory.rst: dx_tail follows `limit` entries; crc32c covers the header up to
    // the count/limit, the `count` entries, then the whole 8-byte dx_tail with dt_checksum
    // taken as zero (as the kernel's ext4_dx_csum and e2fsprogs compute it).
    const tail = at + limit * 8;
    const c0 = ext4Crc32c(opts.inodeCsumSeed, r.bytes.subarray(0, at + count * 8));
    const c = ext4Crc32c(ext4Crc32c(c0, r.bytes.subarray(tail, tail + 4)), new Uint8Array(4));
    checkChecksum(ctx, `${structure}.dt_checksum`, deviceOffset + tail + 4, r.u32le(tail + 4), c);
  }
  return { limit, count, hashes, blocks };
}

/**
 * Decodes an htree root block (ext4 doc, directory.rst, "Hash Tree Directories").
 * Throws CORRUPT_IMAGE (bad '.'/'..' records, info_length != 8, unknown hash version,
 * too many levels, limit/count out of range, pointers beyond the directory), BAD_CHECKSUM.
 */
export function decodeDxRoot(bytes: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number, blockSize: number, opts: DxOptions): { info: DxRootInfo; node: DxNode } {
  const r = fsReader(ctx, bytes, structure, deviceOffset);
  const dotLen = r.u16le(4, 'dot.rec_len');
  if (dotLen !== 12) r.fail(4, 'dot.rec_len', "htree root '.' record length must be 12", { expected: 12, actual: dotLen });
  const dotdotLen = recLenFromDisk(r.u16le(16, 'dotdot.rec_len'), blockSize);
  if (dotdotLen !== blockSize - 12) r.fail(16, 'dotdot.rec_len', "htree root '..' record must cover the block", { expected: blockSize - 12, actual: dotdotLen });
  const info: DxRootInfo = {
    hash_version: r.u8(0x1c, 'hash_version'),
    info_length: r.u8(0x1d, 'info_length'),
    indirect_levels: r.u8(0x1e, 'indirect_levels'),
  };
  if (info.info_length !== 8) r.fail(0x1d, 'info_length', 'dx_root_info length must be 8', { expected: 8, actual: info.info_length });
  if (info.hash_version > 6) r.fail(0x1c, 'hash_version', 'unknown htree hash version', { actual: info.hash_version });
  const maxLevels = opts.largedir ? EXT4_HTREE_LEVEL : EXT4_HTREE_LEVEL_COMPAT;
  if (info.indirect_levels >= maxLevels) {
    r.fail(0x1e, 'indirect_levels', 'htree deeper than allowed', { expected: `< ${maxLevels}`, actual: info.indirect_levels });
  }
  return { info, node: decodeDxEntries(r, 0x20, blockSize, opts, deviceOffset, structure, ctx) };
}

/** Decodes an htree interior node block. Throws as decodeDxRoot. */
export function decodeDxNode(bytes: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number, blockSize: number, opts: DxOptions): DxNode {
  const r = fsReader(ctx, bytes, structure, deviceOffset);
  const ino = r.u32le(0, 'fake.inode');
  const recLen = recLenFromDisk(r.u16le(4, 'fake.rec_len'), blockSize);
  if (ino !== 0 || recLen !== blockSize) r.fail(4, 'fake.rec_len', 'htree node must start with an empty record covering the block', { expected: blockSize, actual: recLen });
  return decodeDxEntries(r, 8, blockSize, opts, deviceOffset, structure, ctx);
}
