/**
 * The one model of an ext4 filesystem's layout (ext4 doc, blockgroup.rst, group_descr.rst,
 * checksums.rst): the geometry of every block group, where each group's metadata sits
 * (superblock and descriptor copies, reserved GDT blocks, bitmaps, inode table; with
 * flex_bg the bitmaps and tables of a flex group lie in its first group), and which blocks
 * and inodes the bitmaps mark in use. The reader (Ext4Fs), blockdiff and the writer all
 * ask it; none recomputes it.
 *
 * Bitmaps are read through the filesystem's device, one block per group, checksums
 * verified (metadata_csum), cached in a bounded LRU. Groups whose bitmap was never
 * initialised (uninit_bg / metadata_csum with BLOCK_UNINIT or INODE_UNINIT) get the
 * bitmap the kernel would write when it initialises them (ext4_init_block_bitmap,
 * ext4_init_inode_bitmap): BLOCK_UNINIT marks the group's superblock and descriptor
 * copies and the group metadata lying in it; INODE_UNINIT marks nothing. Both mark the
 * padding bits past the group's end, as the kernel does.
 */
import { LruCache } from '../../diskimage/LruCache.js';
import { InternalError } from '../../errors.js';
import { BlockRuns, type BlockRun } from '../BlockRuns.js';
import { clearRuns, testBit, verifyBlockBitmap, verifyInodeBitmap } from './bitmaps.js';
import { EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT, EXT4_FEATURE_RO_COMPAT_METADATA_CSUM } from './constants.js';
import type { Ext4Context } from './context.js';
import { groupBlockCount, groupFirstBlock, groupSuperAndDescriptors, hasGroupChecksums, type GroupDescriptor } from './groupDescriptors.js';
import { usedInodeCount } from './inodeTable.js';
import type { Superblock } from './superblock.js';

/** What a block of group metadata is. */
export type GroupMetaKind = 'boot block' | 'superblock' | 'group descriptors' | 'reserved GDT' | 'block bitmap' | 'inode bitmap' | 'inode table';

/** A run of group metadata: `group` is the group it describes (with flex_bg, not always the one it lies in). */
export interface GroupMetaRun {
  readonly start: number;
  readonly count: number;
  readonly kind: GroupMetaKind;
  readonly group: number;
}

/** One block group's geometry and descriptor facts, as a writer needs them. */
export interface GroupGeometry {
  readonly group: number;
  readonly firstBlock: number;
  /** Blocks in the group (the last one may be short). */
  readonly blockCount: number;
  readonly firstIno: number;
  /** s_inodes_per_group. */
  readonly inodeCount: number;
  readonly blockBitmap: number;
  readonly inodeBitmap: number;
  readonly inodeTable: number;
  readonly inodeTableBlocks: number;
  /** The flags below are honoured only with group checksums (gdt_csum or metadata_csum), as the kernel honours them. */
  readonly blockUninit: boolean;
  readonly inodeUninit: boolean;
  /** Inodes at the end of the table never used (bg_itable_unused; 0 without group checksums). */
  readonly itableUnused: number;
}

export class Ext4Layout {
  readonly blockSize: number;
  readonly groupCount: number;
  readonly inodeTableBlocks: number;
  readonly inodesPerBlock: number;
  private runs: readonly GroupMetaRun[] | undefined;
  private runSet: BlockRuns | undefined;
  /** Bitmaps read, charged to the budget all caches share. */
  private readonly bitmaps: LruCache<number, Uint8Array>;
  /** Bitmap reads under way, by cache key. */
  private readonly loading = new Map<number, Promise<Uint8Array>>();

  /**
   * `readBlocks` reads whole blocks of the filesystem (Ext4Fs.readBlocks); `ctx` carries
   * the checksum policy bitmaps are verified under.
   */
  constructor(
    readonly superblock: Superblock,
    private readonly descriptors: readonly GroupDescriptor[],
    private readonly readBlocks: (blockNo: number, count: number) => Promise<Uint8Array>,
    private readonly ctx: Ext4Context,
  ) {
    const sb = superblock;
    if (descriptors.length !== sb.groupCount) throw new InternalError(`${descriptors.length} group descriptors for ${sb.groupCount} groups`);
    this.blockSize = sb.blockSize;
    this.groupCount = sb.groupCount;
    this.inodeTableBlocks = Math.ceil((sb.s_inodes_per_group * sb.s_inode_size) / sb.blockSize);
    this.inodesPerBlock = sb.blockSize / sb.s_inode_size;
    this.bitmaps = new LruCache();
  }

