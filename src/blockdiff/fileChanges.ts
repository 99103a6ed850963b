/**
 * What differs between one inode of filesystem A and one of filesystem B, seen as a file
 * (DESIGN.md, "Semantics of a rebase": type, content, mode, uid, gid, xattrs, symlink
 * target), plus size and link count. Content is compared by hashing (XXH64) only the
 * logical ranges that can differ: where the two mappings point at different blocks, or at
 * a block that changed between the devices.
 */
import type { Ext4Fs, FileExtent, Inode } from '../fs/ext4/Ext4Fs.js';
import { EXT4_MIN_INLINE_DATA_SIZE, EXT4_USER_FLAGS, S_IFDIR, S_IFLNK, S_IFREG } from '../fs/ext4/constants.js';
import { fileType } from '../fs/ext4/inode.js';
import { isInlineDataXattr } from '../fs/ext4/xattr.js';
import { BlockRuns, type BlockRun } from '../fs/BlockRuns.js';
import type { DifferingBytes } from './differingBytes.js';
import { hashBytes } from './hashBlocks.js';

/** The change kinds a modified file can have. */
export type ChangeKind = 'type' | 'mode' | 'uid' | 'gid' | 'flags' | 'size' | 'links' | 'xattrs' | 'target' | 'content';

/** Largest read per side when comparing content. */
const COMPARE_CHUNK = 1 << 20;

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** One piece of a file's logical map: `pblk` -1 for a hole. */
interface MapPiece {
  readonly lblk: number;
  readonly len: number;
  readonly pblk: number;
  readonly unwritten: boolean;
}

/** The logical map over [0, nblocks), holes included. */
function logicalMap(extents: readonly FileExtent[], nblocks: number): MapPiece[] {
  const out: MapPiece[] = [];
  let pos = 0;
  for (const e of [...extents].sort((x, y) => x.lblk - y.lblk)) {
    if (e.lblk >= nblocks) break;
    if (e.lblk > pos) out.push({ lblk: pos, len: e.lblk - pos, pblk: -1, unwritten: false });
    const start = Math.max(pos, e.lblk);
    const end = Math.min(nblocks, e.lblk + e.len);
    if (end > start) out.push({ lblk: start, len: end - start, pblk: e.pblk + (start - e.lblk), unwritten: e.unwritten });
    pos = Math.max(pos, end);
  }
  if (pos < nblocks) out.push({ lblk: pos, len: nblocks - pos, pblk: -1, unwritten: false });
  return out;
}

/**
 * Logical block ranges [lblk, count] where the two maps may hold different bytes: not
 * both holes, and not the same written block left unchanged.
 */
function rangesToCompare(
  a: readonly MapPiece[],
  b: readonly MapPiece[],
  changed: BlockRuns,
  known?: { readonly differing: DifferingBytes; readonly bs: number; readonly size: number; readonly blocks: number },
): { ranges: Array<[number, number]>; differs: boolean } {
  const out: Array<[number, number]> = [];
  // Set when a block both sides map at the same place holds file bytes known to differ.
  let differs = false;
  const push = (l: number, n: number): void => {
    const last = out[out.length - 1];
    if (last !== undefined && last[0] + last[1] === l) last[1] += n;
    else out.push([l, n]);
  };
  let i = 0;
  let j = 0;
  let pos = 0;
  while (i < a.length && j < b.length) {
    const pa = a[i]!;
    const pb = b[j]!;
    const end = Math.min(pa.lblk + pa.len, pb.lblk + pb.len);
    const n = end - pos;
    const holeA = pa.pblk < 0 || pa.unwritten;
    const holeB = pb.pblk < 0 || pb.unwritten;
    if (holeA && holeB) {
      // Both read as zeros.
    } else if (!holeA && !holeB && pa.pblk + (pos - pa.lblk) === pb.pblk + (pos - pb.lblk)) {
      // Same physical blocks: only the changed ones can differ.
      const p0 = pa.pblk + (pos - pa.lblk);
      for (const [s, c] of changed.intersect(p0, n)) {
        push(pos + (s - p0), c);
        // Blocks inside both filesystems only: a block past either end is read (and meets its error).
        if (known !== undefined && !differs && s + c <= known.blocks) {
          // The file's bytes in these blocks: up to i_size (the last block's tail is not content).
          const fileFrom = (pos + (s - p0)) * known.bs;
          const len = Math.min(c * known.bs, known.size - fileFrom);
          if (len > 0 && known.differing.overlaps(s * known.bs, s * known.bs + len)) differs = true;
        }
      }
    } else push(pos, n);
    pos = end;
    if (pa.lblk + pa.len === end) i++;
    if (pb.lblk + pb.len === end) j++;
  }
  return { ranges: out, differs };
}

