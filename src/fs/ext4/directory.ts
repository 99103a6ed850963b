/**
 * Directories (ext4 doc, directory.rst): linear blocks of ext4_dir_entry_2 records with
 * an optional 12-byte checksum tail, and hash-tree (htree) directories whose root and
 * interior blocks hide behind records that cover the whole block.
 */
import { InternalError } from '../../errors.js';
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

/** The inverse of recLenFromDisk: a 64 KiB record is stored as 65535 (as the kernel and e2fsprogs write it). */
export function recLenToDisk(len: number, blockSize: number): number {
  if (len < 65536) return len;
  if (len === 65536 && blockSize === 65536) return 65535;
  return (len & 65532) | ((len >>> 16) & 3);
}

/** ext4 doc, directory.rst (EXT4_DIR_REC_LEN): the smallest record that holds a name of `nameLen` bytes. */
export function dirRecLen(nameLen: number): number {
  return (8 + nameLen + 3) & ~3;
}

/** One record of a directory block as stored: deleted records (ino 0) included, with its rec_len. */
export interface DirRecord extends DirEntry {
  readonly recLen: number;
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
  return decodeDirEntries(r, checkedDirBlockEnd(r, bytes, ctx, structure, deviceOffset, opts), opts, blockSize);
}

/**
 * As decodeDirBlock, but returns every record as stored (deleted ones, ino 0, included,
 * each with its rec_len; not the checksum tail): what a writer edits and encodeDirBlock
 * writes back. Throws as decodeDirBlock.
 */
export function decodeDirBlockRecords(
  bytes: Uint8Array,
  ctx: Ext4Context,
  structure: string,
  deviceOffset: number,
  opts: DirBlockOptions,
  blockSize: number,
): DirRecord[] {
  const r = fsReader(ctx, bytes, structure, deviceOffset);
  return decodeDirRecords(r, checkedDirBlockEnd(r, bytes, ctx, structure, deviceOffset, opts), opts, blockSize);
}

/** Where a directory block's records end: before its checksum tail (verified) with metadata_csum, else at its end. */
export function checkedDirBlockEnd(r: FsByteReader, bytes: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number, opts: DirBlockOptions): number {
  if (!opts.metadataCsum) return bytes.length;
  const t = bytes.length - EXT4_DIR_TAIL_SIZE;
  const hasTail = t >= 0 && r.u32le(t) === 0 && r.u16le(t + 4) === EXT4_DIR_TAIL_SIZE && r.u8(t + 6) === 0 && r.u8(t + 7) === EXT4_FT_DIR_CSUM;
  if (!hasTail) r.fail(Math.max(0, t), 'dirent_tail', 'directory block has no checksum tail');
  checkChecksum(ctx, `${structure}.det_checksum`, deviceOffset + t + 8, r.u32le(t + 8), ext4Crc32c(opts.inodeCsumSeed, bytes.subarray(0, t)));
  return t;
}

/** Decodes the used entries of [0, end) of a directory area. See decodeDirBlock for throws. */
export function decodeDirEntries(r: FsByteReader, end: number, opts: Pick<DirBlockOptions, 'filetype' | 'inodesCount'>, blockSize: number): DirEntry[] {
  return decodeDirArea(r, end, opts, blockSize, false);
}

/** Decodes every record of [0, end) of a directory area, deleted ones included. See decodeDirBlock for throws. */
export function decodeDirRecords(r: FsByteReader, end: number, opts: Pick<DirBlockOptions, 'filetype' | 'inodesCount'>, blockSize: number): DirRecord[] {
  return decodeDirArea(r, end, opts, blockSize, true) as DirRecord[];
}

/**
 * Called for each record of a directory area: the name is bytes [nameAt, nameAt + nameLen)
 * of `bytes`, valid during the call only (copy what is kept).
 */
export type DirRecordVisitor = (ino: number, fileType: number, bytes: Uint8Array, nameAt: number, nameLen: number, recLen: number) => void;

/**
 * Calls `visit` with the used entries of [0, end) of a directory area (every record,
 * deleted ones included, with `records`), in order, after checking each as
 * decodeDirEntries does: no object per entry, for walks that look at most entries'
 * numbers only. See decodeDirBlock for throws.
 */