  /**
   * Every group's metadata runs (and the boot block before s_first_data_block), ascending
   * by block. Computed when first asked (O(groups); opening a filesystem does not pay it).
   */
  get metaRuns(): readonly GroupMetaRun[] {
    if (this.runs === undefined) {
      const sb = this.superblock;
      const runs: GroupMetaRun[] = [];
      // With 1 KiB blocks block 0 lies before group 0: the boot block.
      if (sb.s_first_data_block > 0) runs.push({ start: 0, count: sb.s_first_data_block, kind: 'boot block', group: 0 });
      for (let g = 0; g < sb.groupCount; g++) runs.push(...this.metaRunsOf(g));
      this.runs = runs.sort((x, y) => x.start - y.start);
    }
    return this.runs;
  }

  /** The blocks of metaRuns as a set. */
  get metaBlocks(): BlockRuns {
    return (this.runSet ??= new BlockRuns(this.metaRuns.map((r) => [r.start, r.count] as const)));
  }

  /** The geometry of group `g` (INTERNAL outside 0..groupCount-1). */
  group(g: number): GroupGeometry {
    const sb = this.superblock;
    const gd = this.descriptor(g);
    const csums = hasGroupChecksums(sb);
    return {
      group: g,
      firstBlock: groupFirstBlock(sb, g),
      blockCount: groupBlockCount(sb, g),
      firstIno: g * sb.s_inodes_per_group + 1,
      inodeCount: sb.s_inodes_per_group,
      blockBitmap: gd.bg_block_bitmap,
      inodeBitmap: gd.bg_inode_bitmap,
      inodeTable: gd.bg_inode_table,
      inodeTableBlocks: this.inodeTableBlocks,
      blockUninit: csums && (gd.bg_flags & EXT4_BG_BLOCK_UNINIT) !== 0,
      inodeUninit: csums && (gd.bg_flags & EXT4_BG_INODE_UNINIT) !== 0,
      itableUnused: csums ? gd.bg_itable_unused : 0,
    };
  }

  private descriptor(g: number): GroupDescriptor {
    const d = Number.isInteger(g) ? this.descriptors[g] : undefined;
    if (d === undefined) throw new InternalError(`group ${g} out of range 0..${this.groupCount - 1}`);
    return d;
  }

  /**
   * The metadata runs that describe group `g`, wherever they lie: its superblock,
   * descriptor and reserved-GDT copies (in the group itself, as ext2fs_super_and_bgd_loc2
   * places them), its two bitmaps and its inode table.
   */
  metaRunsOf(g: number): GroupMetaRun[] {
    const gd = this.descriptor(g);
    const out: GroupMetaRun[] = groupSuperAndDescriptors(this.superblock, g).map((r) => ({ start: r.block, count: r.count, kind: r.role, group: g }));
    out.push({ start: gd.bg_block_bitmap, count: 1, kind: 'block bitmap', group: g });
    out.push({ start: gd.bg_inode_bitmap, count: 1, kind: 'inode bitmap', group: g });
    out.push({ start: gd.bg_inode_table, count: this.inodeTableBlocks, kind: 'inode table', group: g });
    return out;
  }

  /** The group metadata run holding `blockNo`, or undefined (a data block, or free). */
  metaRunAt(blockNo: number): GroupMetaRun | undefined {
    const runs = this.metaRuns;
    let lo = 0;
    let hi = runs.length - 1;
    let found: GroupMetaRun | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (runs[mid]!.start <= blockNo) {
        found = runs[mid];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found !== undefined && blockNo < found.start + found.count ? found : undefined;
  }

  /** The group block `blockNo` lies in (INTERNAL outside [s_first_data_block, s_blocks_count)). */
  groupOfBlock(blockNo: number): number {
    const sb = this.superblock;
    if (!Number.isInteger(blockNo) || blockNo < sb.s_first_data_block || blockNo >= sb.s_blocks_count) {
      throw new InternalError(`block ${blockNo} outside the groups ${sb.s_first_data_block}..${sb.s_blocks_count - 1}`);
    }
    return Math.floor((blockNo - sb.s_first_data_block) / sb.s_blocks_per_group);
  }

  /** The group inode `ino` belongs to (INTERNAL outside 1..s_inodes_count). */
  groupOfInode(ino: number): number {
    const sb = this.superblock;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.s_inodes_count) throw new InternalError(`inode ${ino} outside 1..${sb.s_inodes_count}`);
    return Math.floor((ino - 1) / sb.s_inodes_per_group);
  }