async function bytesDiffer(fsA: Ext4Fs, iA: Inode, exA: readonly FileExtent[] | undefined, fsB: Ext4Fs, iB: Inode, exB: readonly FileExtent[] | undefined, offset: number, length: number): Promise<boolean> {
  for (let off = offset; off < offset + length; off += COMPARE_CHUNK) {
    const n = Math.min(COMPARE_CHUNK, offset + length - off);
    const [x, y] = await Promise.all([fsA.readOf(iA, off, n, exA), fsB.readOf(iB, off, n, exB)]);
    if (x.length !== y.length) return true;
    if ((await hashBytes(x)) !== (await hashBytes(y))) return true;
  }
  return false;
}

/**
 * Byte ranges [offset, length] where either side has written blocks, for two filesystems
 * of different block sizes (unrelated images): elsewhere both read as zeros.
 */
function writtenUnion(exA: readonly FileExtent[], bsA: number, exB: readonly FileExtent[], bsB: number): Array<[number, number]> {
  const g = Math.min(bsA, bsB);
  const runs = (ex: readonly FileExtent[], bs: number): BlockRun[] => ex.filter((e) => !e.unwritten).map((e) => [(e.lblk * bs) / g, (e.len * bs) / g]);
  return [...new BlockRuns([...runs(exA, bsA), ...runs(exB, bsB)]).runs()].map(([s, c]) => [s * g, c * g]);
}

/**
 * Whether two inodes' contents differ. Only bytes that can differ are read: with one block
 * size, the logical ranges of rangesToCompare (`changed` holds the blocks that differ, or
 * may, between the two devices); with two, the ranges either side has written. Holes are
 * never read, so the work follows the allocated data, not i_size.
 */
async function contentDiffers(fsA: Ext4Fs, iA: Inode, fsB: Ext4Fs, iB: Inode, changed: BlockRuns, differing?: DifferingBytes): Promise<boolean> {
  if (iA.i_size !== iB.i_size) return true;
  const size = iA.i_size;
  if (size === 0) return false;
  const [exA, exB] = await Promise.all([fsA.inlineExtentsOf(iA) ?? collect(fsA.extentsOf(iA)), fsB.inlineExtentsOf(iB) ?? collect(fsB.extentsOf(iB))]);
  const [bsA, bs] = [fsA.blockSize, fsB.blockSize];
  // Inline data lives in the inode and maps no blocks (extentsOf is empty: a hole): compare
  // the head that inline data can cover byte by byte. Past it an inline file reads as
  // zeros, which the hole-skipping comparison below covers.
  let head = 0;
  if (fsA.isInline(iA) || fsB.isInline(iB)) {
    const inlineMax = EXT4_MIN_INLINE_DATA_SIZE + Math.max(fsA.superblock.s_inode_size, fsB.superblock.s_inode_size);
    const g = Math.max(bsA, bs);
    head = Math.min(size, Math.ceil(inlineMax / g) * g);
    if (await bytesDiffer(fsA, iA, exA, fsB, iB, exB, 0, head)) return true;
  }
  let ranges: Array<[number, number]>;
  if (bsA === bs) {
    const blocks = Math.min(fsA.superblock.s_blocks_count, fsB.superblock.s_blocks_count);
    const known = differing !== undefined ? { differing, bs, size, blocks } : undefined;
    const r = rangesToCompare(logicalMap(exA, Math.ceil(size / bs)), logicalMap(exB, Math.ceil(size / bs)), changed, known);
    if (r.differs) return true;
    ranges = r.ranges.map(([l, n]) => [l * bs, n * bs]);
  } else ranges = writtenUnion(exA, bsA, exB, bs);
  for (const [offset, length] of ranges) {
    const from = Math.max(offset, head);
    const to = Math.min(offset + length, size);
    if (from < to && (await bytesDiffer(fsA, iA, exA, fsB, iB, exB, from, to - from))) return true;
  }
  return false;
}

function xattrKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

async function xattrsDiffer(fsA: Ext4Fs, iA: Inode, fsB: Ext4Fs, iB: Inode): Promise<boolean> {
  const [xa, xb] = await Promise.all([fsA.xattrsOf(iA), fsB.xattrsOf(iB)]);
  // system.data holds inline data: content, not an attribute. Names are keyed as bytes.
  const map = (xs: typeof xa): Map<string, string> => new Map(xs.filter((x) => !isInlineDataXattr(x)).map((x) => [xattrKey(x.name), xattrKey(x.value)]));
  const ma = map(xa);
  const mb = map(xb);
  if (ma.size !== mb.size) return true;
  for (const [k, v] of ma) if (mb.get(k) !== v) return true;
  return false;
}

function rdev(inode: Inode): string {
  return xattrKey(inode.i_block.subarray(0, 8));
}

/**
 * The change kinds between inode `iA` of fsA and `iB` of fsB, in a fixed order. With
 * `differing` (filesystem bytes known to differ), content mapped at the same block on
 * both sides over such bytes differs without being read. `links`
 * and `size` are reported for non-directories only (a directory's size and link count
 * follow from its entries, which are reported as paths of their own); `content` covers
 * regular files' bytes and device numbers; `target` symlinks.
 * Throws CORRUPT_IMAGE, BAD_CHECKSUM, IO.
 */
export async function compareInodes(fsA: Ext4Fs, iA: Inode, fsB: Ext4Fs, iB: Inode, changed: BlockRuns, differing?: DifferingBytes): Promise<ChangeKind[]> {
  const out: ChangeKind[] = [];
  const tA = fileType(iA.i_mode);
  const tB = fileType(iB.i_mode);
  if (tA !== tB) out.push('type');
  if ((iA.i_mode & 0o7777) !== (iB.i_mode & 0o7777)) out.push('mode');
  if (iA.i_uid !== iB.i_uid) out.push('uid');
  if (iA.i_gid !== iB.i_gid) out.push('gid');
  // chattr flags (immutable, append-only, ...): the owner's, like the mode.
  if ((iA.i_flags & EXT4_USER_FLAGS) !== (iB.i_flags & EXT4_USER_FLAGS)) out.push('flags');
  const sameType = tA === tB;
  if (sameType && tA !== S_IFDIR) {
    if (tA === S_IFREG && iA.i_size !== iB.i_size) out.push('size');
    if (iA.i_links_count !== iB.i_links_count) out.push('links');
  }
  if (await xattrsDiffer(fsA, iA, fsB, iB)) out.push('xattrs');
  if (sameType && tA === S_IFLNK) {
    const [a, b] = await Promise.all([fsA.readlinkOf(iA), fsB.readlinkOf(iB)]);
    if (Buffer.compare(a, b) !== 0) out.push('target');
  }
  if (sameType && tA === S_IFREG && (await contentDiffers(fsA, iA, fsB, iB, changed, differing))) out.push('content');
  if (sameType && tA !== S_IFREG && tA !== S_IFDIR && tA !== S_IFLNK && rdev(iA) !== rdev(iB)) out.push('content');
  return out;
}
