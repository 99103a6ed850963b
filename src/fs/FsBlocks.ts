/**
 * What blockdiff asks of a filesystem about its blocks, whatever the filesystem: where its
 * fixed metadata and file records are, which blocks and files are marked in use, which
 * blocks a file or the journal uses, and who owns a block. fs/ext4 implements it
 * (Ext4Fs.blocks); another filesystem plugs in by implementing it too.
 */
import type { BlockRuns } from './BlockRuns.js';

/** Who holds a block. */
export interface BlockHolder {
  /** The filesystem's name for what the block holds ('data', 'directory', 'extent node', 'inode table', ...); 'journal' for the journal. */
  readonly kind: string;
  /** The file (inode number) it belongs to; absent for filesystem metadata. */
  readonly ino?: number;
  /** The block's logical number within that file, for file content. */
  readonly lblk?: number;
}

/** Block -> holder, from a scan of every file. */
export interface BlockHolders {
  /** The holder of `blockNo`, 'free', or undefined (marked in use, but nothing holds it: a leak). */
  ownerOf(blockNo: number): BlockHolder | 'free' | undefined;
}

/** A block of file records (inodes): `recordsPerBlock` consecutive files from `firstIno`. */
export interface RecordBlock {
  readonly block: number;
  readonly firstIno: number;
}

export interface FsBlocks {
  readonly blockSize: number;
  /** Blocks in the filesystem. */
  readonly blockCount: number;
  /** Highest file (inode) number. */
  readonly fileCount: number;
  /** Blocks of fixed metadata: boot block, superblock and descriptor copies, bitmaps, file record tables. */
  readonly metaBlocks: BlockRuns;
  /** Bytes per file record, and records per block. */
  readonly recordSize: number;
  readonly recordsPerBlock: number;
  /** The file-record blocks within [start, start+count), ascending within each table. */
  recordBlocksIn(start: number, count: number): Iterable<RecordBlock>;
  /**
   * Whether this filesystem is `older` grown in place (or the same filesystem): every block
   * and file number `older` has means the same here, so a changed block can be judged by
   * what it holds on either side.
   */
  grownFrom(older: FsBlocks): boolean;
  /** Whether the allocation maps mark block `blockNo` in use. */
  blockInUse(blockNo: number): Promise<boolean>;
  /** Whether file `ino` is marked in use. */
  fileInUse(ino: number): Promise<boolean>;
  /** Blocks of the filesystem's own journal (empty without one). */
  journalBlocks(): Promise<BlockRuns>;
  /** Every block file `ino` uses: content, mapping metadata (extent nodes, indirect blocks), attribute blocks. */
  fileBlocks(ino: number): Promise<BlockRuns>;
  /**
   * Who holds each block (one scan of every file; the caller keeps the answer). With
   * `only`, who holds those blocks: the answer refuses (INTERNAL) questions about others.
   */
  owners(only?: BlockRuns): Promise<BlockHolders>;
}
