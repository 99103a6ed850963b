/**
 * Ext4's answers to the filesystem-neutral FsBlocks questions (fs/FsBlocks.ts), from the
 * layout model (layout.ts) and the reader (Ext4Fs).
 */
import { BlockRuns, type BlockRun } from '../BlockRuns.js';
import type { BlockHolders, FsBlocks, RecordBlock } from '../FsBlocks.js';
import { EXT4_FEATURE_COMPAT_HAS_JOURNAL } from './constants.js';
import type { Ext4Fs, Inode } from './Ext4Fs.js';
import type { Ext4Layout } from './layout.js';

export class Ext4Blocks implements FsBlocks {
  readonly layout: Ext4Layout;
  private journal: Promise<BlockRuns> | undefined;

  constructor(readonly fs: Ext4Fs) {
    this.layout = fs.layout;
  }

  get blockSize(): number {
    return this.fs.blockSize;
  }

  get blockCount(): number {
    return this.fs.superblock.s_blocks_count;
  }

  get fileCount(): number {
    return this.fs.superblock.s_inodes_count;
  }

  get metaBlocks(): BlockRuns {
    return this.layout.metaBlocks;
  }

  get recordSize(): number {
    return this.fs.superblock.s_inode_size;
  }

  get recordsPerBlock(): number {
    return this.layout.inodesPerBlock;
  }

  *recordBlocksIn(start: number, count: number): Generator<RecordBlock> {
    for (const t of this.layout.inodeTableBlocksIn(start, count)) yield { block: t.block, firstIno: t.firstIno };
  }

  grownFrom(older: FsBlocks): boolean {
    return older instanceof Ext4Blocks && this.layout.grownFrom(older.layout);
  }

  blockInUse(blockNo: number): Promise<boolean> {
    return this.layout.blockInUse(blockNo);
  }

  fileInUse(ino: number): Promise<boolean> {
    return this.layout.inodeInUse(ino);
  }

  /** The internal journal's blocks (an external journal has none here). Throws as inodeBlocks. */
  journalBlocks(): Promise<BlockRuns> {
    return (this.journal ??= (async () => {
      const sb = this.fs.superblock;
      if ((sb.s_feature_compat & EXT4_FEATURE_COMPAT_HAS_JOURNAL) === 0 || sb.s_journal_inum === 0) return new BlockRuns();
      return this.inodeBlocks(await this.fs.readInode(sb.s_journal_inum));
    })());
  }

  async fileBlocks(ino: number): Promise<BlockRuns> {
    return this.inodeBlocks(await this.fs.readInode(ino));
  }

  /**
   * The blocks an inode uses: its extents, extent nodes or indirect blocks, and its xattr
   * block. Throws CORRUPT_IMAGE, BAD_CHECKSUM.
   */
  async inodeBlocks(inode: Inode): Promise<BlockRuns> {
    const runs: BlockRun[] = [];
    // Extents all in i_block (most files) need no walk, and have no node blocks.
    const inline = this.fs.inlineExtentsOf(inode);
    if (inline !== undefined) for (const e of inline) runs.push([e.pblk, e.len]);
    else for await (const e of this.fs.extentsOf(inode, (pblk) => runs.push([pblk, 1]))) runs.push([e.pblk, e.len]);
    if (inode.i_file_acl !== 0) runs.push([inode.i_file_acl, 1]);
    return new BlockRuns(runs);
  }

  owners(only?: BlockRuns): Promise<BlockHolders> {
    return this.fs.blockOwnership(only);
  }
}
