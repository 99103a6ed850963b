/**
 * A read-only ext2/3/4 filesystem on any BlockDevice (a raw file, a partition slice of a
 * qcow2/VMDK chain). Opens and validates the superblock and group descriptors, then
 * reads inodes, directories (linear, htree, inline), file contents (extents, legacy
 * block maps, inline data), xattrs, and builds block ownership and free maps.
 * Everything that iterates streams (async iterables); every on-disk link is bounded.
 */
import { CacheBudget, LruCache } from '../../diskimage/LruCache.js';
import { readInto } from '../../diskimage/readInto.js';
import { asBuffer } from '../../diskimage/isZero.js';
import type { BlockDevice } from '../../diskimage/BlockDevice.js';
import { CorruptImageError, ImgdedupError, InternalError } from '../../errors.js';
import { testBit } from './bitmaps.js';
import { fsAt, fsCorrupt, fsReader, type FsByteReader, type ChecksumPolicy, type Ext4Context, type Ext4Diagnostic, type FsLocation } from './context.js';
import {
  EXT4_ERROR_FS,
  EXT4_EA_INODE_FL,
  EXT4_EXTENTS_FL,
  EXT4_FEATURE_INCOMPAT_EA_INODE,
  EXT4_FEATURE_COMPAT_HAS_JOURNAL,
  EXT4_FEATURE_COMPAT_ORPHAN_FILE,
  EXT4_FEATURE_INCOMPAT_FILETYPE,
  EXT4_FT_DIR,
  EXT4_FEATURE_INCOMPAT_LARGEDIR,
  EXT4_FEATURE_INCOMPAT_RECOVER,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT,
  EXT4_INDEX_FL,
  EXT4_INLINE_DATA_FL,
  EXT4_JOURNAL_INO,
  EXT4_MIN_INLINE_DATA_SIZE,
  EXT4_ORPHAN_BLOCK_MAGIC,
  EXT4_RESIZE_INO,
  EXT4_ROOT_INO,
  EXT4_DIND_BLOCK,
  EXT4_I_BLOCK_SIZE,
  EXT4_SUPERBLOCK_OFFSET,
  EXT4_SUPERBLOCK_SIZE,
  EXT4_VALID_FS,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
} from './constants.js';
import { checkedDirBlockEnd, decodeDirEntries, decodeDxNode, decodeDxRoot, forEachDirRecord, type DirBlockOptions, type DirEntry, type DxOptions } from './directory.js';
import { rootLeafExtents, walkExtentTree, type ExtentWalkEnv, type FileExtent } from './extents.js';
import { walkBlockMap } from './blockMap.js';
import {
  decodeGroupDescriptor,
  descriptorBlockCount,
  descriptorBlockLocation,
  descriptorsPerBlock,
  type GroupDescriptor,
} from './groupDescriptors.js';
import { checkInodeRecord, decodeInode, decodeInodeLazy, fileType, readStatFields, type Inode, type InodeStatFields } from './inode.js';
import { InodeTableCache, locateInode, type InodeLocation, type TableBlock } from './inodeTable.js';
import { Ext4Layout } from './layout.js';
import { DirListing } from './dirListing.js';
import { Ext4Blocks } from './Ext4Blocks.js';
import type { FsBlocks } from '../FsBlocks.js';
import type { BlockRuns } from '../BlockRuns.js';
import { byteKey, bytesEqual, isDotOrDotDot, joinPath, splitPath, utf8Bytes } from './names.js';
import { OwnershipBuilder, type BlockOwnership, type OwnerKind } from './ownership.js';
import { decodeSuperblock, type Superblock } from './superblock.js';
import { countCommittedTransactions, decodeJournalSuperblock } from './journal.js';
import { decodeInodeXattrs, decodeXattrBlock, isInlineDataXattr, type Xattr } from './xattr.js';

export type { FileExtent } from './extents.js';
export type { DirEntry } from './directory.js';
export type { Inode, Ext4Time, InodeStatFields } from './inode.js';
export { DirListing } from './dirListing.js';
export type { Xattr } from './xattr.js';
export type { Superblock } from './superblock.js';
export type { BlockOwnership, BlockOwner, OwnerRun } from './ownership.js';

export interface Ext4OpenOptions {
  /** Name of the image (or image:partition) for error messages. */
  readonly file: string;
  /** 'error' (default): a checksum mismatch throws BAD_CHECKSUM; 'warn': it is recorded in `diagnostics`. */
  readonly verifyChecksums?: ChecksumPolicy;
  /** Where the filesystem lies on the disk, for the offsets in errors (default: all of `file`). */
  readonly location?: FsLocation;
}

/** What `stat` returns: the inode's attributes as `debugfs stat` shows them. */
export interface Ext4Stat {
  readonly ino: number;
  readonly mode: number;
  readonly type: 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket' | 'unknown';
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly links: number;
  /** i_blocks in 512-byte sectors. */
  readonly blocks512: number;
  readonly flags: number;
  readonly generation: number;
  readonly atime: Inode['atime'];
  readonly ctime: Inode['ctime'];
  readonly mtime: Inode['mtime'];
  readonly crtime: Inode['crtime'];
  /** Device number for character and block devices. */
  readonly rdev?: { readonly major: number; readonly minor: number };
}

/** One entry of a walk: a path below the root and the inode it names. */
export interface WalkEntry {
  /** Path from the root, starting with '/', as bytes (names are bytes; see names.ts). */
  readonly path: Uint8Array;
  readonly ino: number;
  readonly parentIno: number;
  readonly name: Uint8Array;
  readonly fileType: number;
}

/** What Ext4Fs.listings walks and reads. */
export interface ListingsOptions {
  /** The directory to start at (default the root). */
  readonly start?: number;
  /**
   * Its path: listings' paths are this + '/' + names (a path of just '/' counts as the
   * root's: no double slash). Default empty: paths from the root, '/'-prefixed.
   */
  readonly startPath?: Uint8Array;
  /** Read each entry's stat columns (DirListing.hasStat). */
  readonly stat?: boolean;
  /** Entries in order of name bytes (else directory order). */
  readonly sorted?: boolean;
  /** Descend into subdirectories (default true); else only `start` is listed. */
  readonly recursive?: boolean;
  /** Told of a directory met again, not descended into: its path and inode, and where it was listed first. */
  readonly onRevisit?: (path: Uint8Array, ino: number, firstPath: Uint8Array) => void;
}

/** What a listing's paths join names to: its path, or nothing for the root's '/'. */
function listingBase(path: Uint8Array): Uint8Array {
  return path.length === 1 && path[0] === 0x2f ? new Uint8Array(0) : path;
}

/** Why a writer must not touch this filesystem. */
export interface WriteRefusal {
  readonly code: 'DIRTY_FILESYSTEM';
  /** Which state: a journal to replay, recorded errors, an unclean unmount, orphans. */
  readonly state: 'needs_recovery' | 'errors' | 'not_clean' | 'orphans';
  readonly reason: string;
  /** The facts behind the reason (for needs_recovery: the transactions waiting). */
  readonly detail?: string;
}

/** The internal journal's state (ext4 doc, journal.rst). */
export interface JournalState {
  /** needs_recovery is set in the superblock. */
  readonly needsRecovery: boolean;
  /** Committed transactions waiting to be replayed; null when unknown (external or unreadable journal). */
  readonly committedTransactions: number | null;
  /** Why the count is unknown. */
  readonly problem?: string;
}

const STAT_TYPES: Readonly<Record<number, Ext4Stat['type']>> = {
  [S_IFREG]: 'file',
  [S_IFDIR]: 'dir',
  [S_IFLNK]: 'symlink',
  [S_IFCHR]: 'chardev',
  [S_IFBLK]: 'blockdev',
  [S_IFIFO]: 'fifo',
  [S_IFSOCK]: 'socket',
};

/** The Ext4Stat type of an i_mode. */
export function statTypeOf(mode: number): Ext4Stat['type'] {
  return STAT_TYPES[fileType(mode)] ?? 'unknown';
}

/** Most bytes one readOf call returns (callers stream larger ranges). */
const MAX_READ_BYTES = 256 << 20;
/** Most blocks per directory read. */
const DIR_READ_BLOCKS = 64;
/** Most bytes of prefetched directory blocks held. */
const PREFETCH_DIR_BYTES = 8 << 20;
/** Prefetched directory pieces at most this many blocks apart are read together (so the gaps read make the bytes held at most 5 times PREFETCH_DIR_BYTES). */
const PREFETCH_GAP_BLOCKS = 4;
/** Most blocks one coalesced prefetch read covers. */
const PREFETCH_SPAN_BLOCKS = 256;
/** Bytes of inode records a scoped ownership scan keeps (scannedRecords): 16,384 records of 256 bytes. */
const SCANNED_RECORD_BYTES = 4 << 20;
/** Bytes of inode table per read when scanning all inodes. */
const SCAN_CHUNK_BYTES = 1 << 20;
/** Largest single device read when streaming file content. */
const READ_CHUNK = 1 << 20;
/** Most entries a listing's columns are first made for. */
const LISTING_CAPACITY = 4096;
/** Directory entries the lookup name index holds before it starts over (bounds its memory). */
const NAME_INDEX_ENTRIES = 100_000;

/** Large directories whose extent lists are kept (a few hundred bytes each). */
const DIR_TREE_EXTENTS_KEPT = 1024;

/** A directory entry's file_type (1-7) as the type bits of i_mode. */
const DIRENT_MODE_TYPES: readonly number[] = [0, 0o100000, 0o040000, 0o020000, 0o060000, 0o010000, 0o140000, 0o120000];

export class Ext4Fs {
  /** Group geometry, metadata and bitmaps: the one layout model (layout.ts). */
  readonly layout: Ext4Layout;
  private blockView: Ext4Blocks | undefined;
  /** Where unchanged blocks may be read instead (borrowBlocks). */
  private blockLender: { readonly fs: Ext4Fs; readonly unchanged: (blockNo: number, count: number) => boolean } | undefined;
  /** Metadata blocks (inode table blocks, directory index blocks), charged to the budget all caches share. */
  private readonly cache = new LruCache<number, Uint8Array>();
  private readonly itable: InodeTableCache;
  private readonly gdOf = (g: number): GroupDescriptor => this.groupDescriptor(g);
  /** Directory block reads started by prefetchDirectories, by `block+count`. */
  private readonly prefetched = new Map<string, Promise<Uint8Array | undefined>>();
  private prefetchedBytes = 0;
  /** Names of directories looked up (directory inode -> name key -> inode); dropped on any write. */
  private readonly nameIndex = new Map<number, Map<string, number>>();
  private nameIndexEntries = 0;
  /** Extents of directories whose extent root is an index node, with their tree's node blocks (see directoryExtentsOf). */
  private readonly dirTreeExtents = new Map<number, { readonly extents: readonly FileExtent[]; readonly nodes: readonly number[] }>();
  /** Tree node block -> the directory in dirTreeExtents it belongs to. */
  private readonly dirTreeNodes = new Map<number, number>();
  /**
   * Inode records a scoped ownership scan kept (blockOwnership with `only`): every
   * directory's and the owners' of those blocks, by inode number, copies as on disk. What
   * a diff reads next (the owners, the directories it walks to find their paths) is then
   * no second pass over inode tables larger than their cache. A budget of its own; dropped
   * on any write.
   */
  private readonly scannedRecords = new LruCache<number, Uint8Array>({ budget: new CacheBudget(SCANNED_RECORD_BYTES) });
  /** Another filesystem's scannedRecords, where its device holds the same table blocks (borrowInodeTables). */
  private recordLender: ((ino: number, loc: InodeLocation) => Uint8Array | undefined) | undefined;
  /** prefetchDirectories calls whose reads are not registered in `prefetched` yet. */
  private readonly prefetchBatches = new Set<Promise<void>>();
  private readonly env: ExtentWalkEnv;
  private orphanFileEntries: number | undefined;
  /** readListingStat's holder of one inode's stat fields, refilled per inode. */
  private readonly statHolder: InodeStatFields = { mode: 0, links: 0, uid: 0, gid: 0, size: 0, mtimeSec: 0, mtimeNsec: 0 };
  /** journalState's answer: the journal is read once (warnings and refusals both ask). */
  private journal: Promise<JournalState | undefined> | undefined;