  /**
   * Whether this layout is `older` grown in place (resize2fs, or the same filesystem): the
   * same block size and group geometry, at least as many blocks, groups and inodes, and
   * every group `older` has keeps its bitmaps and inode table where they were. Blocks and
   * inodes past `older`'s end are this filesystem's own.
   */
  grownFrom(older: Ext4Layout): boolean {
    const a = older.superblock;
    const b = this.superblock;
    if (a.blockSize !== b.blockSize || a.s_first_data_block !== b.s_first_data_block || a.s_blocks_per_group !== b.s_blocks_per_group) return false;
    if (a.s_inodes_per_group !== b.s_inodes_per_group || a.s_inode_size !== b.s_inode_size || a.s_first_ino !== b.s_first_ino) return false;
    if (b.s_blocks_count < a.s_blocks_count || b.groupCount < a.groupCount || b.s_inodes_count < a.s_inodes_count) return false;
    for (let g = 0; g < a.groupCount; g++) {
      const x = older.descriptor(g);
      const y = this.descriptor(g);
      if (x.bg_inode_table !== y.bg_inode_table || x.bg_inode_bitmap !== y.bg_inode_bitmap || x.bg_block_bitmap !== y.bg_block_bitmap) return false;
    }
    return true;
  }

  /**
   * The inode-table blocks within [start, start+count), each with the first inode number it
   * holds (inodesPerBlock consecutive inodes from there).
   */
  *inodeTableBlocksIn(start: number, count: number): Generator<{ block: number; group: number; firstIno: number }> {
    const end = start + count;
    for (const r of this.metaRuns) {
      if (r.kind !== 'inode table' || r.start >= end || r.start + r.count <= start) continue;
      for (let b = Math.max(start, r.start); b < Math.min(end, r.start + r.count); b++) {
        yield { block: b, group: r.group, firstIno: r.group * this.superblock.s_inodes_per_group + (b - r.start) * this.inodesPerBlock + 1 };
      }
    }
  }

  /**
   * Group `g`'s block bitmap, one block, as a copy the caller may change: read with its
   * checksum verified (BAD_CHECKSUM naming the bitmap and its byte offset, or a diagnostic
   * under 'warn'), or, for a BLOCK_UNINIT group, synthesised (see the module comment).
   * Throws BAD_CHECKSUM, IO.
   */
  async blockBitmap(g: number): Promise<Uint8Array> {
    return (await this.cachedBlockBitmap(g)).slice();
  }

  /** Group `g`'s inode bitmap as blockBitmap gives the block bitmap (INODE_UNINIT: all free). */
  async inodeBitmap(g: number): Promise<Uint8Array> {
    return (await this.cachedInodeBitmap(g)).slice();
  }

  private cachedBlockBitmap(g: number): Promise<Uint8Array> {
    return this.cached(2 * g, async () => {
      const geo = this.group(g);
      if (geo.blockUninit) return this.synthesizedBlockBitmap(geo);
      const bitmap = await this.readBlocks(geo.blockBitmap, 1);
      if (this.metadataCsum) verifyBlockBitmap(this.superblock, this.ctx, g, this.descriptor(g), bitmap);
      return bitmap;
    });
  }

  private cachedInodeBitmap(g: number): Promise<Uint8Array> {
    return this.cached(2 * g + 1, async () => {
      const geo = this.group(g);
      if (geo.inodeUninit) return this.paddedBitmap(geo.inodeCount);
      const bitmap = await this.readBlocks(geo.inodeBitmap, 1);
      if (this.metadataCsum) verifyInodeBitmap(this.superblock, this.ctx, g, this.descriptor(g), bitmap);
      return bitmap;
    });
  }

  /** Forgets the cached bitmaps (after the blocks under them were written). */
  forgetBitmaps(): void {
    this.bitmaps.clear();
  }

  /** One load per key at a time; a failed load is not kept, so asking again meets the error again. */
  private async cached(key: number, load: () => Promise<Uint8Array>): Promise<Uint8Array> {
    const hit = this.bitmaps.get(key);
    if (hit !== undefined) return hit;
    let p = this.loading.get(key);
    if (p === undefined) {
      p = load().finally(() => this.loading.delete(key));
      this.loading.set(key, p);
    }
    const bitmap = await p;
    this.bitmaps.set(key, bitmap);
    return bitmap;
  }