export function forEachDirRecord(r: FsByteReader, end: number, opts: Pick<DirBlockOptions, 'filetype' | 'inodesCount'>, blockSize: number, records: boolean, visit: DirRecordVisitor): void {
  const bytes = r.bytes;
  // Hot path (every entry of a walk): reads straight from the bytes, the checks below
  // keeping every read inside [0, end); r only builds the errors.
  if (end > bytes.length) r.fail(bytes.length, 'rec_len', 'directory area beyond its bytes', { expected: `<= ${bytes.length}`, actual: end });
  const filetype = opts.filetype;
  const inodesCount = opts.inodesCount;
  const big = blockSize >= 65536;
  let pos = 0;
  while (pos < end) {
    if (end - pos < 8) r.fail(pos, 'rec_len', 'directory record header crosses the block end', { actual: end - pos });
    const ino = (bytes[pos]! | (bytes[pos + 1]! << 8) | (bytes[pos + 2]! << 16) | (bytes[pos + 3]! << 24)) >>> 0;
    const rawLen = bytes[pos + 4]! | (bytes[pos + 5]! << 8);
    const recLen = big ? recLenFromDisk(rawLen, blockSize) : rawLen;
    const nameLen = filetype ? bytes[pos + 6]! : bytes[pos + 6]! | (bytes[pos + 7]! << 8);
    const fileType = filetype ? bytes[pos + 7]! : 0;
    if (recLen < 8 || recLen % 4 !== 0 || pos + recLen > end) {
      r.fail(pos + 4, 'rec_len', 'directory record length invalid or past the block end', { expected: `8..${end - pos}, multiple of 4`, actual: recLen });
    }
    if (nameLen + 8 > recLen || nameLen > 255) {
      r.fail(pos + 6, 'name_len', 'name longer than its record', { expected: `<= ${Math.min(255, recLen - 8)}`, actual: nameLen });
    }
    if (ino !== 0) {
      if (ino > inodesCount) r.fail(pos, 'inode', 'inode number beyond s_inodes_count', { expected: `<= ${inodesCount}`, actual: ino });
      if (nameLen === 0) r.fail(pos + 6, 'name_len', 'empty name in a used directory record');
    }
    if (ino !== 0 || records) visit(ino, fileType, bytes, pos + 8, nameLen, recLen);
    pos += recLen;
  }
}

/** The one decoding loop of decodeDirEntries (used entries) and decodeDirRecords (every record, with rec_len). */
function decodeDirArea(r: FsByteReader, end: number, opts: Pick<DirBlockOptions, 'filetype' | 'inodesCount'>, blockSize: number, records: boolean): DirEntry[] {
  const out: DirEntry[] = [];
  // Names are views of one copy of the area: they outlive the (possibly large, prefetched)
  // buffer they were read from, and one copy costs less than one per name.
  let copy: Uint8Array | undefined;
  forEachDirRecord(r, end, opts, blockSize, records, (ino, fileType, bytes, nameAt, nameLen, recLen) => {
    copy ??= bytes.slice(0, end);
    const name = copy.subarray(nameAt, nameAt + nameLen);
    const rec: DirRecord | DirEntry = records ? { ino, name, fileType, recLen } : { ino, name, fileType };
    out.push(rec);
  });
  return out;
}

/** What the directory encoders need to know of the filesystem and the directory. */
export interface DirFormat {
  /** INCOMPAT_FILETYPE: name_len is one byte followed by file_type (else a 16-bit name_len). */
  readonly filetype: boolean;
  /** metadata_csum: leaf blocks end with a checksum tail, htree nodes with a dx_tail. */
  readonly metadataCsum: boolean;
  /** The directory inode's checksum seed (Inode.csumSeed). */
  readonly csumSeed: number;
  /** s_hash_seed. */
  readonly hashSeed: readonly number[];
  /** s_def_hash_version: the hash of a directory made indexed. */
  readonly defaultHashVersion: number;
  /** s_flags & EXT2_FLAGS_UNSIGNED_HASH. */
  readonly unsignedHash: boolean;
  /** INCOMPAT_LARGEDIR: three index levels instead of two. */
  readonly largedir: boolean;
  readonly inodesCount: number;
  /** COMPAT_DIR_INDEX: a one-block linear directory that fills is made an htree (absent: never). */
  readonly dirIndex?: boolean;
}

/** A record to encode: rec_len as given (a writer keeping records in place) or, if absent, the smallest. */
export interface DirRecordInput extends DirEntry {
  readonly recLen?: number;
}

