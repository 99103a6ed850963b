/**
 * Extent trees (ext4 doc, extents.rst): a 12-byte header, then index entries (depth > 0)
 * or leaf extents (depth 0). The root lives in i_block; deeper nodes fill a block and end
 * with a crc32c tail under metadata_csum. Walks are bounded: depth <= 5, each child one
 * level shallower than its parent, every node block visited once, entries <= eh_max.
 */
import { InternalError } from '../../errors.js';
import { ext4Crc32c } from './checksums.js';
import { checkChecksum, fsCorrupt, fsReader, type Ext4Context, type FsByteReader } from './context.js';
import {
  EXT4_EXT_ENTRY_SIZE,
  EXT4_EXT_HEADER_SIZE,
  EXT4_EXT_MAGIC,
  EXT4_EXT_MAX_DEPTH,
  EXT4_EXT_TAIL_SIZE,
  EXT_INIT_MAX_LEN,
} from './constants.js';

export interface ExtentHeader {
  readonly eh_magic: number;
  readonly eh_entries: number;
  readonly eh_max: number;
  readonly eh_depth: number;
  readonly eh_generation: number;
}

/** A leaf extent: `len` blocks from logical block `lblk` at physical block `pblk`. */
export interface FileExtent {
  readonly lblk: number;
  readonly pblk: number;
  readonly len: number;
  /** Unwritten (preallocated) extents read as zeros. */
  readonly unwritten: boolean;
}

export interface ExtentIndex {
  readonly ei_block: number;
  readonly ei_leaf: number;
}

export interface ExtentNode {
  readonly header: ExtentHeader;
  readonly indexes: readonly ExtentIndex[];
  readonly extents: readonly FileExtent[];
  /** The node's bytes as decoded (not a copy): what encodeExtentNode keeps of unused slots and ei_unused. */
  readonly raw?: Uint8Array;
}

const le16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const le32 = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

/**
 * Decodes one extent node (the 60-byte root or a whole block). `capacity` is how many
 * entries fit. Throws CORRUPT_IMAGE for a bad magic, eh_max above capacity, eh_entries
 * above eh_max, depth above 5, or entries out of logical order.
 */
export function decodeExtentNode(r: FsByteReader, capacity: number): ExtentNode {
  const eh_magic = r.u16le(0, 'eh_magic');
  if (eh_magic !== EXT4_EXT_MAGIC) r.fail(0, 'eh_magic', 'bad extent header magic', { expected: '0xf30a', actual: `0x${eh_magic.toString(16)}` });
  const eh_entries = r.u16le(2, 'eh_entries');
  const eh_max = r.u16le(4, 'eh_max');
  const eh_depth = r.u16le(6, 'eh_depth');
  const eh_generation = r.u32le(8);
  // Whole entries: a 4 KiB block holds 340 and 4 bytes to spare (found by a new user: "1..340.33").
  const holds = Math.floor(capacity);
  if (eh_max > holds || eh_max === 0) r.fail(4, 'eh_max', 'more entries than the node holds', { expected: `1..${holds}`, actual: eh_max });
  if (eh_entries > eh_max) r.fail(2, 'eh_entries', 'more entries than eh_max', { expected: `<= ${eh_max}`, actual: eh_entries });
  if (eh_depth > EXT4_EXT_MAX_DEPTH) r.fail(6, 'eh_depth', 'extent tree deeper than 5', { expected: `<= ${EXT4_EXT_MAX_DEPTH}`, actual: eh_depth });
  const indexes: ExtentIndex[] = [];
  const extents: FileExtent[] = [];
  let prevEnd = -1;
  // When every entry lies inside the bytes (the usual case), they are read unchecked: no
  // field name is built per read.
  const b = r.bytes;
  const fast = EXT4_EXT_HEADER_SIZE + eh_entries * EXT4_EXT_ENTRY_SIZE <= b.length;
  const u16 = (o: number): number => (fast ? le16(b, o) : r.u16le(o));
  const u32 = (o: number): number => (fast ? le32(b, o) : r.u32le(o));
  for (let i = 0; i < eh_entries; i++) {
    const o = EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
    const lblk = fast ? le32(b, o) : r.u32le(o, `entry[${i}]`);
    if (lblk < prevEnd || (eh_depth > 0 && lblk === prevEnd && i > 0)) {
      r.fail(o, `entry[${i}].block`, 'extent entries out of logical order', { expected: `>= ${prevEnd}`, actual: lblk });
    }
    if (eh_depth > 0) {
      const ei_leaf = u32(o + 4) + u16(o + 8) * 2 ** 32;
      indexes.push({ ei_block: lblk, ei_leaf });
      prevEnd = lblk;
    } else {
      const raw = u16(o + 4);
      const unwritten = raw > EXT_INIT_MAX_LEN;
      const len = unwritten ? raw - EXT_INIT_MAX_LEN : raw;
      const pblk = u16(o + 6) * 2 ** 32 + u32(o + 8);
      if (len === 0) r.fail(o + 4, `entry[${i}].ee_len`, 'zero-length extent');
      if (lblk + len > 2 ** 32) r.fail(o + 4, `entry[${i}].ee_len`, 'extent beyond the last logical block');
      extents.push({ lblk, pblk, len, unwritten });
      prevEnd = lblk + len;
    }
  }
  return { header: { eh_magic, eh_entries, eh_max, eh_depth, eh_generation }, indexes, extents, raw: r.bytes };
}

