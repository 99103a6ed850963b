/**
 * Inode tables read in large chunks (ext4 doc, group_descr.rst: bg_inode_table,
 * bg_itable_unused, EXT4_BG_INODE_UNINIT). A walk reads inodes that sit close together
 * (a directory's files are allocated side by side), so one read of a few hundred KiB of
 * the table serves hundreds of inodes. Only the part of a table that can hold inodes in
 * use is read in chunks; the rest (never initialised, possibly garbage on disk) is left
 * to the caller's single-block reads, as is a chunk whose read fails, so the errors a
 * caller sees are those of the blocks it asked for.
 */
import { CacheBudget, LruCache, sharedCacheBudget } from '../../diskimage/LruCache.js';
import { EXT4_BG_INODE_UNINIT } from './constants.js';
import { hasGroupChecksums, type GroupDescriptor } from './groupDescriptors.js';
import type { Superblock } from './superblock.js';

/** Bytes of inode table per chunk read. */
export const INODE_CHUNK_BYTES = 256 << 10;

/** A chunk whose wanted inodes lie in fewer table blocks than this is read block by block (prefetch). */
const SPARSE_CHUNK_BLOCKS = 4;

/** Where inode `ino` lives: its group, its index in the group, and its table block. */
export interface InodeLocation {
  readonly group: number;
  readonly index: number;
  /** Block index within the group's inode table. */
  readonly tableBlock: number;
  /** Byte offset within that block. */
  readonly within: number;
  /** Absolute block number. */
  readonly blockNo: number;
}

export function locateInode(sb: Superblock, gd: (g: number) => GroupDescriptor, ino: number): InodeLocation {
  const group = Math.floor((ino - 1) / sb.s_inodes_per_group);
  const index = (ino - 1) % sb.s_inodes_per_group;
  const byteInTable = index * sb.s_inode_size;
  const tableBlock = Math.floor(byteInTable / sb.blockSize);
  return { group, index, tableBlock, within: byteInTable % sb.blockSize, blockNo: gd(group).bg_inode_table + tableBlock };
}

/**
 * Inodes of group `g` that may be in use: all of them, but none in an INODE_UNINIT group
 * and not the bg_itable_unused tail (with group checksums, which make both trustworthy).
 */
export function usedInodeCount(sb: Superblock, gd: GroupDescriptor): number {
  if (!hasGroupChecksums(sb)) return sb.s_inodes_per_group;
  if (gd.bg_flags & EXT4_BG_INODE_UNINIT) return 0;
  return Math.max(0, sb.s_inodes_per_group - gd.bg_itable_unused);
}

/** Inode-table blocks of group `g` that hold the inodes usedInodeCount counts. */
export function usedTableBlocks(sb: Superblock, gd: GroupDescriptor): number {
  return Math.ceil((usedInodeCount(sb, gd) * sb.s_inode_size) / sb.blockSize);
}

/** A block of an inode table: its bytes start at `offset` of `bytes`. */
export interface TableBlock {
  readonly bytes: Uint8Array;
  readonly offset: number;
}

/** `shared`: the bytes are also another's (lent to or by another cache, or a scan's buffer), so a write copies them first. */
type Chunk = { readonly first: number; readonly bytes: Uint8Array; shared: boolean };

/**
 * An LRU cache of inode-table chunks within a byte budget (by default the one all caches
 * share). Chunks are aligned to INODE_CHUNK_BYTES within each group's table and clipped to
 * its used part.
 */
export class InodeTableCache {
  /** Table blocks per chunk. */
  readonly chunkBlocks: number;
  private readonly chunksPerGroup: number;
  private readonly chunks: LruCache<number, Chunk>;
  /** Most chunks the budget holds: a prefetch asks for at most half as many. */
  private readonly maxChunks: number;
  private readonly pending = new Map<number, Promise<Chunk | undefined>>();
  /** Chunks whose read failed: their blocks go through the caller's single-block path. */
  private readonly failed = new Set<number>();
  /**
   * Where table blocks may come from without a read: `count` blocks of group `g`'s table
   * from block `blockNo`, or undefined (see Ext4Fs.borrowInodeTables).
   */
  lender: ((g: number, blockNo: number, count: number) => Uint8Array | undefined) | undefined;
  /** Key of the chunk the last peek or load used, and of the one after it (for readahead). */
  private lastUsed = -2;
  private expected = -1;
  /** Bumped by every write: a read that started before it must not fill the cache. */
  private gen = 0;