function putRecord(v: DataView, bytes: Uint8Array, pos: number, rec: DirEntry, recLen: number, fmt: Pick<DirFormat, 'filetype'>, blockSize: number): void {
  v.setUint32(pos, rec.ino, true);
  v.setUint16(pos + 4, recLenToDisk(recLen, blockSize), true);
  if (fmt.filetype) {
    v.setUint8(pos + 6, rec.name.length);
    v.setUint8(pos + 7, rec.fileType);
  } else {
    v.setUint16(pos + 6, rec.name.length, true);
  }
  bytes.set(rec.name, pos + 8);
}

/** Writes the 12-byte leaf checksum tail (ext4 doc, directory.rst, ext4_dir_entry_tail) at the block end. */
function putDirTail(bytes: Uint8Array, csumSeed: number): void {
  const t = bytes.length - EXT4_DIR_TAIL_SIZE;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  v.setUint32(t, 0, true);
  v.setUint16(t + 4, EXT4_DIR_TAIL_SIZE, true);
  v.setUint8(t + 6, 0);
  v.setUint8(t + 7, EXT4_FT_DIR_CSUM);
  v.setUint32(t + 8, ext4Crc32c(csumSeed, bytes.subarray(0, t)), true);
}

/**
 * Encodes one linear directory block (or htree leaf): the records in order from byte 0,
 * each with its given rec_len or the smallest, the last one stretched (never shrunk) to the end of the
 * block (or to the checksum tail, which is written with its crc32c under metadata_csum).
 * An empty list gives one empty record covering the block, as a fresh leaf has. Slack
 * bytes are zero. Throws INTERNAL (our bug) if the records do not fit, a name is longer
 * than 255 bytes or a given rec_len is too small or misaligned.
 */
export function encodeDirBlock(records: readonly DirRecordInput[], fmt: Pick<DirFormat, 'filetype' | 'metadataCsum' | 'csumSeed'>, blockSize: number): Uint8Array {
  const bytes = new Uint8Array(blockSize);
  const v = new DataView(bytes.buffer);
  const end = blockSize - (fmt.metadataCsum ? EXT4_DIR_TAIL_SIZE : 0);
  const list: readonly DirRecordInput[] = records.length > 0 ? records : [{ ino: 0, name: new Uint8Array(0), fileType: 0 }];
  let pos = 0;
  list.forEach((rec, i) => {
    if (rec.name.length > 255) throw new InternalError(`directory name of ${rec.name.length} bytes`);
    const min = dirRecLen(rec.name.length);
    const last = i === list.length - 1;
    const recLen = last ? end - pos : (rec.recLen ?? min);
    if (recLen < min || recLen % 4 !== 0 || pos + recLen > end || (last && (rec.recLen ?? min) > recLen)) {
      throw new InternalError(`directory record ${i} does not fit: rec_len ${rec.recLen ?? min} at ${pos} of ${end} bytes`);
    }
    putRecord(v, bytes, pos, rec, recLen, fmt, blockSize);
    pos += recLen;
  });
  if (fmt.metadataCsum) putDirTail(bytes, fmt.csumSeed);
  return bytes;
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
export function decodeDxRoot(bytes: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number, blockSize: number, opts: DxOptions): DxRoot {
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
  // '.' and '..' as stored; byte 7 is file_type with the filetype feature, else name_len's high byte (0).
  const dot: DirEntry = { ino: r.u32le(0, 'dot.inode'), name: DOT, fileType: r.u8(7) };
  const dotdot: DirEntry = { ino: r.u32le(12, 'dotdot.inode'), name: DOTDOT, fileType: r.u8(19) };
  return { info, node: decodeDxEntries(r, 0x20, blockSize, opts, deviceOffset, structure, ctx), dot, dotdot };
}

/** An htree root block: '.', '..', dx_root_info and the top index node. */
export interface DxRoot {
  readonly info: DxRootInfo;
  readonly node: DxNode;
  readonly dot: DirEntry;
  readonly dotdot: DirEntry;
}

const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

/** The index entries of a node to encode: count = blocks.length; hashes[0] is not stored (that slot holds limit/count). */
export type DxEntries = Pick<DxNode, 'hashes' | 'blocks'>;

/** ext4 doc, directory.rst: how many dx_entries fit in a node whose entries start at byte `at`. */
export function dxLimit(blockSize: number, at: number, metadataCsum: boolean): number {
  return Math.floor((blockSize - at - (metadataCsum ? 8 : 0)) / 8);
}

/** Where the entries start: after dx_root_info in a root, after the fake empty record in an interior node. */
export const DX_ROOT_ENTRIES_AT = 0x20;
export const DX_NODE_ENTRIES_AT = 8;

function putDxEntries(bytes: Uint8Array, at: number, node: DxEntries, fmt: Pick<DirFormat, 'metadataCsum' | 'csumSeed'>): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const limit = dxLimit(bytes.length, at, fmt.metadataCsum);
  const count = node.blocks.length;
  if (count === 0 || count > limit || node.hashes.length !== count) throw new InternalError(`htree node of ${count} entries (limit ${limit}, ${node.hashes.length} hashes)`);
  v.setUint16(at, limit, true);
  v.setUint16(at + 2, count, true);
  for (let i = 0; i < count; i++) {
    if (i > 0) v.setUint32(at + i * 8, node.hashes[i]!, true);
    v.setUint32(at + i * 8 + 4, node.blocks[i]!, true);
  }
  if (fmt.metadataCsum) {
    // ext4 doc, directory.rst (dx_tail): the crc32c of the header through the `count`
    // entries, then of dt_reserved and a zero dt_checksum; as decodeDxEntries verifies.
    const tail = at + limit * 8;
    const c0 = ext4Crc32c(fmt.csumSeed, bytes.subarray(0, at + count * 8));
    v.setUint32(tail + 4, ext4Crc32c(ext4Crc32c(c0, bytes.subarray(tail, tail + 4)), new Uint8Array(4)), true);
  }
}