  private get metadataCsum(): boolean {
    return (this.superblock.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  }

  /** A block-sized bitmap with `bits` clear bits, then set padding bits (ext4_mark_bitmap_end). */
  private paddedBitmap(bits: number): Uint8Array {
    const bitmap = new Uint8Array(this.blockSize);
    for (let i = bits; i < bitmap.length * 8; i++) bitmap[i >>> 3]! |= 1 << (i & 7);
    return bitmap;
  }

  /**
   * A BLOCK_UNINIT group's bitmap: its superblock and descriptor copies and whatever group
   * metadata lies in it. The kernel (ext4_init_block_bitmap) marks the group's own metadata
   * found inside it; e2fsprogs (read_bitmaps) marks the metadata of every BLOCK_UNINIT
   * group wherever it lies. mke2fs and resize2fs clear BLOCK_UNINIT on a group that holds
   * another's metadata, so on a consistent filesystem both agree with this; where they do
   * not, marking every metadata block keeps an allocator off them.
   */
  private synthesizedBlockBitmap(geo: GroupGeometry): Uint8Array {
    const bitmap = this.paddedBitmap(geo.blockCount);
    for (const [s, c] of this.metaBlocks.intersect(geo.firstBlock, geo.blockCount)) {
      for (let b = s - geo.firstBlock; b < s - geo.firstBlock + c; b++) bitmap[b >>> 3]! |= 1 << (b & 7);
    }
    return bitmap;
  }

  /** Whether block `blockNo` is marked in use (blocks before s_first_data_block are; past the end are not). Throws as blockBitmap. */
  async blockInUse(blockNo: number): Promise<boolean> {
    const sb = this.superblock;
    if (blockNo < sb.s_first_data_block || blockNo >= sb.s_blocks_count) return blockNo >= 0 && blockNo < sb.s_first_data_block;
    const g = this.groupOfBlock(blockNo);
    return testBit(await this.cachedBlockBitmap(g), blockNo - groupFirstBlock(sb, g));
  }

  /**
   * Whether inode `ino` is marked in use: INODE_UNINIT groups and the bg_itable_unused tail
   * are free whatever their bits say (with group checksums, which make both trustworthy).
   * Throws as inodeBitmap.
   */
  async inodeInUse(ino: number): Promise<boolean> {
    const sb = this.superblock;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.s_inodes_count) return false;
    const g = this.groupOfInode(ino);
    const idx = ino - 1 - g * sb.s_inodes_per_group;
    if (idx >= usedInodeCount(sb, this.descriptor(g))) return false;
    return testBit(await this.cachedInodeBitmap(g), idx);
  }

  /** Free blocks per the block bitmaps, ascending. Throws as blockBitmap. */
  async freeBlocks(): Promise<BlockRuns> {
    const runs: BlockRun[] = [];
    for (let g = 0; g < this.groupCount; g++) {
      const geo = this.group(g);
      for (const [s, l] of clearRuns(await this.cachedBlockBitmap(g), geo.blockCount)) runs.push([geo.firstBlock + s, l]);
    }
    return new BlockRuns(runs);
  }

  /** Blocks in use per the block bitmaps (the boot block included). Throws as blockBitmap. */
  async usedBlocks(): Promise<BlockRuns> {
    return (await this.freeBlocks()).gapsIn(0, this.superblock.s_blocks_count);
  }

  /**
   * Inode numbers in use (see inodeInUse), ascending. Groups with no inode that can be in
   * use are not read. Throws as inodeBitmap.
   */
  async usedInodes(): Promise<BlockRuns> {
    const runs: BlockRun[] = [];
    for await (const g of this.inodeGroups()) {
      // Set bits = the complement of the clear runs within the first `count` bits.
      const free = new BlockRuns(clearRuns(g.bitmap, g.count));
      for (const [s, l] of free.gapsIn(0, g.count).runs()) runs.push([g.firstIno + s, l]);
    }
    return new BlockRuns(runs);
  }

  /** Free inode numbers (the complement of usedInodes in 1..s_inodes_count). Throws as inodeBitmap. */
  async freeInodes(): Promise<BlockRuns> {
    return (await this.usedInodes()).gapsIn(1, this.superblock.s_inodes_count);
  }

  /**
   * Per group that may hold inodes in use: its inode bitmap (checksum verified; not a copy,
   * do not change it) and how many of its inodes can be in use (the bg_itable_unused tail
   * and inodes past s_inodes_count excluded). Throws as inodeBitmap.
   */
  async *inodeGroups(): AsyncGenerator<{ group: number; firstIno: number; count: number; bitmap: Uint8Array }> {
    const sb = this.superblock;
    for (let g = 0; g < this.groupCount; g++) {
      const firstIno = g * sb.s_inodes_per_group + 1;
      const count = Math.max(0, Math.min(usedInodeCount(sb, this.descriptor(g)), sb.s_inodes_count - firstIno + 1));
      if (count === 0) continue;
      yield { group: g, firstIno, count, bitmap: await this.cachedInodeBitmap(g) };
    }
  }
}