  constructor(
    private readonly sb: Superblock,
    private readonly gd: (g: number) => GroupDescriptor,
    private readonly readBlocks: (blockNo: number, count: number) => Promise<Uint8Array>,
    /** The budget, or a budget of its own of this many bytes. */
    budget: CacheBudget | number = sharedCacheBudget,
  ) {
    this.chunkBlocks = Math.max(1, Math.floor(INODE_CHUNK_BYTES / sb.blockSize));
    this.chunksPerGroup = Math.ceil(Math.ceil((sb.s_inodes_per_group * sb.s_inode_size) / sb.blockSize) / this.chunkBlocks);
    const b = typeof budget === 'number' ? new CacheBudget(budget) : budget;
    this.chunks = new LruCache({ budget: b });
    this.maxChunks = Math.max(1, Math.floor(b.limit / (this.chunkBlocks * sb.blockSize)));
  }

  private key(group: number, chunk: number): number {
    return group * this.chunksPerGroup + chunk;
  }

  /** The block at `loc` within chunk `c`, or undefined if the chunk (clipped to the used part of the table) ends before it. */
  private blockIn(c: Chunk, loc: InodeLocation): TableBlock | undefined {
    const offset = (loc.tableBlock - c.first) * this.sb.blockSize;
    return offset < c.bytes.length ? { bytes: c.bytes, offset } : undefined;
  }

  /** The cached block, without waiting, or undefined. */
  peek(loc: InodeLocation): TableBlock | undefined {
    const ci = Math.floor(loc.tableBlock / this.chunkBlocks);
    const k = this.key(loc.group, ci);
    const c = this.chunks.get(k);
    if (c === undefined) return undefined;
    if (k !== this.lastUsed) this.used(loc.group, ci, k);
    return this.blockIn(c, loc);
  }

  /**
   * The cached chunk holding table block `tableBlock` of group `g` (its bytes start at
   * table block `first`; a block at or past first + bytes.length / blockSize is not in
   * it), without waiting; undefined if not cached. As peek, with no object made: a walk
   * asks once per chunk its entries' inodes lie in.
   */
  peekChunk(g: number, tableBlock: number): { readonly first: number; readonly bytes: Uint8Array } | undefined {
    const ci = Math.floor(tableBlock / this.chunkBlocks);
    const k = this.key(g, ci);
    const c = this.chunks.get(k);
    if (c === undefined) return undefined;
    if (k !== this.lastUsed) this.used(g, ci, k);
    return c;
  }

  /**
   * Notes that a reader moved on to chunk `k`; when it is the successor of the chunk it
   * used before (a walk in table order, across groups too), starts reading the next one
   * (readahead), so that it is there when the reader gets to it.
   */
  private used(g: number, ci: number, k: number): void {
    const next = this.nextChunk(g, ci);
    if (k === this.expected && next !== undefined) void this.loadChunk(next[0], next[1]);
    this.expected = next === undefined ? -1 : this.key(next[0], next[1]);
    this.lastUsed = k;
  }

  /** The chunk after chunk `ci` of group `g` in table order: the group's next, or the next group's first; undefined past the used parts. */
  private nextChunk(g: number, ci: number): [number, number] | undefined {
    if ((ci + 1) * this.chunkBlocks < usedTableBlocks(this.sb, this.gd(g))) return [g, ci + 1];
    if (g + 1 < this.sb.groupCount && usedTableBlocks(this.sb, this.gd(g + 1)) > 0) return [g + 1, 0];
    return undefined;
  }

