/**
 * Where an ext4 filesystem keeps its group metadata, computed from the superblock and the
 * group descriptors (ext4 doc, blockgroup.rst, group_descr.rst), so a changed block can be
 * classified arithmetically: a superblock/GDT copy, a bitmap, or an inode-table block
 * (and then which inode numbers it holds). Also answers "is inode/block N in use" from
 * the bitmaps, reading one bitmap block per group asked about.
 */
import type { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT } from '../fs/ext4/constants.js';
import { groupSuperAndDescriptors, hasGroupChecksums } from '../fs/ext4/groupDescriptors.js';
import { testBit } from '../fs/ext4/bitmaps.js';
import { BlockRuns } from '../fs/BlockRuns.js';

export type GroupMetaKind = 'superblock' | 'group descriptors' | 'reserved GDT' | 'block bitmap' | 'inode bitmap' | 'inode table';

export interface GroupMetaRun {
  readonly start: number;
  readonly count: number;
  readonly kind: GroupMetaKind;
  readonly group: number;
}

export class Ext4Layout {
  /** Every group's metadata runs, ascending by block. */
  readonly metaRuns: readonly GroupMetaRun[];
  /** The same blocks as a set (plus the boot block with 1 KiB blocks). */
  readonly metaBlocks: BlockRuns;
  readonly inodeTableBlocks: number;
  readonly inodesPerBlock: number;
  private readonly inodeBitmaps = new Map<number, Uint8Array | null>();
  private readonly blockBitmaps = new Map<number, Uint8Array | null>();

  constructor(readonly fs: Ext4Fs) {
    const sb = fs.superblock;
    this.inodeTableBlocks = Math.ceil((sb.s_inodes_per_group * sb.s_inode_size) / sb.blockSize);
    this.inodesPerBlock = sb.blockSize / sb.s_inode_size;
    const runs: GroupMetaRun[] = [];
    for (let g = 0; g < sb.groupCount; g++) {
      for (const r of groupSuperAndDescriptors(sb, g)) runs.push({ start: r.block, count: r.count, kind: r.role, group: g });
      const gd = fs.groupDescriptor(g);
      runs.push({ start: gd.bg_block_bitmap, count: 1, kind: 'block bitmap', group: g });
      runs.push({ start: gd.bg_inode_bitmap, count: 1, kind: 'inode bitmap', group: g });
      runs.push({ start: gd.bg_inode_table, count: this.inodeTableBlocks, kind: 'inode table', group: g });
    }
    runs.sort((x, y) => x.start - y.start);
    this.metaRuns = runs;
    this.metaBlocks = new BlockRuns([...(sb.s_first_data_block > 0 ? [[0, sb.s_first_data_block] as const] : []), ...runs.map((r) => [r.start, r.count] as const)]);
  }

  /**
   * Whether this layout is `older` grown in place (resize2fs, or the same filesystem): the
   * same block size and group geometry, at least as many blocks, groups and inodes, and
   * every group `older` has keeps its bitmaps and inode table where they were. Blocks and
   * inodes past `older`'s end are this filesystem's own.
   */
  grownFrom(older: Ext4Layout): boolean {
    const a = older.fs.superblock;
    const b = this.fs.superblock;
    if (a.blockSize !== b.blockSize || a.s_first_data_block !== b.s_first_data_block || a.s_blocks_per_group !== b.s_blocks_per_group) return false;
    if (a.s_inodes_per_group !== b.s_inodes_per_group || a.s_inode_size !== b.s_inode_size || a.s_first_ino !== b.s_first_ino) return false;
    if (b.s_blocks_count < a.s_blocks_count || b.groupCount < a.groupCount || b.s_inodes_count < a.s_inodes_count) return false;
    for (let g = 0; g < a.groupCount; g++) {
      const x = older.fs.groupDescriptor(g);
      const y = this.fs.groupDescriptor(g);
      if (x.bg_inode_table !== y.bg_inode_table || x.bg_inode_bitmap !== y.bg_inode_bitmap || x.bg_block_bitmap !== y.bg_block_bitmap) return false;
    }
    return true;
  }

  /**
   * The inode-table blocks within [start, start+count), each with the first inode number it
   * holds (inodesPerBlock consecutive inodes from there).
   */
  *inodeTableBlocksIn(start: number, count: number): Generator<{ block: number; group: number; firstIno: number }> {
    const sb = this.fs.superblock;
    const end = start + count;
    for (const r of this.metaRuns) {
      if (r.kind !== 'inode table' || r.start >= end || r.start + r.count <= start) continue;
      for (let b = Math.max(start, r.start); b < Math.min(end, r.start + r.count); b++) {
        const firstIno = r.group * sb.s_inodes_per_group + (b - r.start) * this.inodesPerBlock + 1;
        yield { block: b, group: r.group, firstIno };
      }
    }
  }

  private async inodeBitmap(g: number): Promise<Uint8Array | null> {
    if (!this.inodeBitmaps.has(g)) {
      const sb = this.fs.superblock;
      const gd = this.fs.groupDescriptor(g);
      const uninit = hasGroupChecksums(sb) && (gd.bg_flags & EXT4_BG_INODE_UNINIT) !== 0;
      this.inodeBitmaps.set(g, uninit ? null : await this.fs.readBlocks(gd.bg_inode_bitmap, 1));
    }
    return this.inodeBitmaps.get(g)!;
  }

  /** Whether inode `ino` is marked in use (uninitialised groups and the itable_unused tail are free). */
  async inodeInUse(ino: number): Promise<boolean> {
    const sb = this.fs.superblock;
    if (ino < 1 || ino > sb.s_inodes_count) return false;
    const g = Math.floor((ino - 1) / sb.s_inodes_per_group);
    const idx = (ino - 1) % sb.s_inodes_per_group;
    const bm = await this.inodeBitmap(g);
    if (bm === null) return false;
    if (hasGroupChecksums(sb) && idx >= sb.s_inodes_per_group - this.fs.groupDescriptor(g).bg_itable_unused) return false;
    return testBit(bm, idx);
  }

  /**
   * Whether block `blockNo` is marked in use. A group with an uninitialised bitmap uses
   * only its own metadata.
   */
  async blockInUse(blockNo: number): Promise<boolean> {
    const sb = this.fs.superblock;
    if (blockNo < sb.s_first_data_block || blockNo >= sb.s_blocks_count) return blockNo < sb.s_first_data_block;
    const g = Math.floor((blockNo - sb.s_first_data_block) / sb.s_blocks_per_group);
    if (!this.blockBitmaps.has(g)) {
      const gd = this.fs.groupDescriptor(g);
      const uninit = hasGroupChecksums(sb) && (gd.bg_flags & EXT4_BG_BLOCK_UNINIT) !== 0;
      this.blockBitmaps.set(g, uninit ? null : await this.fs.readBlocks(gd.bg_block_bitmap, 1));
    }
    const bm = this.blockBitmaps.get(g)!;
    if (bm === null) return this.metaBlocks.has(blockNo);
    return testBit(bm, blockNo - sb.s_first_data_block - g * sb.s_blocks_per_group);
  }
}