/**
 * Encodes an extent node (ext4 doc, extents.rst): the header with eh_entries counted from
 * the entries given, index entries (depth > 0) or leaf extents (ee_len above 32768 marks
 * an unwritten extent, so an unwritten extent holds at most 32767 blocks and a written one
 * 32768), then, with `tail`, the crc32c after eh_max entries as the kernel's
 * ext4_extent_block_csum computes it (seed: the inode's Inode.csumSeed). `capacity` is how
 * many entries fit (4 in i_block, (blockSize - 12) / 12 in a block). The result has
 * `opts.size` bytes (default: raw's length, else the header, `capacity` entries and the
 * tail: 60 bytes for the root); pass the block size for a block node. Bytes past the
 * entries and ei_unused come from `opts.raw` (default: node.raw), else zeros. Throws
 * InternalError for a node the format cannot hold (a caller's bug).
 */
export function encodeExtentNode(node: ExtentNode, capacity: number, opts: { tail?: { seed: number }; raw?: Uint8Array; size?: number } = {}): Uint8Array {
  const h = node.header;
  const raw = opts.raw ?? node.raw;
  const size = opts.size ?? raw?.length ?? EXT4_EXT_HEADER_SIZE + capacity * EXT4_EXT_ENTRY_SIZE + (opts.tail ? EXT4_EXT_TAIL_SIZE : 0);
  const fail = (field: string, actual: number | string, expected: string): never => {
    throw new InternalError('extent node cannot be encoded', { structure: 'ext4.extent_node', field, actual, expected });
  };
  const depth = h.eh_depth;
  const entries = depth > 0 ? node.indexes.length : node.extents.length;
  if (depth > 0 && node.extents.length > 0) fail('extents', node.extents.length, '0 in an index node');
  if (depth === 0 && node.indexes.length > 0) fail('indexes', node.indexes.length, '0 in a leaf node');
  if (!Number.isInteger(depth) || depth < 0 || depth > EXT4_EXT_MAX_DEPTH) fail('eh_depth', depth, `0..${EXT4_EXT_MAX_DEPTH}`);
  const maxFit = Math.floor((size - EXT4_EXT_HEADER_SIZE - (opts.tail ? EXT4_EXT_TAIL_SIZE : 0)) / EXT4_EXT_ENTRY_SIZE);
  if (!Number.isInteger(h.eh_max) || h.eh_max < 1 || h.eh_max > capacity || h.eh_max > maxFit) fail('eh_max', h.eh_max, `1..${Math.min(capacity, maxFit)}`);
  if (entries > h.eh_max) fail('eh_entries', entries, `<= ${h.eh_max}`);
  const out = new Uint8Array(size);
  if (raw !== undefined) out.set(raw.subarray(0, size));
  const v = new DataView(out.buffer);
  v.setUint16(0, EXT4_EXT_MAGIC, true);
  v.setUint16(2, entries, true);
  v.setUint16(4, h.eh_max, true);
  v.setUint16(6, depth, true);
  v.setUint32(8, h.eh_generation >>> 0, true);
  const u32 = (x: number, field: string): number => (Number.isInteger(x) && x >= 0 && x < 2 ** 32 ? x : fail(field, x, `0..${2 ** 32 - 1}`));
  const u48 = (x: number, field: string): number => (Number.isInteger(x) && x >= 0 && x < 2 ** 48 ? x : fail(field, x, `0..${2 ** 48 - 1}`));
  for (let i = 0; i < entries; i++) {
    const o = EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
    if (depth > 0) {
      const idx = node.indexes[i]!;
      const leaf = u48(idx.ei_leaf, `indexes[${i}].ei_leaf`);
      v.setUint32(o, u32(idx.ei_block, `indexes[${i}].ei_block`), true);
      v.setUint32(o + 4, leaf % 2 ** 32, true);
      v.setUint16(o + 8, Math.floor(leaf / 2 ** 32), true);
    } else {
      const e = node.extents[i]!;
      const maxLen = e.unwritten ? EXT_INIT_MAX_LEN - 1 : EXT_INIT_MAX_LEN;
      if (!Number.isInteger(e.len) || e.len < 1 || e.len > maxLen) fail(`extents[${i}].len`, e.len, `1..${maxLen}`);
      const pblk = u48(e.pblk, `extents[${i}].pblk`);
      v.setUint32(o, u32(e.lblk, `extents[${i}].lblk`), true);
      v.setUint16(o + 4, e.unwritten ? e.len + EXT_INIT_MAX_LEN : e.len, true);
      v.setUint16(o + 6, Math.floor(pblk / 2 ** 32), true);
      v.setUint32(o + 8, pblk % 2 ** 32, true);
    }
  }
  if (opts.tail) {
    const tailOff = EXT4_EXT_HEADER_SIZE + h.eh_max * EXT4_EXT_ENTRY_SIZE;
    v.setUint32(tailOff, ext4Crc32c(opts.tail.seed, out.subarray(0, tailOff)), true);
  }
  return out;
}