  /**
   * The block holding the inode at `loc`, reading its chunk if needed; undefined when the
   * block lies outside the used part of the table or its chunk could not be read (the
   * caller then reads the single block and meets its error, if any).
   */
  async load(loc: InodeLocation): Promise<TableBlock | undefined> {
    const ci = Math.floor(loc.tableBlock / this.chunkBlocks);
    const k = this.key(loc.group, ci);
    if (k !== this.lastUsed) this.used(loc.group, ci, k);
    const c = await this.loadChunk(loc.group, ci);
    return c === undefined ? undefined : this.blockIn(c, loc);
  }

  /**
   * Reads the chunks that hold these inodes (valid numbers), concurrently, at most half
   * of what the cache holds; resolves when they are read. Never rejects. A chunk in which
   * the inodes fill fewer than SPARSE_CHUNK_BLOCKS table blocks is not read: the absolute
   * numbers of those blocks are returned instead, for the caller to read alone (a root's
   * subdirectories lie one per chunk: reading each whole chunk would fill the cache with
   * chunks evicted before the walk gets to them, and read them all twice).
   */
  async prefetch(inos: Iterable<number>): Promise<number[]> {
    const sb = this.sb;
    const inodesPerChunk = Math.max(1, Math.floor((this.chunkBlocks * sb.blockSize) / sb.s_inode_size));
    const inodesPerBlock = Math.max(1, Math.floor(sb.blockSize / sb.s_inode_size));
    // Chunk key -> [group, chunk, the table blocks (within the group) wanted in it].
    const wanted = new Map<number, [number, number, number[]]>();
    let lastKey = -1;
    let lastBlock = -1;
    for (const ino of inos) {
      // locateInode's arithmetic, without an object per inode (a listing's children are many).
      const group = Math.floor((ino - 1) / sb.s_inodes_per_group);
      const index = (ino - 1) % sb.s_inodes_per_group;
      const ci = Math.floor(index / inodesPerChunk);
      const k = this.key(group, ci);
      const block = Math.floor(index / inodesPerBlock);
      if (k === lastKey && block === lastBlock) continue;
      lastKey = k;
      lastBlock = block;
      let w = wanted.get(k);
      if (w === undefined) {
        if (this.chunks.has(k)) continue;
        // Sparse chunks cost a block each: more of them than of whole chunks are looked at.
        if (wanted.size >= this.maxChunks * 2) break;
        wanted.set(k, (w = [group, ci, []]));
      }
      if (!w[2].includes(block)) w[2].push(block);
    }
    const reads: Array<Promise<Chunk | undefined>> = [];
    const single: number[] = [];
    for (const [g, ci, blocks] of wanted.values()) {
      if (blocks.length >= SPARSE_CHUNK_BLOCKS) {
        if (reads.length < this.maxChunks / 2) reads.push(this.loadChunk(g, ci));
      } else for (const b of blocks) if (b < usedTableBlocks(sb, this.gd(g))) single.push(this.gd(g).bg_inode_table + b);
    }
    await Promise.all(reads);
    return single;
  }

  /** The cached bytes of `count` table blocks from absolute block `blockNo` of group `g`, if one cached chunk holds them all; no I/O. */
  cachedBlocks(g: number, blockNo: number, count: number): Uint8Array | undefined {
    const rel = blockNo - this.gd(g).bg_inode_table;
    const ci = Math.floor(rel / this.chunkBlocks);
    if (rel < 0 || Math.floor((rel + count - 1) / this.chunkBlocks) !== ci) return undefined;
    const c = this.chunks.get(this.key(g, ci));
    if (c === undefined) return undefined;
    const from = (rel - c.first) * this.sb.blockSize;
    const to = from + count * this.sb.blockSize;
    if (to > c.bytes.length) return undefined;
    // The borrower holds a view: a later write here patches a copy, not the borrower's bytes.
    c.shared = true;
    return c.bytes.subarray(from, to);
  }

