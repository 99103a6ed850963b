/**
 * Builds a whole extent tree (ext4 doc, extents.rst) for a file's logical-to-physical
 * map. The writer rebuilds a file's tree whenever its map changes (append, truncate,
 * point, relocate) rather than editing nodes in place: one code path, and the result is
 * always the tree e2fsck wants, as shallow and as narrow as the map allows (e2fsck
 * offers to "optimize" any other, and the strict oracle counts that as a finding).
 */
import { InternalError } from '../../errors.js';
import type { Run } from './allocator.js';
import { EXT4_EXT_ENTRY_SIZE, EXT4_EXT_HEADER_SIZE, EXT4_EXT_MAGIC, EXT4_EXT_MAX_DEPTH, EXT_INIT_MAX_LEN } from './constants.js';
import { encodeExtentNode, type ExtentNode, type FileExtent } from './extents.js';

/** Entries of the root node in i_block. */
export const ROOT_CAPACITY = 4;
/** Longest unwritten extent (the length field's top value marks "unwritten"). */
const EXT_UNWRITTEN_MAX_LEN = EXT_INIT_MAX_LEN - 1;

export interface BuiltExtentTree {
  /** The 60 bytes of i_block. */
  readonly iBlock: Uint8Array;
  /** Node blocks to write, with their content (checksum tails set). */
  readonly nodes: ReadonlyArray<{ readonly blockNo: number; readonly bytes: Uint8Array }>;
}

/** Entries per node block. */
export function blockCapacity(blockSize: number): number {
  return Math.floor((blockSize - EXT4_EXT_HEADER_SIZE) / EXT4_EXT_ENTRY_SIZE);
}

/**
 * The map as leaf extents: sorted, adjacent runs joined, each at most the longest an
 * extent can be. Throws INTERNAL on overlapping logical ranges (a writer bug).
 */
export function normalizeExtents(map: readonly FileExtent[]): FileExtent[] {
  const sorted = [...map].filter((e) => e.len > 0).sort((a, b) => a.lblk - b.lblk);
  const joined: FileExtent[] = [];
  for (const e of sorted) {
    const last = joined[joined.length - 1];
    if (last !== undefined && e.lblk < last.lblk + last.len) throw new InternalError(`extents overlap at logical block ${e.lblk}`);
    if (last !== undefined && last.unwritten === e.unwritten && last.lblk + last.len === e.lblk && last.pblk + last.len === e.pblk) {
      joined[joined.length - 1] = { ...last, len: last.len + e.len };
    } else joined.push({ ...e });
  }
  const out: FileExtent[] = [];
  for (const e of joined) {
    const max = e.unwritten ? EXT_UNWRITTEN_MAX_LEN : EXT_INIT_MAX_LEN;
    for (let done = 0; done < e.len; done += max) out.push({ lblk: e.lblk + done, pblk: e.pblk + done, len: Math.min(max, e.len - done), unwritten: e.unwritten });
  }
  return out;
}

/** How many node blocks a tree over `extentCount` leaf extents takes. */
export function treeBlockCount(extentCount: number, blockSize: number): number {
  if (extentCount <= ROOT_CAPACITY) return 0;
  const cap = blockCapacity(blockSize);
  let total = 0;
  let n = extentCount;
  while (n > ROOT_CAPACITY) {
    n = Math.ceil(n / cap);
    total += n;
  }
  return total;
}

/**
 * Builds the tree for `map`. Node blocks come from `allocate(count)` (called once, only
 * when the map needs more than the root). `csumSeed` (the inode's checksum seed) is given
 * under metadata_csum, and then each node block carries its crc32c tail.
 */
export async function buildExtentTree(
  map: readonly FileExtent[],
  opts: { readonly blockSize: number; readonly csumSeed?: number; readonly allocate: (count: number) => Promise<Run[]> },
): Promise<BuiltExtentTree> {
  const extents = normalizeExtents(map);
  const header = (entries: number, max: number, depth: number): ExtentNode['header'] => ({ eh_magic: EXT4_EXT_MAGIC, eh_entries: entries, eh_max: max, eh_depth: depth, eh_generation: 0 });
  if (extents.length <= ROOT_CAPACITY) {
    return { iBlock: encodeExtentNode({ header: header(extents.length, ROOT_CAPACITY, 0), indexes: [], extents }, ROOT_CAPACITY), nodes: [] };
  }
  const cap = blockCapacity(opts.blockSize);
  const count = treeBlockCount(extents.length, opts.blockSize);
  const blocks: number[] = [];
  for (const r of await opts.allocate(count)) for (let i = 0; i < r.count; i++) blocks.push(r.start + i);
  if (blocks.length !== count) throw new InternalError(`extent tree needs ${count} blocks, got ${blocks.length}`);
  const nodes: Array<{ blockNo: number; bytes: Uint8Array }> = [];
  const nodeOpts = { size: opts.blockSize, ...(opts.csumSeed !== undefined ? { tail: { seed: opts.csumSeed } } : {}) };
  // Level 0: leaves packed full, left to right; then index levels over them until the root holds the top.
  let level: Array<{ firstLblk: number; blockNo: number }> = [];
  for (let i = 0; i < extents.length; i += cap) {
    const chunk = extents.slice(i, i + cap);
    const blockNo = blocks.shift()!;
    nodes.push({ blockNo, bytes: encodeExtentNode({ header: header(chunk.length, cap, 0), indexes: [], extents: chunk }, cap, nodeOpts) });
    level.push({ firstLblk: chunk[0]!.lblk, blockNo });
  }
  let depth = 1;
  while (level.length > ROOT_CAPACITY) {
    const next: typeof level = [];
    for (let i = 0; i < level.length; i += cap) {
      const chunk = level.slice(i, i + cap);
      const blockNo = blocks.shift()!;
      const indexes = chunk.map((c) => ({ ei_block: c.firstLblk, ei_leaf: c.blockNo }));
      nodes.push({ blockNo, bytes: encodeExtentNode({ header: header(chunk.length, cap, depth), indexes, extents: [] }, cap, nodeOpts) });
      next.push({ firstLblk: chunk[0]!.firstLblk, blockNo });
    }
    level = next;
    depth++;
  }
  if (depth > EXT4_EXT_MAX_DEPTH) throw new InternalError(`extent tree of depth ${depth}`);
  const indexes = level.map((c) => ({ ei_block: c.firstLblk, ei_leaf: c.blockNo }));
  return { iBlock: encodeExtentNode({ header: header(level.length, ROOT_CAPACITY, depth), indexes, extents: [] }, ROOT_CAPACITY), nodes };
}