/** Entries that fit in an extent node of `bytes` bytes (4 for the 60-byte root); a block node keeps 4 bytes for its tail. */
export function extentNodeCapacity(bytes: number): number {
  return Math.floor((bytes - EXT4_EXT_HEADER_SIZE) / EXT4_EXT_ENTRY_SIZE);
}

/** Reads whole blocks from the device. */
export type BlockReader = (blockNo: number, count: number) => Promise<Uint8Array>;

/** Callbacks of an extent-tree walk. */
export interface ExtentWalkEnv {
  readonly ctx: Ext4Context;
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly readBlocks: BlockReader;
  /** Whether extent blocks carry a crc32c tail (metadata_csum). */
  readonly metadataCsum: boolean;
}

/** An interior or leaf node stored in its own block (not the root in the inode). */
export interface ExtentNodeBlock {
  readonly pblk: number;
  readonly depth: number;
}

/**
 * Walks the extent tree rooted in an inode's i_block, yielding leaf extents in logical
 * order, and reports each node block to `onNode`. Throws CORRUPT_IMAGE (see
 * decodeExtentNode; also: a child at the wrong depth, a node block outside the
 * filesystem or visited twice, extents outside the filesystem), BAD_CHECKSUM.
 */
export async function* walkExtentTree(
  env: ExtentWalkEnv,
  ino: number,
  iBlock: Uint8Array,
  iBlockDeviceOffset: number,
  inodeCsumSeed: number,
  onNode?: (n: ExtentNodeBlock) => void,
): AsyncGenerator<FileExtent> {
  const { ctx, blockSize } = env;
  const rootReader = fsReader(ctx, iBlock, `ext4.inode[${ino}].extent_root`, iBlockDeviceOffset);
  const root = decodeExtentNode(rootReader, (iBlock.length - EXT4_EXT_HEADER_SIZE) / EXT4_EXT_ENTRY_SIZE);
  if (root.header.eh_depth === 0) {
    yield* checkedRootLeaves(env, ino, root.extents, iBlockDeviceOffset);
    return;
  }
  const visited = new Set<number>();
  const blockCapacity = (blockSize - EXT4_EXT_HEADER_SIZE) / EXT4_EXT_ENTRY_SIZE;
  let lastEnd = 0;

  const checkExtent = (e: FileExtent, where: number): void => {
    if (e.pblk < 1 || e.pblk + e.len > env.blocksCount) {
      fsCorrupt(ctx, `ext4.inode[${ino}].extent`, where, 'extent outside the filesystem', {
        expected: `1..${env.blocksCount - 1}`,
        actual: `${e.pblk}+${e.len}`,
      });
    }
    if (e.lblk < lastEnd) fsCorrupt(ctx, `ext4.inode[${ino}].extent`, where, 'extents overlap or are out of order', { actual: e.lblk });
    lastEnd = e.lblk + e.len;
  };

  // Depth first with an explicit stack, in one generator: a generator per level (yield*)
  // cost a promise per level for every extent, and a client's large files have thousands.
  const stack: Array<{ node: ExtentNode; nodeOffset: number; lo: number; hi: number; next: number }> = [{ node: root, nodeOffset: iBlockDeviceOffset, lo: 0, hi: 2 ** 32, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const { node, nodeOffset, lo, hi } = top;
    if (node.header.eh_depth === 0) {
      stack.pop();
      for (let i = 0; i < node.extents.length; i++) {
        const e = node.extents[i]!;
        const where = nodeOffset + EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
        if (e.lblk < lo || e.lblk + e.len > hi) {
          fsCorrupt(ctx, `ext4.inode[${ino}].extent`, where, 'extent outside its index range', { expected: `${lo}..${hi}`, actual: e.lblk });
        }
        checkExtent(e, where);
        yield e;
      }
      continue;
    }
    const i = top.next++;
    if (i >= node.indexes.length) {
      stack.pop();
      continue;
    }
    const idx = node.indexes[i]!;
    const where = nodeOffset + EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
    const childHi = i + 1 < node.indexes.length ? node.indexes[i + 1]!.ei_block : hi;
    if (idx.ei_block < lo) fsCorrupt(ctx, `ext4.inode[${ino}].extent_index`, where, 'index before its parent range', { actual: idx.ei_block });
    if (idx.ei_leaf < 1 || idx.ei_leaf >= env.blocksCount) {
      fsCorrupt(ctx, `ext4.inode[${ino}].extent_index.ei_leaf`, where + 4, 'extent node outside the filesystem', { actual: idx.ei_leaf });
    }
    if (visited.has(idx.ei_leaf)) fsCorrupt(ctx, `ext4.inode[${ino}].extent_index.ei_leaf`, where + 4, 'extent node referenced twice', { actual: idx.ei_leaf });
    visited.add(idx.ei_leaf);
    const off = idx.ei_leaf * blockSize;
    const bytes = await env.readBlocks(idx.ei_leaf, 1);
    const r = fsReader(ctx, bytes, `ext4.extent_block[${idx.ei_leaf}]`, off);
    if (env.metadataCsum && r.u16le(0) === EXT4_EXT_MAGIC) {
      // The checksum first: a damaged block is reported as such, not by its first odd field.
      const tailOff = EXT4_EXT_HEADER_SIZE + r.u16le(4) * EXT4_EXT_ENTRY_SIZE;
      if (tailOff + EXT4_EXT_TAIL_SIZE <= blockSize) {
        checkChecksum(ctx, `ext4.extent_block[${idx.ei_leaf}].et_checksum`, off + tailOff, r.u32le(tailOff), ext4Crc32c(inodeCsumSeed, bytes.subarray(0, tailOff)));
      }
    }
    const child = decodeExtentNode(r, blockCapacity);
    if (child.header.eh_depth !== node.header.eh_depth - 1) {
      r.fail(6, 'eh_depth', 'child node at the wrong depth', { expected: node.header.eh_depth - 1, actual: child.header.eh_depth });
    }
    onNode?.({ pblk: idx.ei_leaf, depth: child.header.eh_depth });
    stack.push({ node: child, nodeOffset: off, lo: Math.max(lo, idx.ei_block), hi: childHi, next: 0 });
  }
}

/**
 * The extents of a leaf root node, checked as walkExtentTree checks them: inside the
 * filesystem, within the logical range, in order and not overlapping.
 */
function checkedRootLeaves(env: ExtentWalkEnv, ino: number, extents: readonly FileExtent[], rootOffset: number): FileExtent[] {
  let lastEnd = 0;
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    const where = rootOffset + EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
    if (e.lblk + e.len > 2 ** 32) fsCorrupt(env.ctx, `ext4.inode[${ino}].extent`, where, 'extent outside its index range', { expected: `0..${2 ** 32}`, actual: e.lblk });
    if (e.pblk < 1 || e.pblk + e.len > env.blocksCount) {
      fsCorrupt(env.ctx, `ext4.inode[${ino}].extent`, where, 'extent outside the filesystem', { expected: `1..${env.blocksCount - 1}`, actual: `${e.pblk}+${e.len}` });
    }
    if (e.lblk < lastEnd) fsCorrupt(env.ctx, `ext4.inode[${ino}].extent`, where, 'extents overlap or are out of order', { actual: e.lblk });
    lastEnd = e.lblk + e.len;
  }
  return extents as FileExtent[];
}