  /**
   * Takes blocks [firstBlock, firstBlock + n) of group `g`'s table that a caller read
   * itself (a scan of all inodes), so that inodes read afterwards need no second read:
   * the chunks they cover whole are cached, as views of `bytes` (consecutive ones, so
   * they leave the cache together and keep no more of `bytes` alive than the budget).
   */
  adopt(g: number, firstBlock: number, bytes: Uint8Array, readAt: number): void {
    // A write since the read began (readAt: `generation` then) may have made them stale.
    if (readAt !== this.gen) return;
    const bs = this.sb.blockSize;
    const used = usedTableBlocks(this.sb, this.gd(g));
    const endBlock = firstBlock + Math.floor(bytes.length / bs);
    for (let ci = Math.ceil(firstBlock / this.chunkBlocks); ci * this.chunkBlocks < used; ci++) {
      const first = ci * this.chunkBlocks;
      const end = Math.min(first + this.chunkBlocks, used);
      if (end > endBlock) break;
      const k = this.key(g, ci);
      if (this.pending.has(k) || this.chunks.get(k) !== undefined) continue;
      this.chunks.set(k, { first, bytes: bytes.subarray((first - firstBlock) * bs, (end - firstBlock) * bs), shared: true });
    }
  }

  /** Chunk `ci` of group `g`'s table, read once however many ask; undefined if it is outside the used part or its read failed. */
  private loadChunk(g: number, ci: number): Promise<Chunk | undefined> {
    const k = this.key(g, ci);
    const hit = this.chunks.get(k);
    if (hit !== undefined) return Promise.resolve(hit);
    if (this.failed.has(k)) return Promise.resolve(undefined);
    const used = usedTableBlocks(this.sb, this.gd(g));
    const first = ci * this.chunkBlocks;
    // Past the used part (or past the table: a readahead at its end) nothing is read.
    if (ci >= this.chunksPerGroup || first >= used) return Promise.resolve(undefined);
    let p = this.pending.get(k);
    if (p === undefined) {
      const count = Math.min(this.chunkBlocks, used - first);
      const lent = this.lender?.(g, this.gd(g).bg_inode_table + first, count);
      if (lent !== undefined) {
        const c: Chunk = { first, bytes: lent, shared: true };
        this.chunks.set(k, c);
        return Promise.resolve(c);
      }
      const gen = this.gen;
      p = this.readBlocks(this.gd(g).bg_inode_table + first, count).then(
        (bytes) => {
          const c: Chunk = { first, bytes, shared: false };
          if (gen === this.gen) this.chunks.set(k, c);
          return c;
        },
        () => {
          this.failed.add(k);
          return undefined;
        },
      );
      this.pending.set(k, p);
      const mine = p;
      // A write clears pending; a newer read of the same chunk then owns the slot.
      void p.finally(() => {
        if (this.pending.get(k) === mine) this.pending.delete(k);
      });
    }
    return p;
  }

  /**
   * Keeps the cache equal to the device after the writer wrote the inode at `loc`: a
   * cached chunk holding it is patched in place; reads still in flight are forgotten, so
   * later reads start afresh.
   */
  noteInodeWrite(loc: InodeLocation, bytes: Uint8Array): void {
    this.gen++;
    this.pending.clear();
    // This device no longer holds what a lender's "unchanged" promised.
    this.lender = undefined;
    const k = this.key(loc.group, Math.floor(loc.tableBlock / this.chunkBlocks));
    let c = this.chunks.peek(k);
    if (c === undefined) return;
    const at = this.blockIn(c, loc);
    if (at === undefined) return;
    if (c.shared) {
      // Patching shared bytes would change another cache (or a scan's buffer): patch a copy.
      c = { first: c.first, bytes: c.bytes.slice(), shared: false };
      this.chunks.set(k, c);
    }
    c.bytes.set(bytes, at.offset + loc.within);
  }

  /** Counts writes (noteInodeWrite): bytes read before a change of it may be stale and must not be adopted. */
  get generation(): number {
    return this.gen;
  }
}