  private constructor(
    readonly device: BlockDevice,
    readonly superblock: Superblock,
    private readonly groups: readonly GroupDescriptor[],
    private readonly ctx: Ext4Context,
  ) {
    this.layout = new Ext4Layout(superblock, groups, (b, n) => this.readBlocks(b, n), ctx);
    this.itable = new InodeTableCache(superblock, this.gdOf, (b, n) => this.readBlocks(b, n));
    this.env = {
      ctx,
      blockSize: superblock.blockSize,
      blocksCount: superblock.s_blocks_count,
      readBlocks: (b, n) => this.readBlocks(b, n),
      metadataCsum: this.metadataCsum,
    };
  }

  /**
   * Opens the filesystem on `device`: reads and validates the superblock and all group
   * descriptors. Throws CORRUPT_IMAGE, TRUNCATED, BAD_CHECKSUM, UNSUPPORTED_FEATURE, IO.
   */
  static async open(device: BlockDevice, options: Ext4OpenOptions): Promise<Ext4Fs> {
    const ctx: Ext4Context = {
      file: options.file,
      verifyChecksums: options.verifyChecksums ?? 'error',
      diagnostics: [],
      ...(options.location !== undefined ? { location: options.location } : {}),
    };
    if (device.size < EXT4_SUPERBLOCK_OFFSET + EXT4_SUPERBLOCK_SIZE) {
      throw new CorruptImageError('TRUNCATED', {
        ...fsAt(ctx, 'ext4.superblock', EXT4_SUPERBLOCK_OFFSET),
        detail: `device of ${device.size} bytes is too small for an ext4 superblock`,
      });
    }
    const sb = decodeSuperblock(await device.read(EXT4_SUPERBLOCK_OFFSET, EXT4_SUPERBLOCK_SIZE), ctx);
    // As the kernel refuses to mount ("block count exceeds size of device"): a filesystem
    // larger than its device is truncated or has a corrupt count, and the count sizes the
    // group table, so an unchecked count could demand gigabytes of descriptors.
    if (sb.s_blocks_count * sb.blockSize > device.size) {
      throw new CorruptImageError('TRUNCATED', {
        ...fsAt(ctx, 'ext4.superblock.s_blocks_count', EXT4_SUPERBLOCK_OFFSET + 0x04),
        detail: 'filesystem larger than its device',
        expected: `<= ${Math.floor(device.size / sb.blockSize)} blocks`,
        actual: sb.s_blocks_count,
      });
    }
    const per = descriptorsPerBlock(sb);
    const groups: GroupDescriptor[] = [];
    const nBlocks = descriptorBlockCount(sb);
    for (let i = 0; i < nBlocks; i++) {
      const blk = descriptorBlockLocation(sb, i);
      if (blk >= sb.s_blocks_count) fsCorrupt(ctx, 'ext4.group_desc', blk * sb.blockSize, 'descriptor block outside the filesystem');
      const bytes = await device.read(blk * sb.blockSize, sb.blockSize);
      for (let j = 0; j < per && i * per + j < sb.groupCount; j++) {
        const g = i * per + j;
        const off = j * sb.descSize;
        groups.push(decodeGroupDescriptor(bytes.subarray(off, off + sb.descSize), g, sb, ctx, blk * sb.blockSize + off));
      }
    }
    return new Ext4Fs(device, sb, groups, ctx);
  }

  /** The filesystem-neutral view of blocks and files that blockdiff uses (fs/FsBlocks.ts). */
  get blocks(): FsBlocks {
    return (this.blockView ??= new Ext4Blocks(this));
  }

  /** Problems that verifyChecksums 'warn' let pass, in the order met. */
  get diagnostics(): readonly Ext4Diagnostic[] {
    return this.ctx.diagnostics;
  }

  get blockSize(): number {
    return this.superblock.blockSize;
  }