/**
 * Encodes an htree root block: '.' (rec_len 12), '..' covering the rest of the block,
 * dx_root_info, limit/count and the entries, and under metadata_csum the dx_tail with its
 * checksum. Unused entry slots are zero. Throws INTERNAL if count is 0 or above the limit.
 */
export function encodeDxRoot(root: { readonly info: DxRootInfo; readonly node: DxEntries; readonly dot: DirEntry; readonly dotdot: DirEntry }, fmt: Pick<DirFormat, 'filetype' | 'metadataCsum' | 'csumSeed'>, blockSize: number): Uint8Array {
  const bytes = new Uint8Array(blockSize);
  const v = new DataView(bytes.buffer);
  putRecord(v, bytes, 0, { ...root.dot, name: DOT }, 12, fmt, blockSize);
  putRecord(v, bytes, 12, { ...root.dotdot, name: DOTDOT }, blockSize - 12, fmt, blockSize);
  // dx_root_info at 0x18: reserved_zero (u32), hash_version, info_length, indirect_levels, unused_flags.
  v.setUint8(0x1c, root.info.hash_version);
  v.setUint8(0x1d, 8);
  v.setUint8(0x1e, root.info.indirect_levels);
  putDxEntries(bytes, DX_ROOT_ENTRIES_AT, root.node, fmt);
  return bytes;
}

/**
 * Encodes an htree interior node: an empty record covering the block (so that readers of
 * linear directories skip it), then limit/count, the entries and the dx_tail. Throws as encodeDxRoot.
 */
export function encodeDxNode(node: DxEntries, fmt: Pick<DirFormat, 'metadataCsum' | 'csumSeed'>, blockSize: number): Uint8Array {
  const bytes = new Uint8Array(blockSize);
  const v = new DataView(bytes.buffer);
  v.setUint16(4, recLenToDisk(blockSize, blockSize), true);
  putDxEntries(bytes, DX_NODE_ENTRIES_AT, node, fmt);
  return bytes;
}

/** Decodes an htree interior node block. Throws as decodeDxRoot. */
export function decodeDxNode(bytes: Uint8Array, ctx: Ext4Context, structure: string, deviceOffset: number, blockSize: number, opts: DxOptions): DxNode {
  const r = fsReader(ctx, bytes, structure, deviceOffset);
  const ino = r.u32le(0, 'fake.inode');
  const recLen = recLenFromDisk(r.u16le(4, 'fake.rec_len'), blockSize);
  if (ino !== 0 || recLen !== blockSize) r.fail(4, 'fake.rec_len', 'htree node must start with an empty record covering the block', { expected: blockSize, actual: recLen });
  return decodeDxEntries(r, 8, blockSize, opts, deviceOffset, structure, ctx);
}