/**
 * The extents of a tree whose root (in i_block) is a leaf, decoded and checked as
 * walkExtentTree does but without I/O or promises (most files of a filesystem have at
 * most 4 extents); undefined if the root is an index node (the caller walks the tree).
 * Throws CORRUPT_IMAGE.
 */
export function rootLeafExtents(env: ExtentWalkEnv, ino: number, iBlock: Uint8Array, iBlockDeviceOffset: number): FileExtent[] | undefined {
  // Fast path (every inode of a scan): a well-formed root read straight from the bytes, no
  // reader or node object; anything unusual goes through decodeExtentNode, which throws.
  const b = iBlock;
  const capacity = (b.length - EXT4_EXT_HEADER_SIZE) / EXT4_EXT_ENTRY_SIZE;
  if (b.length >= EXT4_EXT_HEADER_SIZE) {
    const entries = le16(b, 2);
    const max = le16(b, 4);
    const depth = le16(b, 6);
    if (le16(b, 0) === EXT4_EXT_MAGIC && max !== 0 && max <= capacity && entries <= max && depth <= EXT4_EXT_MAX_DEPTH) {
      if (depth > 0) return undefined;
      const extents: FileExtent[] = [];
      let prevEnd = -1;
      let ok = true;
      for (let i = 0; i < entries; i++) {
        const o = EXT4_EXT_HEADER_SIZE + i * EXT4_EXT_ENTRY_SIZE;
        const lblk = le32(b, o);
        const raw = le16(b, o + 4);
        const unwritten = raw > EXT_INIT_MAX_LEN;
        const len = unwritten ? raw - EXT_INIT_MAX_LEN : raw;
        if (lblk < prevEnd || len === 0 || lblk + len > 2 ** 32) {
          ok = false;
          break;
        }
        extents.push({ lblk, pblk: le16(b, o + 6) * 2 ** 32 + le32(b, o + 8), len, unwritten });
        prevEnd = lblk + len;
      }
      if (ok) return checkedRootLeaves(env, ino, extents, iBlockDeviceOffset);
    }
  }
  const rootReader = fsReader(env.ctx, iBlock, `ext4.inode[${ino}].extent_root`, iBlockDeviceOffset);
  const root = decodeExtentNode(rootReader, capacity);
  return root.header.eh_depth === 0 ? checkedRootLeaves(env, ino, root.extents, iBlockDeviceOffset) : undefined;
}