  private get metadataCsum(): boolean {
    return (this.superblock.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  }

  /** The descriptor of group `g` (0 <= g < groupCount; INTERNAL otherwise). */
  groupDescriptor(g: number): GroupDescriptor {
    const d = this.groups[g];
    if (d === undefined) throw new InternalError(`group ${g} out of range 0..${this.groups.length - 1}`);
    return d;
  }

  /**
   * Reads `count` whole blocks from block `blockNo`. Throws CORRUPT_IMAGE for blocks
   * outside the filesystem, and what the device throws.
   */
  async readBlocks(blockNo: number, count: number): Promise<Uint8Array> {
    return this.deviceFor(blockNo, count).read(blockNo * this.blockSize, count * this.blockSize);
  }

  /**
   * The device to read blocks [blockNo, blockNo + count) from: the lender's where they are
   * unchanged (borrowBlocks), else this filesystem's. Throws CORRUPT_IMAGE unless they lie
   * inside the filesystem.
   */
  private deviceFor(blockNo: number, count: number): BlockDevice {
    const sb = this.superblock;
    if (!Number.isSafeInteger(blockNo) || blockNo < 0 || count < 0 || blockNo + count > sb.s_blocks_count) {
      fsCorrupt(this.ctx, 'ext4.block', blockNo * sb.blockSize, 'block outside the filesystem', { expected: `< ${sb.s_blocks_count}`, actual: blockNo + count - 1 });
    }
    const l = this.blockLender;
    if (l !== undefined && blockNo + count <= l.fs.superblock.s_blocks_count && l.unchanged(blockNo, count)) return l.fs.device;
    return this.device;
  }

  /**
   * Lets this filesystem read its blocks from `other`'s device where `unchanged(blockNo,
   * count)` says both devices hold the same bytes there (a diff's two sides: B is usually
   * an overlay, every read of which asks its layers which one holds the bytes; A's device
   * answers the same bytes at less cost). Same block size only; blocks past `other`'s end
   * are read here. A failed read there names `other`'s file.
   */
  borrowBlocks(other: Ext4Fs, unchanged: (blockNo: number, count: number) => boolean): void {
    if (other.blockSize !== this.blockSize || other === this) return;
    this.blockLender = { fs: other, unchanged };
  }

  /**
   * Block `blockNo` through the metadata cache (kept equal to the device by noteWrite): the
   * writer's directory lookups read the same blocks again and again. The bytes are shared:
   * a caller that edits them must copy first. Throws as readBlocks.
   */
  async readMetadataBlock(blockNo: number): Promise<Uint8Array> {
    return this.cachedBlock(blockNo);
  }

  private async cachedBlock(blockNo: number): Promise<Uint8Array> {
    const hit = this.cache.get(blockNo);
    if (hit !== undefined) return hit;
    const b = await this.readBlocks(blockNo, 1);
    this.cache.set(blockNo, b);
    return b;
  }

  /**
   * Keeps this reader's caches equal to the device after the writer wrote `bytes` at byte
   * `within` of block `blockNo` (a directory, extent, xattr or bitmap block). Prefetched
   * directory reads are dropped. The writer calls it for every metadata write.
   */
  noteWrite(blockNo: number, within: number, bytes: Uint8Array): void {
    const bs = this.blockSize;
    for (let b = blockNo; b * bs < blockNo * bs + within + bytes.length; b++) {
      const hit = this.cache.peek(b);
      if (hit === undefined) continue;
      const from = Math.max(blockNo * bs + within, b * bs);
      const to = Math.min(blockNo * bs + within + bytes.length, (b + 1) * bs);
      hit.set(bytes.subarray(from - blockNo * bs - within, to - blockNo * bs - within), from - b * bs);
    }
    this.dropDerived(blockNo, Math.ceil((within + bytes.length) / bs));
  }

  /**
   * Drops what was derived from blocks [blockNo, blockNo + count) as they were (directory
   * trees they hold nodes of), and what any write makes stale (prefetched directory reads,
   * name indexes, scanned records, a lender's "unchanged"): for noteWrite and forgetBlocks.
   */
  private dropDerived(blockNo: number, count: number): void {
    this.prefetched.clear();
    this.prefetchedBytes = 0;
    this.nameIndex.clear();
    this.nameIndexEntries = 0;
    if (this.dirTreeNodes.size > 0) {
      for (let b = blockNo; b < blockNo + count; b++) {
        const dir = this.dirTreeNodes.get(b);
        if (dir !== undefined) this.forgetDirTree(dir);
      }
    }
    this.scannedRecords.clear();
    // This device no longer holds what a lender's "unchanged" promised.
    this.recordLender = undefined;
  }

  /**
   * Drops what the caches hold of blocks [blockNo, blockNo + count): the writer freed them
   * and discarded their bytes on the device (WritableDevice.discard), so they no longer
   * read as cached. Nothing refers to a free block; this keeps a later read honest.
   */
  forgetBlocks(blockNo: number, count: number): void {
    for (let b = blockNo; b < blockNo + count; b++) if (this.cache.peek(b) !== undefined) this.cache.delete(b);
    this.dropDerived(blockNo, count);
  }

  /** Keeps the caches equal to the device after the writer wrote inode `ino`'s bytes. */
  noteInodeWrite(ino: number, bytes: Uint8Array): void {
    const loc = locateInode(this.superblock, this.gdOf, ino);
    this.itable.noteInodeWrite(loc, bytes);
    // The extent root lives in the inode.
    this.forgetDirTree(ino);
    this.noteWrite(loc.blockNo, loc.within, bytes);
  }

  /**
   * Whether the device is known to hold `bytes` as inode `ino` already (its table block is
   * cached, and the cache is kept equal to the device): writing them would change nothing.
   */
  holdsInodeBytes(ino: number, bytes: Uint8Array): boolean {
    const loc = this.locate(ino);
    const at = this.peekTable(loc);
    if (at === undefined) return false;
    const off = at.offset + loc.within;
    return bytesEqual(at.bytes.subarray(off, off + bytes.length), bytes);
  }

  /** Reads and decodes inode `ino`. Throws CORRUPT_IMAGE (number out of range), BAD_CHECKSUM. */
  async readInode(ino: number): Promise<Inode> {
    const loc = this.locate(ino);
    let at = this.peekTable(loc);
    if (at === undefined) {
      const kept = this.scannedRecords.get(ino) ?? this.recordLender?.(ino, loc);
      // Decoded (and checked) as the table's bytes would be: decodeInode copies them.
      if (kept !== undefined) return decodeInode(kept, ino, this.superblock, this.ctx, loc.blockNo * this.superblock.blockSize + loc.within);
      at = await this.itable.load(loc);
    }
    at ??= { bytes: await this.cachedBlock(loc.blockNo), offset: 0 };
    // A plain object: callers (the writer) spread it before encodeInode.
    return this.decodeAt(at, loc, ino, false);
  }

  /**
   * Inode `ino` if its inode-table block is cached (no I/O, no waiting), else undefined:
   * the fast path of a listing that called prefetchInodes. Its times and i_block are made
   * on first use (decodeInodeLazy): plainInode it before spreading it. Throws as readInode.
   */
  cachedInode(ino: number): Inode | undefined {
    const loc = this.locate(ino);
    const at = this.peekTable(loc);
    return at === undefined ? undefined : this.decodeAt(at, loc, ino, true);
  }

  /**
   * Reads the inode-table chunks that hold these inodes, concurrently (as many as the
   * cache holds), so that cachedInode finds them; inodes scattered one or two per chunk
   * (a root's subdirectories) get their table blocks read alone instead (see
   * InodeTableCache.prefetch). Best effort: never rejects; what could not be read is met
   * by readInode.
   */
  async prefetchInodes(inos: ArrayLike<number>): Promise<void> {
    const n = this.superblock.s_inodes_count;
    // Arrays, not iterables: no iterator result per inode (a walk passes 100,000s).
    const valid: number[] = [];
    for (let i = 0; i < inos.length; i++) {
      const ino = inos[i]!;
      if (Number.isInteger(ino) && ino >= 1 && ino <= n) valid.push(ino);
    }
    const single = await this.itable.prefetch(valid).catch(() => []);
    for (const b of single) if (this.cache.peek(b) === undefined) await this.cachedBlock(b).catch(() => undefined);
  }

  /**
   * The inode-table block at `loc` if cached, without I/O: in a cached chunk, or alone in
   * the metadata cache (prefetchInodes' scattered inodes; kept equal to the device by
   * noteWrite as chunks are by noteInodeWrite).
   */
  private peekTable(loc: InodeLocation): TableBlock | undefined {
    const c = this.itable.peek(loc);
    if (c !== undefined) return c;
    const b = this.cache.get(loc.blockNo);
    return b === undefined ? undefined : { bytes: b, offset: 0 };
  }

  /**
   * Lets inode-table reads of this filesystem take bytes `other` has cached instead of
   * reading them, where `unchanged(blockNo, count)` says both devices hold the same bytes
   * there (a diff's two sides, away from the blocks that may differ) and both place that
   * group's table at the same block. Decoding and checking are this filesystem's own.
   */
  borrowInodeTables(other: Ext4Fs, unchanged: (blockNo: number, count: number) => boolean): void {
    const sb = this.superblock;
    const osb = other.superblock;
    if (osb.blockSize !== sb.blockSize || osb.s_inode_size !== sb.s_inode_size || osb.s_inodes_per_group !== sb.s_inodes_per_group) return;
    this.itable.lender = (g, blockNo, count) => {
      if (g >= osb.groupCount || other.groupDescriptor(g).bg_inode_table !== this.groupDescriptor(g).bg_inode_table) return undefined;
      if (!unchanged(blockNo, count)) return undefined;
      return other.itable.cachedBlocks(g, blockNo, count);
    };
    this.recordLender = (ino, loc) => {
      const g = loc.group;
      if (g >= osb.groupCount || other.groupDescriptor(g).bg_inode_table !== this.groupDescriptor(g).bg_inode_table) return undefined;
      if (!unchanged(loc.blockNo, 1)) return undefined;
      return other.scannedRecords.peek(ino);
    };
  }

  private locate(ino: number): InodeLocation {
    const sb = this.superblock;
    if (!Number.isInteger(ino) || ino < 1 || ino > sb.s_inodes_count) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: this.ctx.file, structure: 'ext4.inode', detail: `inode number ${ino} out of range 1..${sb.s_inodes_count}` });
    }
    return locateInode(sb, this.gdOf, ino);
  }

  /** The inode at `loc` of `at`'s bytes: lazy (see decodeInodeLazy) for the hot paths, else a plain object. */
  private decodeAt(at: TableBlock, loc: InodeLocation, ino: number, lazy: boolean): Inode {
    const sb = this.superblock;
    const off = at.offset + loc.within;
    const bytes = at.bytes.subarray(off, off + sb.s_inode_size);
    const deviceOffset = loc.blockNo * sb.blockSize + loc.within;
    return lazy ? decodeInodeLazy(bytes, ino, sb, this.ctx, deviceOffset) : decodeInode(bytes, ino, sb, this.ctx, deviceOffset);
  }

  /** Inode `ino` decoded from `bytes` (the writer's encoding of one it has yet to write), as readInode would return it once written. */
  inodeFromBytes(ino: number, bytes: Uint8Array): Inode {
    const loc = this.locate(ino);
    return decodeInode(bytes, ino, this.superblock, this.ctx, loc.blockNo * this.superblock.blockSize + loc.within);
  }

  /** Attributes of inode `ino` (see Ext4Stat). Throws as readInode. */
  async stat(ino: number): Promise<Ext4Stat> {
    return this.statOf(await this.readInode(ino));
  }

  /** Ext4Stat of an already decoded inode. */
  statOf(inode: Inode): Ext4Stat {
    const t = fileType(inode.i_mode);
    let rdev: Ext4Stat['rdev'];
    if (t === S_IFCHR || t === S_IFBLK) {
      const v = new DataView(inode.i_block.buffer, inode.i_block.byteOffset, 8);
      const old = v.getUint32(0, true);
      const nw = v.getUint32(4, true);
      // ext4 doc, inodes.rst ("i_block"): old 16-bit encoding in word 0, else new 32-bit encoding in word 1.
      rdev = old !== 0 ? { major: (old >>> 8) & 0xff, minor: old & 0xff } : { major: (nw & 0xfff00) >>> 8, minor: (nw & 0xff) | ((nw >>> 12) & 0xfff00) };
    }
    const st: { -readonly [K in keyof Ext4Stat]: Ext4Stat[K] } = {
      ino: inode.ino,
      mode: inode.i_mode,
      type: STAT_TYPES[t] ?? 'unknown',
      uid: inode.i_uid,
      gid: inode.i_gid,
      size: inode.i_size,
      links: inode.i_links_count,
      blocks512: inode.i_blocks,
      flags: inode.i_flags,
      generation: inode.i_generation,
      atime: inode.atime,
      ctime: inode.ctime,
      mtime: inode.mtime,
      crtime: inode.crtime,
    };
    // Added only when there is one (no empty object spread per call: a walk stats every entry).
    if (rdev) st.rdev = rdev;
    return st;
  }

  /** Whether the inode's data lives in the inode (inline_data). */
  isInline(inode: Inode): boolean {
    return (inode.i_flags & EXT4_INLINE_DATA_FL) !== 0;
  }

  /** Fast symlink: the target is in i_block (kernel ext4_inode_is_fast_symlink). */
  private isFastSymlink(inode: Inode): boolean {
    if (fileType(inode.i_mode) !== S_IFLNK || this.isInline(inode)) return false;
    const eaBlocks = inode.i_file_acl !== 0 ? this.blockSize / 512 : 0;
    return inode.i_blocks - eaBlocks === 0;
  }

  /** Whether i_block holds block pointers or an extent root at all. */
  private hasBlockMapping(inode: Inode): boolean {
    const t = fileType(inode.i_mode);
    if (this.isInline(inode) || t === S_IFCHR || t === S_IFBLK || t === S_IFIFO || t === S_IFSOCK) return false;
    return !this.isFastSymlink(inode);
  }

  /**
   * The mapped extents of an inode in logical order (holes omitted; unwritten extents
   * flagged). Inline, fast-symlink and device inodes have none. `onMeta` receives each
   * extent node or indirect block. Throws CORRUPT_IMAGE, BAD_CHECKSUM.
   */
  async *extentsOf(inode: Inode, onMeta?: (pblk: number, kind: 'extent node' | 'indirect block') => void): AsyncGenerator<FileExtent> {
    if (!this.hasBlockMapping(inode)) return;
    const iBlockOff = inode.deviceOffset + 0x28;
    if (inode.i_flags & EXT4_EXTENTS_FL) {
      yield* walkExtentTree(this.env, inode.ino, inode.i_block, iBlockOff, inode.csumSeed, onMeta ? (n) => onMeta(n.pblk, 'extent node') : undefined);
    } else {
      const maxBlocks = Math.ceil((inode.i_blocks * 512) / this.blockSize);
      yield* walkBlockMap(this.env, inode.ino, inode.i_block, iBlockOff, maxBlocks, onMeta ? (p) => onMeta(p, 'indirect block') : undefined);
    }
  }

  /** The extents of inode `ino` (see extentsOf). */
  async *extents(ino: number): AsyncGenerator<FileExtent> {
    yield* this.extentsOf(await this.readInode(ino));
  }

  /** All xattrs of an inode: in-inode first, then the xattr block's. Throws CORRUPT_IMAGE, BAD_CHECKSUM. */
  async xattrsOf(inode: Inode): Promise<Xattr[]> {
    const out = decodeInodeXattrs(inode.raw, inode.i_extra_isize, this.ctx, inode.ino, inode.deviceOffset, { eaInode: this.eaInode });
    if (inode.i_file_acl !== 0) out.push(...(await this.readXattrBlock(inode.i_file_acl, inode.ino)).xattrs);
    return Promise.all(out.map((x) => (x.valueInum === undefined ? x : this.readEaInodeValue(x, inode))));
  }

  private get eaInode(): boolean {
    return (this.superblock.s_feature_incompat & EXT4_FEATURE_INCOMPAT_EA_INODE) !== 0;
  }

  /** ext4 doc, attributes.rst (ea_inode): the value is the content of an inode flagged EA_INODE. */
  private async readEaInodeValue(x: Xattr, owner: Inode): Promise<Xattr> {
    const ea = await this.readInode(x.valueInum!);
    if (!(ea.i_flags & EXT4_EA_INODE_FL) || fileType(ea.i_mode) !== S_IFREG) {
      fsCorrupt(this.ctx, `ext4.inode[${owner.ino}].xattr.e_value_inum`, owner.deviceOffset, 'xattr value inode is not an EA inode', { actual: x.valueInum });
    }
    if (ea.i_size !== x.valueSize) {
      fsCorrupt(this.ctx, `ext4.inode[${ea.ino}].i_size`, ea.deviceOffset + 4, 'EA inode size differs from e_value_size', { expected: x.valueSize, actual: ea.i_size });
    }
    return { ...x, value: await this.readOf(ea, 0, x.valueSize) };
  }

  /** Xattrs of inode `ino`. */
  async xattrs(ino: number): Promise<Xattr[]> {
    return this.xattrsOf(await this.readInode(ino));
  }

  /** Reads and decodes xattr block `blockNo` (its header carries h_refcount). Throws CORRUPT_IMAGE, BAD_CHECKSUM. */
  async readXattrBlock(blockNo: number, ino = 0): Promise<ReturnType<typeof decodeXattrBlock>> {
    if (blockNo >= this.superblock.s_blocks_count || blockNo < this.superblock.s_first_data_block) {
      fsCorrupt(this.ctx, `ext4.inode[${ino}].i_file_acl`, blockNo * this.blockSize, 'xattr block outside the filesystem', { actual: blockNo });
    }
    return decodeXattrBlock(await this.readBlocks(blockNo, 1), blockNo, this.ctx, { metadataCsum: this.metadataCsum, csumSeed: this.superblock.csumSeed, eaInode: this.eaInode });
  }

  private async inlineBytes(inode: Inode): Promise<Uint8Array> {
    const extra = decodeInodeXattrs(inode.raw, inode.i_extra_isize, this.ctx, inode.ino, inode.deviceOffset).find(isInlineDataXattr);
    const more = extra?.value ?? new Uint8Array(0);
    const all = new Uint8Array(EXT4_MIN_INLINE_DATA_SIZE + more.length);
    all.set(inode.i_block, 0);
    all.set(more, EXT4_MIN_INLINE_DATA_SIZE);
    return all;
  }

  /**
   * Reads `length` bytes of inode content from byte `offset` (clipped at i_size). Holes
   * and unwritten extents read as zeros. Throws CORRUPT_IMAGE, BAD_CHECKSUM, IO.
   */
  async readOf(inode: Inode, offset: number, length: number, extents?: readonly FileExtent[]): Promise<Uint8Array> {
    const end = Math.min(inode.i_size, offset + length);
    if (end <= offset) return new Uint8Array(0);
    if (end - offset > MAX_READ_BYTES) throw new InternalError(`read of ${end - offset} bytes exceeds the ${MAX_READ_BYTES}-byte limit of one call`);
    const out = new Uint8Array(end - offset);
    await this.fillOf(inode, offset, out, extents);
    return out;
  }

  /**
   * Like readOf, into a caller's (reused) buffer: the first n bytes of `target` get the
   * file's bytes from `offset`, where n is what the file has there (at most
   * target.length); returns n. Throws as readOf.
   */
  async readOfInto(inode: Inode, offset: number, target: Uint8Array, extents?: readonly FileExtent[]): Promise<number> {
    const n = Math.max(0, Math.min(inode.i_size - offset, target.length));
    if (n === 0) return 0;
    const out = target.subarray(0, n);
    out.fill(0);
    await this.fillOf(inode, offset, out, extents);
    return n;
  }

  /** Puts the file's bytes from `offset` into `out` (zeroed, within the file), each extent's read straight into place. */
  private async fillOf(inode: Inode, offset: number, out: Uint8Array, extents: readonly FileExtent[] | undefined): Promise<void> {
    const end = offset + out.length;
    if (this.isInline(inode) || this.isFastSymlink(inode)) {
      const src = this.isInline(inode) ? await this.inlineBytes(inode) : inode.i_block;
      // Bytes past the inline data read as zeros, as the kernel and e2fsprogs read them.
      if (offset < src.length) out.set(src.subarray(offset, Math.min(end, src.length)), 0);
      return;
    }
    if (!this.hasBlockMapping(inode)) return;
    const bs = this.blockSize;
    const list = extents ?? this.inlineExtentsOf(inode) ?? (await collect(this.extentsOf(inode)));
    const firstL = Math.floor(offset / bs);
    const lastL = Math.floor((end - 1) / bs);
    // Binary search the first extent that ends after firstL.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const m = (lo + hi) >>> 1;
      if (list[m]!.lblk + list[m]!.len <= firstL) lo = m + 1;
      else hi = m;
    }
    for (let i = lo; i < list.length && list[i]!.lblk <= lastL; i++) {
      const e = list[i]!;
      if (e.unwritten) continue;
      const s = Math.max(e.lblk, firstL);
      const t = Math.min(e.lblk + e.len - 1, lastL);
      const first = e.pblk + (s - e.lblk);
      const device = this.deviceFor(first, t - s + 1);
      const fileStart = s * bs;
      const from = Math.max(offset, fileStart);
      const to = Math.min(end, (t + 1) * bs);
      await readInto(device, out.subarray(from - offset, to - offset), first * bs + (from - fileStart));
    }
  }

  /** Reads a byte range of inode `ino` (see readOf). */
  async read(ino: number, offset: number, length: number): Promise<Uint8Array> {
    return this.readOf(await this.readInode(ino), offset, length);
  }

  /** Streams the whole content of inode `ino` in chunks of at most 1 MiB. Throws as readOf. */
  async *readFile(ino: number): AsyncGenerator<Uint8Array> {
    const inode = await this.readInode(ino);
    const extents = this.hasBlockMapping(inode) && !this.isInline(inode) ? (this.inlineExtentsOf(inode) ?? (await collect(this.extentsOf(inode)))) : undefined;
    for (let off = 0; off < inode.i_size; off += READ_CHUNK) yield await this.readOf(inode, off, READ_CHUNK, extents);
  }

  /** The target of symlink `ino`, as bytes. Throws as readlinkOf. */
  async readlink(ino: number): Promise<Uint8Array> {
    return this.readlinkOf(await this.readInode(ino));
  }

  /**
   * The target of a symlink, as bytes. Its length (i_size) is bounded by where it is kept
   * (ext4 doc, inodes.rst, "Symbolic Links"): in i_block when shorter than 60 bytes (fast
   * symlink), in the inline data, or in one block (at most block size - 1 bytes, as the
   * kernel and e2fsck require). Throws CORRUPT_IMAGE (not a symlink, i_size beyond that
   * bound), and as readOf.
   */
  async readlinkOf(inode: Inode): Promise<Uint8Array> {
    const ino = inode.ino;
    if (fileType(inode.i_mode) !== S_IFLNK) fsCorrupt(this.ctx, `ext4.inode[${ino}].i_mode`, inode.deviceOffset, 'not a symlink');
    let max: number;
    let where: string;
    if (this.isInline(inode)) [max, where] = [(await this.inlineBytes(inode)).length, 'its inline data'];
    else if (this.isFastSymlink(inode)) [max, where] = [EXT4_I_BLOCK_SIZE - 1, 'i_block (fast symlink)'];
    else [max, where] = [this.blockSize - 1, 'one block'];
    if (inode.i_size > max) fsCorrupt(this.ctx, `ext4.inode[${ino}].i_size`, inode.deviceOffset + 4, `symlink target longer than ${where} holds`, { expected: `<= ${max}`, actual: inode.i_size });
    // No system makes an empty symlink (e2fsck: "Symlink ... is invalid"): an empty target is damage, not an answer.
    if (inode.i_size === 0) fsCorrupt(this.ctx, `ext4.inode[${ino}].i_size`, inode.deviceOffset + 4, 'symlink with an empty target', { expected: `1..${max}`, actual: 0 });
    return this.readOf(inode, 0, inode.i_size);
  }

  /**
   * The entries of directory `ino` as stored, '.' and '..' included (synthesised for
   * inline directories). htree index blocks are validated (and checksummed) and skipped.
   * Throws CORRUPT_IMAGE (not a directory, malformed records or index), BAD_CHECKSUM.
   */
  async *readdir(ino: number): AsyncGenerator<DirEntry> {
    const inode = await this.readInode(ino);
    yield* this.readdirOf(inode);
  }

  async *readdirOf(inode: Inode): AsyncGenerator<DirEntry> {
    for await (const batch of this.dirBatches(inode)) yield* batch.entries;
  }

  /**
   * readdirOf's entries a directory block at a time, each with its logical block (undefined
   * for inline entries): the writer keeps where each name lives. Throws as readdir.
   */
  dirBlocksOf(inode: Inode): AsyncGenerator<{ readonly lblk: number | undefined; readonly entries: DirEntry[] }> {
    return this.dirBatches(inode);
  }

  /** All entries of directory `ino` (as readdir yields them), in one array. Throws as readdir. */
  async listDirectory(ino: number): Promise<DirEntry[]> {
    return this.listDirectoryOf(await this.readInode(ino));
  }

  async listDirectoryOf(inode: Inode): Promise<DirEntry[]> {
    const out: DirEntry[] = [];
    for await (const batch of this.dirBatches(inode)) for (const e of batch.entries) out.push(e);
    return out;
  }

  /** readdirOf's entries, an array per directory block (not one await per entry). */
  private async *dirBatches(inode: Inode): AsyncGenerator<{ lblk: number | undefined; entries: DirEntry[] }> {
    const opts = this.dirOptions(inode);
    for await (const area of this.dirAreas(inode)) yield { lblk: area.lblk, entries: 'entries' in area ? area.entries : decodeDirEntries(area.r, area.end, opts, this.blockSize) };
  }

  /**
   * Calls `visit` with every entry of directory `inode` as readdirOf yields them ('.' and
   * '..' included), without an object per entry: the name is bytes [nameAt, nameAt +
   * nameLen) of `bytes` (a Buffer view of the block, so that a name can be decoded in place
   * without a view of its own), valid during the call only: copy what is kept. Reads and
   * checks every block of the directory (a visitor cannot stop it). Throws as readdir.
   */
  async forEachEntry(inode: Inode, visit: (ino: number, fileType: number, bytes: Buffer, nameAt: number, nameLen: number) => void): Promise<void> {
    const opts = this.dirOptions(inode);
    for await (const area of this.dirAreas(inode)) {
      if ('entries' in area) {
        for (const e of area.entries) visit(e.ino, e.fileType, asBuffer(e.name), 0, e.name.length);
        continue;
      }
      const view = asBuffer(area.r.bytes);
      forEachDirRecord(area.r, area.end, opts, this.blockSize, false, (ino, ft, _bytes, at, len) => visit(ino, ft, view, at, len));
    }
  }

  private dirOptions(inode: Inode): DirBlockOptions {
    const sb = this.superblock;
    return { filetype: (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_FILETYPE) !== 0, metadataCsum: this.metadataCsum, inodeCsumSeed: inode.csumSeed, inodesCount: sb.s_inodes_count };
  }

  /**
   * The areas of a directory that hold entries, in order: a checked reader and the end of
   * its records (a leaf block's checksum verified), or entries already made (an inline
   * directory's '.' and '..'). One per block: a consumer that stops early (lookupIn) never
   * meets a later block's error.
   */
  /**
   * The extents of directory `inode` (not inline): from i_block, or for a large directory
   * whose tree has index nodes, walked once and kept until its inode or one of its tree's
   * nodes is written (noteInodeWrite, noteWrite). A rebase lists, looks up and adds names
   * in the same large directories (/usr/bin, man pages) hundreds of times. Do not modify
   * the array. Throws what extentsOf throws.
   */
  async directoryExtentsOf(inode: Inode): Promise<readonly FileExtent[]> {
    const inline = this.inlineExtentsOf(inode);
    if (inline !== undefined) return inline;
    const known = this.dirTreeExtents.get(inode.ino);
    if (known !== undefined) return known.extents;
    const nodes: number[] = [];
    const extents = await collect(this.extentsOf(inode, (pblk) => nodes.push(pblk)));
    if (this.dirTreeExtents.size >= DIR_TREE_EXTENTS_KEPT) {
      this.dirTreeExtents.clear();
      this.dirTreeNodes.clear();
    }
    this.dirTreeExtents.set(inode.ino, { extents, nodes });
    for (const b of nodes) this.dirTreeNodes.set(b, inode.ino);
    return extents;
  }

  private forgetDirTree(ino: number): void {
    const kept = this.dirTreeExtents.get(ino);
    if (kept === undefined) return;
    this.dirTreeExtents.delete(ino);
    for (const b of kept.nodes) if (this.dirTreeNodes.get(b) === ino) this.dirTreeNodes.delete(b);
  }

  private async *dirAreas(inode: Inode): AsyncGenerator<{ lblk: number | undefined; entries: DirEntry[] } | { lblk: number | undefined; r: FsByteReader; end: number }> {
    const sb = this.superblock;
    const ino = inode.ino;
    if (fileType(inode.i_mode) !== S_IFDIR) {
      this.requireRootDirectory(inode);
      fsCorrupt(this.ctx, `ext4.inode[${ino}].i_mode`, inode.deviceOffset, 'not a directory');
    }
    const opts = this.dirOptions(inode);
    if (this.isInline(inode)) {
      // ext4 doc, inline_data.rst: 4 bytes of parent inode, then records in the rest of i_block and in system.data.
      const data = await this.inlineBytes(inode);
      // Its i_size is exactly that area (e2fsck: "i_size is X, should be Y"): another size
      // means the inode is damaged, and which entries are real is a guess.
      if (inode.i_size !== data.length) {
        fsCorrupt(this.ctx, `ext4.inode[${ino}].i_size`, inode.deviceOffset + 4, 'inline directory size is not its inline data (i_block and system.data)', { expected: data.length, actual: inode.i_size });
      }
      const r = fsReader(this.ctx, data.subarray(0, EXT4_MIN_INLINE_DATA_SIZE), `ext4.inode[${ino}].inline_dir`, inode.deviceOffset + 0x28);
      const parent = r.u32le(0, 'parent');
      yield {
        lblk: undefined,
        entries: [
          { ino, name: new Uint8Array([0x2e]), fileType: 2 },
          { ino: parent, name: new Uint8Array([0x2e, 0x2e]), fileType: 2 },
        ],
      };
      yield { lblk: undefined, r: r.sub(4, EXT4_MIN_INLINE_DATA_SIZE - 4, `ext4.inode[${ino}].inline_dir`), end: EXT4_MIN_INLINE_DATA_SIZE - 4 };
      if (data.length > EXT4_MIN_INLINE_DATA_SIZE) {
        const rx = fsReader(this.ctx, data.subarray(EXT4_MIN_INLINE_DATA_SIZE), `ext4.inode[${ino}].inline_dir.system_data`, inode.deviceOffset);
        yield { lblk: undefined, r: rx, end: data.length - EXT4_MIN_INLINE_DATA_SIZE };
      }
      return;
    }
    const bs = this.blockSize;
    const dirBlocks = Math.ceil(inode.i_size / bs);
    const extents = await this.directoryExtentsOf(inode);
    // A directory has no holes and no blocks past i_size (e2fsck: "should be at block 0",
    // "i_size is ..., should be ..."): either would drop entries from a listing without a word.
    let mapped = 0;
    for (const e of extents) {
      if (e.lblk !== mapped) {
        fsCorrupt(this.ctx, `ext4.inode[${ino}].${inode.i_flags & EXT4_EXTENTS_FL ? 'extent' : 'block_map'}`, inode.deviceOffset + 0x28, 'directory block not mapped (a hole in the directory)', { expected: `block ${mapped} mapped`, actual: `next mapped block ${e.lblk}` });
      }
      mapped = e.lblk + e.len;
    }
    if (mapped !== dirBlocks) {
      fsCorrupt(this.ctx, `ext4.inode[${ino}].i_size`, inode.deviceOffset + 4, mapped < dirBlocks ? 'directory blocks within i_size are not mapped' : 'directory blocks are mapped past i_size', {
        expected: `${mapped} block(s) of ${bs} bytes`,
        actual: inode.i_size,
      });
    }
    const isHtree = (inode.i_flags & EXT4_INDEX_FL) !== 0 && extents.length > 0 && extents[0]!.lblk === 0;
    const indexBlocks = new Set<number>();
    const pblkOf = (lblk: number): number | undefined => {
      for (const e of extents) if (lblk >= e.lblk && lblk < e.lblk + e.len) return e.pblk + (lblk - e.lblk);
      return undefined;
    };
    if (isHtree) {
      const dxOpts: DxOptions = {
        metadataCsum: this.metadataCsum,
        inodeCsumSeed: inode.csumSeed,
        largedir: (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_LARGEDIR) !== 0,
        dirBlocks,
      };
      const rootP = extents[0]!.pblk;
      const root = decodeDxRoot(await this.readBlocks(rootP, 1), this.ctx, `ext4.dx_root[${ino}]`, rootP * bs, bs, dxOpts);
      indexBlocks.add(0);
      let level = root.node.blocks;
      for (let depth = 0; depth < root.info.indirect_levels; depth++) {
        const next: number[] = [];
        for (const lb of level) {
          if (indexBlocks.has(lb)) fsCorrupt(this.ctx, `ext4.dx_node[${ino}]`, rootP * bs, 'htree block referenced twice', { actual: lb });
          indexBlocks.add(lb);
          const p = pblkOf(lb);
          if (p === undefined) fsCorrupt(this.ctx, `ext4.dx_node[${ino}]`, rootP * bs, 'htree points at a hole', { actual: lb });
          next.push(...decodeDxNode(await this.readBlocks(p, 1), this.ctx, `ext4.dx_node[${ino}:${lb}]`, p * bs, bs, dxOpts).blocks);
        }
        level = next;
      }
    }
    for (const e of extents) {
      if (e.lblk >= dirBlocks) break;
      const n = Math.min(e.len, dirBlocks - e.lblk);
      for (let k = 0; k < n; k += DIR_READ_BLOCKS) {
        const cnt = Math.min(DIR_READ_BLOCKS, n - k);
        const bytes = await this.readDirBlocks(e.pblk + k, cnt);
        for (let j = 0; j < cnt; j++) {
          const lblk = e.lblk + k + j;
          const pblk = e.pblk + k + j;
          const block = bytes.subarray(j * bs, (j + 1) * bs);
          if (isHtree && lblk === 0) {
            // The root block holds '.' and '..' (whose record hides the dx_root), no checksum tail.
            yield { lblk, r: fsReader(this.ctx, block, `ext4.dir[${ino}:0]`, pblk * bs), end: bs };
            continue;
          }
          if (indexBlocks.has(lblk)) continue;
          const structure = `ext4.dir[${ino}:${lblk}]`;
          const r = fsReader(this.ctx, block, structure, pblk * bs);
          yield { lblk, r, end: checkedDirBlockEnd(r, block, this.ctx, structure, pblk * bs, opts) };
        }
      }
    }
  }

  /**
   * Starts reading what listing these directories will read (their inodes, then their
   * directory blocks), all at once, so that a walk finds the bytes there when it gets to
   * them instead of waiting for one read after another. Best effort and bounded
   * (PREFETCH_DIR_BYTES held at most); anything that fails is left for readdir to meet.
   */
  prefetchDirectories(inos: readonly number[]): void {
    if (inos.length === 0) return;
    // Their inodes first, in as few reads as their layout allows (scattered ones block by block).
    const inodesRead = this.prefetchInodes(inos).then(() => Promise.all(inos.map((ino) => this.readInode(ino).catch(() => undefined))));
    const batch = inodesRead.then((inodes) => {
      // The reads readdirOf makes: pieces of up to DIR_READ_BLOCKS of each extent.
      const pieces: Array<{ block: number; count: number }> = [];
      for (const inode of inodes) {
        if (inode === undefined || fileType(inode.i_mode) !== S_IFDIR || this.isInline(inode)) continue;
        let extents: FileExtent[] | undefined;
        try {
          extents = this.inlineExtentsOf(inode);
        } catch {
          continue;
        }
        const dirBlocks = Math.ceil(inode.i_size / this.blockSize);
        for (const e of extents ?? []) {
          if (e.lblk >= dirBlocks) break;
          const n = Math.min(e.len, dirBlocks - e.lblk);
          for (let k = 0; k < n; k += DIR_READ_BLOCKS) {
            const count = Math.min(DIR_READ_BLOCKS, n - k);
            const key = `${e.pblk + k}+${count}`;
            if (this.prefetched.has(key) || this.prefetchedBytes + count * this.blockSize > PREFETCH_DIR_BYTES) continue;
            this.prefetchedBytes += count * this.blockSize;
            // Placeholder until its read is started below (a duplicate in this batch is skipped).
            this.prefetched.set(key, Promise.resolve(undefined));
            pieces.push({ block: e.pblk + k, count });
          }
        }
      }
      // Directories made together lie near each other: one read covers pieces up to
      // PREFETCH_GAP_BLOCKS apart (reading the gap costs less than another read's wait).
      pieces.sort((x, y) => x.block - y.block);
      for (let i = 0; i < pieces.length; ) {
        const first = pieces[i]!.block;
        let end = first + pieces[i]!.count;
        let j = i + 1;
        while (j < pieces.length && pieces[j]!.block - end <= PREFETCH_GAP_BLOCKS && Math.max(end, pieces[j]!.block + pieces[j]!.count) - first <= PREFETCH_SPAN_BLOCKS) {
          end = Math.max(end, pieces[j]!.block + pieces[j]!.count);
          j++;
        }
        const span = this.readBlocks(first, end - first).catch(() => undefined);
        for (const p of pieces.slice(i, j)) {
          const from = (p.block - first) * this.blockSize;
          this.prefetched.set(
            `${p.block}+${p.count}`,
            span.then((b) => b?.subarray(from, from + p.count * this.blockSize)),
          );
        }
        i = j;
      }
    }).catch(() => undefined); // Best effort: whatever was not registered is read by readdir.
    // Until its reads are registered, readDirBlocks waits for it rather than reading on its own.
    this.prefetchBatches.add(batch);
    void batch.finally(() => this.prefetchBatches.delete(batch));
  }

  /** Directory blocks: those prefetchDirectories read, else read now. */
  private async readDirBlocks(blockNo: number, count: number): Promise<Uint8Array> {
    const key = `${blockNo}+${count}`;
    if (!this.prefetched.has(key) && this.prefetchBatches.size > 0) await Promise.all(this.prefetchBatches);
    const p = this.prefetched.get(key);
    if (p !== undefined) {
      this.prefetched.delete(key);
      this.prefetchedBytes -= count * this.blockSize;
      const bytes = await p;
      if (bytes !== undefined) return bytes;
    }
    return this.readBlocks(blockNo, count);
  }

  /**
   * Resolves an absolute path ('/' separated; '.' and '..' as stored) to an inode number,
   * following no symlinks; components are matched as bytes (a string path means its UTF-8
   * bytes). Returns undefined if a component is missing or not a directory.
   * Throws what readdir throws.
   */
  async lookup(path: Uint8Array | string): Promise<number | undefined> {
    let ino: number | undefined = EXT4_ROOT_INO;
    for (const part of splitPath(typeof path === 'string' ? utf8Bytes(path) : path)) {
      ino = await this.lookupIn(ino, part);
      if (ino === undefined) return undefined;
    }
    return ino;
  }

  /**
   * Throws CORRUPT_IMAGE when `inode` is the root (inode 2) and not a directory (e2fsck:
   * "Root inode is not a directory"): then no path resolves, and a listing of '/' would
   * show one meaningless entry instead of the tree.
   */
  requireRootDirectory(inode: Inode): void {
    if (inode.ino !== EXT4_ROOT_INO || fileType(inode.i_mode) === S_IFDIR) return;
    fsCorrupt(this.ctx, `ext4.inode[${EXT4_ROOT_INO}].i_mode`, inode.deviceOffset, 'the root inode is not a directory', { actual: `0o${inode.i_mode.toString(8)}` });
  }

  /**
   * The inode number that entry `name` of directory `dirIno` names ('.' and '..' included),
   * or undefined if there is none or `dirIno` is not a directory. Throws what readdir throws.
   */
  async lookupIn(dirIno: number, name: Uint8Array): Promise<number | undefined> {
    const known = this.nameIndex.get(dirIno);
    if (known !== undefined) return known.get(byteKey(name));
    const inode = await this.readInode(dirIno);
    if (fileType(inode.i_mode) !== S_IFDIR) {
      this.requireRootDirectory(inode);
      return undefined;
    }
    // Listed once, then looked up by name: a rebase asks three filesystems about each
    // changed path and its parents, and a name that is not there costs a whole scan.
    const index = await this.indexNames(inode).catch(() => undefined);
    // Unreadable further on: the scan below finds what lies before the damage, as without the index.
    if (index !== undefined) return index.get(byteKey(name));
    for await (const e of this.readdirOf(inode)) if (bytesEqual(e.name, name)) return e.ino;
    return undefined;
  }

  private async indexNames(inode: Inode): Promise<Map<string, number>> {
    const index = new Map<string, number>();
    // Keys made from the block's bytes in place (as byteKey makes them), no entry objects:
    // a rebase indexes directories of thousands of names in several filesystems per client.
    await this.forEachEntry(inode, (ino, _fileType, bytes, at, len) => {
      const k = bytes.toString('latin1', at, at + len);
      // The first of duplicate names is the one a scan finds.
      if (!index.has(k)) index.set(k, ino);
    });
    if (this.nameIndexEntries + index.size > NAME_INDEX_ENTRIES) {
      this.nameIndex.clear();
      this.nameIndexEntries = 0;
    }
    this.nameIndex.set(inode.ino, index);
    this.nameIndexEntries += index.size;
    return index;
  }

  /**
   * Walks the tree below directory `startIno` (default the root) depth-first, yielding every
   * entry except '.' and '..', children in directory order. A directory reached twice is
   * not descended again (bounds corrupt loops). `startPath` prefixes every path (empty for
   * the root). Throws what readdir throws.
   */
  async *walk(startIno = EXT4_ROOT_INO, startPath: Uint8Array = new Uint8Array(0)): AsyncGenerator<WalkEntry> {
    const seen = new Set<number>([startIno]);
    const stack: Array<{ ino: number; path: Uint8Array }> = [{ ino: startIno, path: startPath }];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      const inode = await this.readInode(dir.ino);
      const children: WalkEntry[] = [];
      for await (const batch of this.dirBatches(inode)) {
        for (const e of batch.entries) {
          if (isDotOrDotDot(e.name)) continue;
          children.push({ path: joinPath(dir.path, e.name), ino: e.ino, parentIno: dir.ino, name: e.name, fileType: e.fileType });
        }
      }
      const subdirs: Array<{ ino: number; path: Uint8Array }> = [];
      for (const c of children) {
        yield c;
        const isDir = c.fileType === 2 || (c.fileType === 0 && fileType((await this.readInode(c.ino)).i_mode) === S_IFDIR);
        if (isDir && !seen.has(c.ino)) {
          seen.add(c.ino);
          subdirs.push({ ino: c.ino, path: c.path });
        }
      }
      // Their listings are read while this one's consumer works, instead of one after another.
      this.prefetchDirectories(subdirs.map((d) => d.ino));
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  /**
   * Walks the tree below directory `start` (default the root) a directory at a time:
   * yields each directory's entries ('.' and '..' left out) as one DirListing, with
   * (`stat`) their inodes' stat fields read in place from inode-table chunks read a few at
   * a time (prefetchInodes; every record checked as readInode checks it, so a checksum
   * mismatch throws or warns as there). Directories come in depth-first pre-order: after
   * a listing, the listing of its first subdirectory (in the listing's order: by name
   * bytes with `sorted`, else directory order), then that one's, and so on; a listing's
   * `parent` and `parentIndex` say which entry it is. A directory met again (a directory
   * hard link or loop, which e2fsck reports as corruption) is not descended into again:
   * `onRevisit` is told, in the order met. Whether an entry is a directory: its inode's
   * mode with `stat`, else its file type (the inode's mode where the filesystem records
   * none). Throws what readdir and readInode throw.
   */
  async *listings(options: ListingsOptions = {}): AsyncGenerator<DirListing> {
    const start = options.start ?? EXT4_ROOT_INO;
    const startPath = options.startPath ?? new Uint8Array(0);
    const recursive = options.recursive !== false;
    // Directory inode -> the path it was first listed at (kept for onRevisit only: a tree's
    // directories' paths are much more than their numbers).
    const keepPaths = options.onRevisit !== undefined;
    const seen = new Map<number, Uint8Array | undefined>([[start, keepPaths ? startPath : undefined]]);
    const first = await this.readListing(start, startPath, undefined, -1, options, recursive ? seen : undefined);
    yield first;
    if (!recursive) return;
    const stack: Array<{ l: DirListing; next: number }> = [{ l: first, next: 0 }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const l = top.l;
      let child: DirListing | undefined;
      for (let i = top.next; i < l.count && child === undefined; i++) {
        const isDir = l.hasStat ? fileType(l.mode[i]!) === S_IFDIR : l.fileType[i] === EXT4_FT_DIR || (l.fileType[i] === 0 && fileType((await this.readInode(l.ino[i]!)).i_mode) === S_IFDIR);
        if (!isDir) continue;
        const ino = l.ino[i]!;
        const path = joinPath(listingBase(l.path), l.name(i));
        if (seen.has(ino)) {
          options.onRevisit?.(path, ino, seen.get(ino)!);
          continue;
        }
        seen.set(ino, keepPaths ? path : undefined);
        top.next = i + 1;
        child = await this.readListing(ino, path, l, i, options, seen);
      }
      if (child === undefined) {
        stack.pop();
        continue;
      }
      yield child;
      stack.push({ l: child, next: 0 });
    }
  }

  /** One directory's listing (see listings); with `seen`, starts reading its subdirectories not in it (prefetchDirectories). */
  private async readListing(ino: number, path: Uint8Array, parent: DirListing | undefined, parentIndex: number, options: ListingsOptions, seen: ReadonlyMap<number, unknown> | undefined): Promise<DirListing> {
    const inode = await this.readInode(ino);
    // Columns sized for the most entries its blocks hold (12 bytes a record at least), up to a bound; grown past it.
    const l = new DirListing(ino, path, parent, parentIndex, Math.min(LISTING_CAPACITY, Math.ceil(inode.i_size / 12)));
    await this.forEachEntry(inode, (childIno, ft, bytes, at, len) => {
      if (bytes[at] === 0x2e && (len === 1 || (len === 2 && bytes[at + 1] === 0x2e))) return;
      l.add(childIno, ft, bytes, at, len);
    });
    if (options.sorted === true) l.sortByName();
    if (options.stat === true) await this.readListingStat(l);
    if (seen !== undefined) {
      // Their listings are read while this one's consumer works, instead of one after another.
      const dirs: number[] = [];
      for (let i = 0; i < l.count; i++) {
        const isDir = l.hasStat ? fileType(l.mode[i]!) === S_IFDIR : l.fileType[i] === EXT4_FT_DIR;
        if (isDir && !seen.has(l.ino[i]!)) dirs.push(l.ino[i]!);
      }
      this.prefetchDirectories(dirs);
    }
    return l;
  }

  /**
   * Throws CORRUPT_IMAGE when entry i's file_type (where the filesystem records one) names
   * another type than its inode's mode (e2fsck: "has an incorrect filetype"): a listing
   * would show a directory as a file, and leave its entries out, without a word.
   */
  private requireEntryType(l: DirListing, i: number, mode: number, deviceOffset: number): void {
    this.requireDirentType(l.ino[i]!, l.fileType[i]!, mode, deviceOffset, `directory ${l.dirIno}`);
  }

  /**
   * requireEntryType for any reader that met inode `ino` through an entry of file_type
   * `direntFileType` (0: not recorded) and read its mode: throws CORRUPT_IMAGE at the
   * inode's i_mode when they name different types. `where` names the directory.
   */
  requireDirentType(ino: number, direntFileType: number, mode: number, deviceOffset: number, where: string): void {
    const ft = direntFileType;
    if (ft === 0 || ft >= DIRENT_MODE_TYPES.length || DIRENT_MODE_TYPES[ft] === fileType(mode)) return;
    fsCorrupt(this.ctx, `ext4.inode[${ino}].i_mode`, deviceOffset, `the inode's type differs from its directory entry's file_type in ${where}`, {
      expected: `0o${DIRENT_MODE_TYPES[ft]!.toString(8)} (file_type ${ft})`,
      actual: `0o${mode.toString(8)}`,
    });
  }

  /**
   * Throws CORRUPT_IMAGE at the inode's i_links_count when an entry of `where` names inode
   * `ino` and the inode has no links (e2fsck: "has deleted/unused inode"): the entry names
   * a deleted file. `deviceOffset` is the inode's.
   */
  requireLinked(ino: number, links: number, deviceOffset: number, where: string): void {
    if (links > 0) return;
    fsCorrupt(this.ctx, `ext4.inode[${ino}].i_links_count`, deviceOffset + 0x1a, `a directory entry in ${where} names an inode with no links (deleted)`, { expected: '>= 1', actual: links });
  }

  /**
   * Fills the stat columns of `l`: its inodes' table chunks read together first, then each
   * record checked and read in place. Symlinks and devices (whose target and numbers a
   * caller reads from the inode), and inodes whose block is not cached after the prefetch,
   * are decoded (readInode's checks) and kept in `l.inodes`.
   */
  private async readListingStat(l: DirListing): Promise<void> {
    const n = l.count;
    l.allocStat();
    await this.prefetchInodes(l.ino.subarray(0, n));
    const sb = this.superblock;
    const bs = sb.blockSize;
    const isz = sb.s_inode_size;
    const ipg = sb.s_inodes_per_group;
    const chunkBlocks = this.itable.chunkBlocks;
    const st = this.statHolder;
    // The chunk the previous entry's inode lay in (entries of a directory mostly share one).
    let lastGroup = -1;
    let lastChunk = -1;
    let chunk: { readonly first: number; readonly bytes: Uint8Array } | undefined;
    for (let i = 0; i < n; i++) {
      const ino = l.ino[i]!;
      let bytes: Uint8Array | undefined;
      let at = 0;
      let deviceOffset = 0;
      if (ino >= 1 && ino <= sb.s_inodes_count) {
        // locateInode's arithmetic, without an object per inode.
        const group = Math.floor((ino - 1) / ipg);
        const byte = ((ino - 1) % ipg) * isz;
        const tableBlock = Math.floor(byte / bs);
        const within = byte % bs;
        const blockNo = this.groupDescriptor(group).bg_inode_table + tableBlock;
        deviceOffset = blockNo * bs + within;
        const ci = Math.floor(tableBlock / chunkBlocks);
        if (group !== lastGroup || ci !== lastChunk) {
          chunk = this.itable.peekChunk(group, tableBlock);
          lastGroup = group;
          lastChunk = ci;
        }
        if (chunk !== undefined && (tableBlock - chunk.first + 1) * bs <= chunk.bytes.length) {
          bytes = chunk.bytes;
          at = (tableBlock - chunk.first) * bs + within;
        } else {
          bytes = this.cache.get(blockNo);
          at = within;
        }
      }
      const t = bytes === undefined ? 0 : fileType(bytes[at]! | (bytes[at + 1]! << 8));
      if (bytes === undefined || t === S_IFLNK || t === S_IFCHR || t === S_IFBLK) {
        const inode = bytes === undefined ? await this.readInode(ino) : decodeInodeLazy(bytes.subarray(at, at + isz), ino, sb, this.ctx, deviceOffset);
        // readInode may have waited: the chunk looked up before is looked up again.
        lastGroup = -1;
        l.inodes.set(i, inode);
        this.requireEntryType(l, i, inode.i_mode, inode.deviceOffset);
        l.mode[i] = inode.i_mode;
        l.links[i] = inode.i_links_count;
        l.uid[i] = inode.i_uid;
        l.gid[i] = inode.i_gid;
        l.size[i] = inode.i_size;
        l.mtimeSec[i] = inode.mtime.sec;
        l.mtimeNsec[i] = inode.mtime.nsec;
        continue;
      }
      checkInodeRecord(bytes, at, ino, sb, this.ctx, deviceOffset);
      readStatFields(bytes, at, isz, st);
      this.requireEntryType(l, i, st.mode, deviceOffset);
      l.mode[i] = st.mode;
      l.links[i] = st.links;
      l.uid[i] = st.uid;
      l.gid[i] = st.gid;
      l.size[i] = st.size;
      l.mtimeSec[i] = st.mtimeSec;
      l.mtimeNsec[i] = st.mtimeNsec;
    }
  }

  /**
   * Free block runs [start, length] of the whole filesystem, ascending, from the block
   * bitmaps (see Ext4Layout.freeBlocks). Throws BAD_CHECKSUM (bitmap checksums), IO.
   */
  async *freeBlockRuns(): AsyncGenerator<[number, number]> {
    for (const [s, l] of (await this.layout.freeBlocks()).runs()) yield [s, l];
  }

  /**
   * Inodes in use per the inode bitmaps (uninitialised groups and the itable_unused tail
   * count as free), ascending. Throws BAD_CHECKSUM (bitmap checksums), IO.
   */
  async *usedInodes(): AsyncGenerator<number> {
    for (const [s, l] of (await this.layout.usedInodes()).runs()) for (let i = s; i < s + l; i++) yield i;
  }

  /**
   * Calls `visit` with every inode in use (see usedInodes), in inode order, reading the
   * inode tables in large sequential chunks, the next one read while this one is decoded.
   * `visit` may return a promise (awaited before the next inode). A chunk that cannot be
   * read is retried inode by inode (readInode), so errors name the inode's own block.
   * The inodes' times and i_block are made on first use (decodeInodeLazy): plainInode one
   * before spreading it. Throws what readInode and usedInodes throw.
   */
  async scanInodes(visit: (inode: Inode) => void | Promise<void>): Promise<void> {
    const sb = this.superblock;
    const isz = sb.s_inode_size;
    await this.scanInodeRecords(
      (bytes, at, ino, deviceOffset) => visit(decodeInodeLazy(bytes.subarray(at, at + isz), ino, sb, this.ctx, deviceOffset)),
      async (ino) => visit(await this.readInode(ino)),
    );
  }

  /**
   * scanInodes' loop over the inode records in use: `record` gets each one's bytes (at
   * `at` of `bytes`, s_inode_size of them, not yet checked; valid during the call only),
   * `unread` the inodes of a chunk that could not be read. Either may return a promise
   * (awaited before the next inode). Throws what usedInodes throws and what they throw.
   */
  private async scanInodeRecords(
    record: (bytes: Uint8Array, at: number, ino: number, deviceOffset: number) => void | Promise<void>,
    unread: (ino: number) => Promise<void>,
  ): Promise<void> {
    const sb = this.superblock;
    const bs = sb.blockSize;
    const isz = sb.s_inode_size;
    const chunkBlocks = Math.max(1, Math.floor(SCAN_CHUNK_BYTES / bs));
    type Piece = { group: number; table: number; firstBlock: number; blocks: number; firstIno: number; from: number; to: number; bitmap: Uint8Array };
    // The pieces to read: per group, the table blocks up to its last inode in use.
    const pieces = async function* (groups: AsyncGenerator<{ group: number; firstIno: number; count: number; bitmap: Uint8Array }>, fs: Ext4Fs): AsyncGenerator<Piece> {
      for await (const g of groups) {
        let last = g.count - 1;
        while (last >= 0 && !testBit(g.bitmap, last)) last--;
        if (last < 0) continue;
        const table = fs.groupDescriptor(g.group).bg_inode_table;
        const blocks = Math.ceil(((last + 1) * isz) / bs);
        for (let b = 0; b < blocks; b += chunkBlocks) {
          const n = Math.min(chunkBlocks, blocks - b);
          const from = Math.ceil((b * bs) / isz);
          const to = Math.min(last + 1, Math.floor(((b + n) * bs) / isz));
          yield { group: g.group, table, firstBlock: b, blocks: n, firstIno: g.firstIno, from, to, bitmap: g.bitmap };
        }
      }
    };
    // A chunk that cannot be read is retried inode by inode below.
    // Each read notes the cache's write generation when it starts (see adopt).
    const read = (p: Piece): Promise<{ bytes: Uint8Array; gen: number } | undefined> => {
      const gen = this.itable.generation;
      return this.readBlocks(p.table + p.firstBlock, p.blocks).then(
        (bytes) => ({ bytes, gen }),
        () => undefined,
      );
    };
    const it = pieces(this.layout.inodeGroups(), this);
    let next = await it.next();
    let nextBytes = next.done ? undefined : read(next.value);
    while (!next.done) {
      const p = next.value;
      const pending = nextBytes!;
      next = await it.next();
      nextBytes = next.done ? undefined : read(next.value);
      const got = await pending;
      const bytes = got?.bytes;
      // Inodes read after the scan (a diff's candidates) then come from these bytes.
      if (got !== undefined) this.itable.adopt(p.group, p.firstBlock, got.bytes, got.gen);
      const base = (p.table + p.firstBlock) * bs;
      for (let i = p.from; i < p.to; i++) {
        if (!testBit(p.bitmap, i)) continue;
        const ino = p.firstIno + i;
        let r: void | Promise<void>;
        if (bytes === undefined) r = unread(ino);
        else {
          const off = i * isz - p.firstBlock * bs;
          r = record(bytes, off, ino, base + off);
        }
        if (r !== undefined) await r;
      }
    }
  }

  /**
   * The extents of an inode (as extentsOf yields them) without I/O or a promise when they
   * all sit in i_block (no mapping, or an extent root that is a leaf); undefined when a
   * tree or block map must be read. Throws CORRUPT_IMAGE.
   */
  inlineExtentsOf(inode: Inode): FileExtent[] | undefined {
    if (!this.hasBlockMapping(inode)) return [];
    if (!(inode.i_flags & EXT4_EXTENTS_FL)) return undefined;
    return rootLeafExtents(this.env, inode.ino, inode.i_block, inode.deviceOffset + 0x28);
  }

  /**
   * Builds the block -> owner table: group metadata of every group, then every in-use
   * inode's data, directory, journal, extent-node, indirect and xattr blocks, in one scan
   * of the inode tables (scanInodes). Memory is O(runs). With `only`, the table holds the
   * owners of those blocks alone (a diff attributing a few changed blocks: no table of the
   * whole filesystem to build and sort), and asking it about another block is INTERNAL.
   * Throws CORRUPT_IMAGE, BAD_CHECKSUM, IO.
   */
  async blockOwnership(only?: BlockRuns): Promise<BlockOwnership> {
    const sb = this.superblock;
    const b = new OwnershipBuilder();
    // Runs outside `only` are dropped before an owner object is made for them.
    const add = (start: number, length: number, kind: OwnerKind, id: { ino?: number; group?: number }, lblk?: number): void => {
      if (only === undefined) {
        b.add(start, length, lblk === undefined ? { kind, ...id } : { kind, ...id, lblk });
        return;
      }
      if (!only.overlaps(start, length)) return;
      for (const [s, n] of only.intersect(start, length)) b.add(s, n, lblk === undefined ? { kind, ...id } : { kind, ...id, lblk: lblk + (s - start) });
    };
    for (const r of this.layout.metaRuns) add(r.start, r.count, r.kind, r.kind === 'boot block' ? {} : { group: r.group });
    const xattrBlocks = new Set<number>();
    // A scoped scan keeps the records a diff reads next (see scannedRecords).
    const keep = only !== undefined;
    if (keep) this.scannedRecords.clear();
    const ownsSome = (extents: readonly FileExtent[]): boolean => {
      for (const e of extents) if (only!.overlaps(e.pblk, e.len)) return true;
      return false;
    };
    const visit = (inode: Inode): void | Promise<void> => {
      const ino = inode.ino;
      if (inode.i_mode === 0 && inode.i_links_count === 0 && ino !== EXT4_RESIZE_INO) return;
      if (keep && fileType(inode.i_mode) === S_IFDIR) this.scannedRecords.set(ino, new Uint8Array(inode.raw));
      if (inode.i_file_acl !== 0 && !xattrBlocks.has(inode.i_file_acl)) {
        xattrBlocks.add(inode.i_file_acl);
        add(inode.i_file_acl, 1, 'xattr block', { ino });
      }
      if (ino === EXT4_RESIZE_INO) {
        // The resize inode's double-indirect block lists the reserved GDT blocks, which the
        // group layout above already owns; only the DIND block itself is the inode's.
        const dind = new DataView(inode.i_block.buffer, inode.i_block.byteOffset).getUint32(EXT4_DIND_BLOCK * 4, true);
        if (dind !== 0) add(dind, 1, 'indirect block', { ino });
        return;
      }
      const kind: OwnerKind = ino === EXT4_JOURNAL_INO || ino === sb.s_journal_inum ? 'journal' : fileType(inode.i_mode) === S_IFDIR ? 'directory' : 'data';
      const inline = this.inlineExtentsOf(inode);
      if (inline !== undefined) {
        for (const e of inline) add(e.pblk, e.len, kind, { ino }, e.lblk);
        if (keep && ownsSome(inline)) this.scannedRecords.set(ino, new Uint8Array(inode.raw));
        return;
      }
      return (async () => {
        let owns = false;
        const meta = (pblk: number, k: OwnerKind): void => {
          add(pblk, 1, k, { ino });
          if (keep && !owns) owns = only!.overlaps(pblk, 1);
        };
        for await (const e of this.extentsOf(inode, meta)) {
          add(e.pblk, e.len, kind, { ino }, e.lblk);
          if (keep && !owns) owns = ownsSome([e]);
        }
        if (owns) this.scannedRecords.set(ino, new Uint8Array(inode.raw));
      })();
    };
    const isz = sb.s_inode_size;
    await this.scanInodeRecords(
      (bytes, at, ino, deviceOffset) => {
        // Fast path (most inodes: a regular file or directory, its extents in i_block, no
        // xattr block): the record is checked in place and read without an Inode object;
        // any other inode goes through decodeInodeLazy and visit.
        const mode = bytes[at]! | (bytes[at + 1]! << 8);
        const t = fileType(mode);
        const flags = (bytes[at + 0x20]! | (bytes[at + 0x21]! << 8) | (bytes[at + 0x22]! << 16) | (bytes[at + 0x23]! << 24)) >>> 0;
        const simple =
          (t === S_IFREG || t === S_IFDIR) &&
          (flags & (EXT4_EXTENTS_FL | EXT4_INLINE_DATA_FL)) === EXT4_EXTENTS_FL &&
          ino !== EXT4_RESIZE_INO &&
          ino !== EXT4_JOURNAL_INO &&
          ino !== sb.s_journal_inum &&
          (bytes[at + 0x68]! | bytes[at + 0x69]! | bytes[at + 0x6a]! | bytes[at + 0x6b]! | bytes[at + 0x76]! | bytes[at + 0x77]!) === 0;
        if (!simple) return visit(decodeInodeLazy(bytes.subarray(at, at + isz), ino, sb, this.ctx, deviceOffset));
        checkInodeRecord(bytes, at, ino, sb, this.ctx, deviceOffset);
        const links = bytes[at + 0x1a]! | (bytes[at + 0x1b]! << 8);
        if (mode === 0 && links === 0) return;
        const extents = rootLeafExtents(this.env, ino, bytes.subarray(at + 0x28, at + 0x28 + EXT4_I_BLOCK_SIZE), deviceOffset + 0x28);
        // An extent tree deeper than i_block: the whole inode, already checked.
        if (extents === undefined) return visit(decodeInodeLazy(bytes.subarray(at, at + isz), ino, sb, this.ctx, deviceOffset, { verified: true }));
        const kind: OwnerKind = t === S_IFDIR ? 'directory' : 'data';
        for (const e of extents) add(e.pblk, e.len, kind, { ino }, e.lblk);
        if (keep && (t === S_IFDIR || ownsSome(extents))) this.scannedRecords.set(ino, new Uint8Array(bytes.subarray(at, at + isz)));
      },
      async (ino) => visit(await this.readInode(ino)),
    );
    return b.build((await this.layout.freeBlocks()).toArray(), sb.s_blocks_count, only);
  }

  /** Entries in the orphan file (orphan_file feature): non-zero inode slots of its blocks. */
  private async countOrphanFileEntries(): Promise<number> {
    if (this.orphanFileEntries !== undefined) return this.orphanFileEntries;
    const sb = this.superblock;
    let count = 0;
    if (sb.s_feature_compat & EXT4_FEATURE_COMPAT_ORPHAN_FILE && sb.s_orphan_file_inum !== 0) {
      const inode = await this.readInode(sb.s_orphan_file_inum);
      const bs = this.blockSize;
      for await (const e of this.extentsOf(inode)) {
        for (let i = 0; i < e.len; i++) {
          const blk = await this.readBlocks(e.pblk + i, 1);
          const v = new DataView(blk.buffer, blk.byteOffset, blk.byteLength);
          // ext4 doc, orphan.rst: inode slots, then an 8-byte tail (magic, checksum).
          if (v.getUint32(bs - 8, true) !== EXT4_ORPHAN_BLOCK_MAGIC) continue;
          for (let o = 0; o < bs - 8; o += 4) if (v.getUint32(o, true) !== 0) count++;
        }
      }
    }
    this.orphanFileEntries = count;
    return count;
  }

  /**
   * The journal's state, or undefined without a journal. Counting reads the log's
   * descriptor and commit blocks from s_start (bounded by the log's length); a journal
   * that cannot be read gives a null count and a `problem`, not an error, since only
   * warnings depend on it. Throws IO.
   */
  journalState(): Promise<JournalState | undefined> {
    return (this.journal ??= this.readJournalState());
  }

  private async readJournalState(): Promise<JournalState | undefined> {
    const sb = this.superblock;
    const needsRecovery = (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_RECOVER) !== 0;
    if (!(sb.s_feature_compat & EXT4_FEATURE_COMPAT_HAS_JOURNAL)) return needsRecovery ? { needsRecovery, committedTransactions: null, problem: 'no journal' } : undefined;
    if (sb.s_journal_inum === 0) return { needsRecovery, committedTransactions: null, problem: 'external journal' };
    try {
      const inode = await this.readInode(sb.s_journal_inum);
      const extents = await collect(this.extentsOf(inode));
      const bs = this.blockSize;
      const readLogBlock = async (i: number): Promise<{ bytes: Uint8Array; deviceOffset: number }> => {
        const e = extents.find((x) => i >= x.lblk && i < x.lblk + x.len);
        if (e === undefined) fsCorrupt(this.ctx, `ext4.inode[${inode.ino}]`, inode.deviceOffset, 'journal block not mapped', { actual: i });
        const pblk = e.pblk + (i - e.lblk);
        return { bytes: await this.readBlocks(pblk, 1), deviceOffset: pblk * bs };
      };
      const first = await readLogBlock(0);
      const jsb = decodeJournalSuperblock(first.bytes, this.ctx, first.deviceOffset);
      if (jsb.s_blocksize !== bs) fsCorrupt(this.ctx, 'jbd2.superblock.s_blocksize', first.deviceOffset + 0xc, 'journal block size differs from the filesystem', { expected: bs, actual: jsb.s_blocksize });
      return { needsRecovery, committedTransactions: await countCommittedTransactions(jsb, this.ctx, readLogBlock) };
    } catch (err) {
      if (!(err instanceof ImgdedupError) || err.code === 'IO') throw err;
      return { needsRecovery, committedTransactions: null, problem: err.message };
    }
  }

  /**
   * Every reason a writer must refuse this filesystem, in a fixed order: a journal that
   * needs recovery (with the committed transactions waiting), an errors state, an unclean
   * unmount, orphans (s_last_orphan, orphan_present, orphan file entries).
   * Throws what reading the orphan file throws.
   */
  async dirtyStates(): Promise<WriteRefusal[]> {
    const sb = this.superblock;
    const out: WriteRefusal[] = [];
    const refuse = (state: WriteRefusal['state'], reason: string, detail?: string): void => {
      out.push({ code: 'DIRTY_FILESYSTEM', state, reason, ...(detail !== undefined ? { detail } : {}) });
    };
    if (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_RECOVER) {
      const j = await this.journalState();
      const n = j?.committedTransactions;
      const count = n === null || n === undefined ? `an unknown number of committed transactions${j?.problem ? ` (${j.problem})` : ''}` : `${n} committed transaction${n === 1 ? '' : 's'}`;
      const detail = `needs_recovery set, ${count} not replayed`;
      refuse('needs_recovery', `the journal needs recovery (${detail})`, detail);
    }
    if (sb.s_state & EXT4_ERROR_FS) refuse('errors', 'the filesystem has recorded errors (s_state)');
    else {
      // The kernel counts errors here too (e2fsck clears the count); the state may still say clean.
      const errors = sb.raw.byteLength >= 0x198 ? new DataView(sb.raw.buffer, sb.raw.byteOffset, sb.raw.byteLength).getUint32(0x194, true) : 0;
      if (errors > 0) refuse('errors', `the filesystem has recorded errors (s_error_count ${errors} since the last e2fsck)`);
    }
    if (!(sb.s_state & EXT4_VALID_FS)) refuse('not_clean', 'the filesystem was not cleanly unmounted (s_state)');
    if (sb.s_last_orphan !== 0) refuse('orphans', `orphan inodes present (s_last_orphan ${sb.s_last_orphan})`);
    else if (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT) refuse('orphans', 'orphan inodes present (orphan_present)');
    else {
      const n = await this.countOrphanFileEntries();
      if (n > 0) refuse('orphans', `${n} orphan inodes in the orphan file`);
    }
    return out;
  }

  /**
   * Why a writer must refuse this filesystem (the first of dirtyStates), or undefined if
   * it is clean. Throws what reading the orphan file throws.
   */
  async writeRefusal(): Promise<WriteRefusal | undefined> {
    return (await this.dirtyStates())[0];
  }

  /**
   * Warnings for a reader that shows this filesystem as it is on disk (ls, diff): one per
   * dirty state, each saying what the output means and how to make it clean.
   * Throws what dirtyStates throws.
   */
  async readWarnings(): Promise<string[]> {
    const file = this.ctx.file;
    let states: WriteRefusal[];
    try {
      states = await this.dirtyStates();
    } catch (err) {
      // A corrupt orphan file must not stop a read-only listing; say what could not be checked.
      if (!(err instanceof ImgdedupError) || err.code === 'IO') throw err;
      return [`${file}: could not check whether the filesystem is clean: ${err.message}`];
    }
    return states.map((d) => {
      switch (d.state) {
        case 'needs_recovery':
          return `${file}: filesystem has a journal that needs recovery (${d.detail ?? 'needs_recovery set'}): what is shown is the state before the journal is replayed; run e2fsck or mount it to replay`;
        case 'errors':
          return `${file}: filesystem has recorded errors (s_state): what is shown may be inconsistent; run e2fsck`;
        case 'not_clean':
          return `${file}: filesystem was not cleanly unmounted (s_state): what is shown may be inconsistent; run e2fsck`;
        case 'orphans':
          return `${file}: filesystem has ${d.reason}: files deleted or truncated while open are not yet freed; run e2fsck or mount it to finish`;
      }
    });
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}
