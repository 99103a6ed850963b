/**
 * The ext4 surgical writer: makes exactly the changes it is asked for in a filesystem on
 * a WritableDevice (a copy-on-write layer over a base image, in practice), and leaves a
 * filesystem e2fsck has nothing to say about. It reads through an Ext4Fs on the same
 * device (whose caches it keeps coherent) and writes every structure with its checksum;
 * the group accounting (bitmaps, descriptors, superblock counts) is kept in GroupState
 * and written by `commit`. The journal is never touched: the filesystem must be clean
 * before (assertWritable) and is clean after.
 *
 * Allocation is constrained (AllocConstraints): the rebase passes the blocks and inode
 * numbers in use in any client, so the update lands where no client has data.
 */
import type { WritableDevice } from '../../diskimage/BlockDevice.js';
import { isZero } from '../../diskimage/isZero.js';
import { CorruptImageError, InternalError, RefusedError } from '../../errors.js';
import type { FsLocation } from './context.js';
import type { AllocConstraints, Run } from './allocator.js';
import { ext4Crc32cU32 } from './checksums.js';
import {
  EXT4_EXTENTS_FL,
  EXT4_FEATURE_RO_COMPAT_DIR_NLINK,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_FT_BLKDEV,
  EXT4_FT_CHRDEV,
  EXT4_FT_DIR,
  EXT4_USER_FLAGS,
  EXT4_FT_FIFO,
  EXT4_FT_REG_FILE,
  EXT4_FT_SOCK,
  EXT4_FT_SYMLINK,
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_INDEX_FL,
  EXT4_INLINE_DATA_FL,
  EXT4_I_BLOCK_SIZE,
  EXT4_NAME_LEN,
  EXT4_ROOT_INO,
  EXT4_LINK_MAX,
  EXT4_VERITY_FL,
  EXT4_ENCRYPT_FL,
  EXT4_EA_INODE_FL,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from './constants.js';
import { addEntry, dirFormat, type EncodedBlock, linksAfterSubdirAdded, linksAfterSubdirRemoved, newDirBlock, removeEntry, type DirFormat, type DirectoryBlocks } from './dirWriter.js';
import { Ext4Fs, type BlockOwnership, type FileExtent } from './Ext4Fs.js';
import { buildExtentTree } from './extentTree.js';
import { GroupState, mergeRuns } from './groupState.js';
import { encodeInode, fileType, type Ext4Time, type Inode, type InodeFields } from './inode.js';
import { locateInode } from './inodeTable.js';
import { byteKey, isDotOrDotDot, joinPath, splitPath } from './names.js';
import { dropInlineData, needsXattrBlock, writeXattrs, releaseXattrBlock } from './xattrWriter.js';
import { xattrBlockChecksum } from './xattr.js';
import { BlockRuns } from '../BlockRuns.js';
import { WriteBackDevice } from '../../diskimage/cow/WriteBackDevice.js';

/** The kind of a filesystem object. */
export type NodeKind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

/** What a created object holds. */
export type NodeContent =
  /** `data` yields the content in chunks; a chunk is copied before the next is asked for, so a source may reuse its buffer. */
  | { readonly kind: 'file'; readonly size: number; data(): AsyncIterable<Uint8Array> }
  | { readonly kind: 'dir' }
  | { readonly kind: 'symlink'; readonly target: Uint8Array }
  | { readonly kind: 'chardev' | 'blockdev'; readonly major: number; readonly minor: number }
  | { readonly kind: 'fifo' | 'socket' };

export interface XattrSpec {
  /** Full name, prefix included ("user.x", "security.capability", "system.posix_acl_access"). */
  readonly name: Uint8Array;
  readonly value: Uint8Array;
}

/** Attributes of a created or changed object. Times default to the writer's `now`. */
export interface NodeAttrs {
  /** Permission bits with suid/sgid/sticky (0o7777); the type comes from the content. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly atime?: Ext4Time;
  readonly mtime?: Ext4Time;
  readonly ctime?: Ext4Time;
  readonly crtime?: Ext4Time;
  /** The object's complete xattr set (replacing any it had); undefined keeps what it has (none for new objects). */
  readonly xattrs?: readonly XattrSpec[];
  /** chattr flags (EXT4_USER_FLAGS bits; others ignored); undefined keeps what it has (none for new objects). */
  readonly flags?: number;
}

/** An object's state as the writer reports it (its content and xattrs are read through `ino`). */
export interface NodeState {
  readonly ino: number;
  readonly kind: NodeKind;
  /** Permission bits (0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
}

/** One path the writer changed: its state before and after (null when absent). */
export interface PathChange {
  readonly path: Uint8Array;
  readonly before: NodeState | null;
  readonly after: NodeState | null;
}

function stateOf(inode: Inode): NodeState {
  return { ino: inode.ino, kind: kindOfMode(inode.i_mode) ?? 'file', mode: inode.i_mode & 0o7777, uid: inode.i_uid, gid: inode.i_gid, size: inode.i_size };
}

/** What the writer changed (the rebase uses it instead of diffing afterwards). */
export interface WriteReport {
  readonly changes: readonly PathChange[];
  readonly blocksAllocated: BlockRuns;
  readonly blocksFreed: BlockRuns;
  readonly inodesAllocated: readonly number[];
  readonly inodesFreed: readonly number[];
  /** File content bytes written to files that are still there (a file made and removed again in the session does not count). */
  readonly bytesWritten: number;
  /** Blocks allocated and freed, every time (a block freed and allocated again counts in both). */
  readonly blockOperations: { readonly allocated: number; readonly freed: number };
  /** Inodes allocated and freed, every time. */
  readonly inodeOperations: { readonly allocated: number; readonly freed: number };
}

export interface Ext4WriterOptions {
  /** Name of the image (or image:partition) for messages. */
  readonly file: string;
  readonly location?: FsLocation;
  readonly constraints?: AllocConstraints;
  /** The time new and changed objects get where the caller gives none (default: now). */
  readonly now?: Ext4Time;
  /**
   * Hold small writes (inodes, directory and metadata blocks) in memory and write each
   * block once, at commit (WriteBackDevice). The device then lacks them until commit: only
   * for a caller that reads the device through the writer (or after commit) alone.
   */
  readonly writeBack?: boolean;
}

const KIND_TYPE: Readonly<Record<NodeKind, number>> = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, chardev: S_IFCHR, blockdev: S_IFBLK, fifo: S_IFIFO, socket: S_IFSOCK };
const KIND_FT: Readonly<Record<NodeKind, number>> = {
  file: EXT4_FT_REG_FILE,
  dir: EXT4_FT_DIR,
  symlink: EXT4_FT_SYMLINK,
  chardev: EXT4_FT_CHRDEV,
  blockdev: EXT4_FT_BLKDEV,
  fifo: EXT4_FT_FIFO,
  socket: EXT4_FT_SOCK,
};
/** Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;
/** Bytes of file content gathered before allocating and writing. */
const WRITE_CHUNK = 1 << 20;
/** Directory entries kept by the name cache before it starts over (bounds its memory). */
const NAME_CACHE_ENTRIES = 200_000;
/** Directory blocks kept as dirWriter encoded them (bounds that cache's memory: 2 blocks each). */
const ENCODED_BLOCKS = 2048;
/** Directory paths whose resolution is kept (bounds the memory of that cache). */
const RESOLVED_PATHS = 50_000;

export function kindOfMode(mode: number): NodeKind | undefined {
  const t = mode & S_IFMT;
  return (Object.keys(KIND_TYPE) as NodeKind[]).find((k) => KIND_TYPE[k] === t);
}

/** A directory entry as the writer's name cache holds it, with the logical block it lives in (undefined: inline). */
interface CachedEntry {
  readonly ino: number;
  readonly fileType: number;
  readonly lblk: number | undefined;
}

export class Ext4Writer {
  private readonly groups: GroupState;
  private readonly now: Ext4Time;
  private readonly changes: PathChange[] = [];
  private allocated: Run[] = [];
  private freed: Run[] = [];
  private readonly inodesAllocated: number[] = [];
  private readonly inodesFreed: number[] = [];
  private bytesWritten = 0;
  /** Content bytes written per inode this session: taken off bytesWritten when the inode is freed again. */
  private readonly bytesWrittenTo = new Map<number, number>();
  private committed = false;
  /** Every allocation and free, counted (the report's sets are net: a block freed and taken again is in neither). */
  private readonly grossBlocks = { allocated: 0, freed: 0 };
  /**
   * The entries of directories looked up in this session (directory inode -> name key ->
   * entry), kept in step by link and unlink, dropped when a directory is freed or its map
   * is replaced. An update resolves the same few directories thousands of times, and a
   * name that is not there costs a scan of the whole directory each time.
   */
  private readonly names = new Map<number, Map<string, CachedEntry>>();
  /** Per linear directory, the block the last added entry went into (where room is likely). */
  private readonly addAt = new Map<number, number>();
  /** Directories found holding a name twice. */
  private readonly duplicateNames = new Set<number>();
  /**
   * Directory paths resolved in this session (components joined, latin1) -> directory inode:
   * an update names the same few parents thousands of times. A resolution can only change
   * when an entry it went through goes away, so every removal of a name that is not known
   * to be a regular file's (a directory, a symlink) forgets them all.
   */
  private readonly resolved = new Map<string, number>();
  /** Per directory, the blocks dirWriter encoded (see DirectoryBlocks.encoded); at most ENCODED_BLOCKS in all. */
  private readonly encodedBlocks = new Map<number, Map<number, EncodedBlock>>();
  /** writeData's buffer, reused from file to file. */
  private dataBuffer: Uint8Array | undefined;
  private namesHeld = 0;

  private constructor(
    readonly fs: Ext4Fs,
    private readonly device: WritableDevice,
    private readonly o: Ext4WriterOptions,
  ) {
    const sb = fs.superblock;
    this.now = o.now ?? { sec: Math.floor(Date.now() / 1000), nsec: 0 };
    this.groups = new GroupState({
      file: o.file,
      sb,
      descriptor: (g) => fs.groupDescriptor(g),
      device,
      loadBlockBitmap: (g) => fs.layout.blockBitmap(g),
      loadInodeBitmap: (g) => fs.layout.inodeBitmap(g),
      ...(o.constraints ? { constraints: o.constraints } : {}),
    });
  }

  /**
   * Opens the filesystem on `device` for writing. Throws what Ext4Fs.open throws, and
   * what assertWritable throws (DIRTY_FILESYSTEM, WRITE_REFUSED).
   */
  static async open(device: WritableDevice, o: Ext4WriterOptions): Promise<Ext4Writer> {
    const { assertWritable } = await import('./writeRefusal.js');
    // 4 KiB units line up with blocks of any size from the filesystem's start.
    if (o.writeBack) device = new WriteBackDevice(device, { unit: 4096 });
    const fs = await Ext4Fs.open(device, { file: o.file, ...(o.location ? { location: o.location } : {}) });
    await assertWritable(fs, o.file);
    return new Ext4Writer(fs, device, o);
  }

  get blockSize(): number {
    return this.fs.blockSize;
  }

  private get metadataCsum(): boolean {
    return (this.fs.superblock.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  }

  // ---------------------------------------------------------------- low-level I/O

  private async writeBlock(blockNo: number, bytes: Uint8Array): Promise<void> {
    await this.device.write(blockNo * this.blockSize, bytes);
    this.fs.noteWrite(blockNo, 0, bytes);
  }

  /** Encodes and writes an inode (checksum set), keeping the reader's caches right. */
  private async writeInode(f: InodeFields, raw?: Uint8Array): Promise<void> {
    const sb = this.fs.superblock;
    const bytes = encodeInode(f, sb, raw !== undefined ? { raw } : {});
    // A directory touched again in the same second, an attribute set to what it was: the
    // same bytes are not written again (nor the reader's derived caches dropped).
    if (this.fs.holdsInodeBytes(f.ino, bytes)) return;
    const loc = locateInode(sb, (g) => this.fs.groupDescriptor(g), f.ino);
    await this.device.write(loc.blockNo * sb.blockSize + loc.within, bytes);
    this.fs.noteInodeWrite(f.ino, bytes);
  }

  private async allocBlocks(count: number, goal: number): Promise<Run[]> {
    const runs = await this.groups.allocBlocks(count, goal);
    this.allocated.push(...runs);
    this.grossBlocks.allocated += count;
    return runs;
  }

  private async freeRuns(runs: readonly Run[]): Promise<void> {
    for (const r of runs) await this.groups.freeBlocks(r.start, r.count);
    // Their bytes are discarded at commit, if the blocks are free still (discardFreed).
    this.freed.push(...runs);
    for (const r of runs) this.grossBlocks.freed += r.count;
  }

  /**
   * Discards the bytes of the blocks freed in this session that are free at its end
   * (WritableDevice.discard): an output does not ship what an update wrote and a later
   * layer deleted, nor store a freed block at all (found by a new user: a deleted layer
   * file's 5 MB stayed in the new base). Not when they are freed: `point` may give a block
   * freed earlier to a file again, over the content it still holds (found by the property
   * tests: a file removed, its blocks pointed at by another, which then read as the base's
   * bytes), and a block allocated again is written anyway.
   */
  private async discardFreed(): Promise<void> {
    if (this.device.discard === undefined) return;
    const bs = this.blockSize;
    for (const [start, count] of new BlockRuns(this.freed.map((r) => [r.start, r.count] as const)).runs()) {
      const inUse = new BlockRuns((await this.groups.blocksInUse(start, count)).map((b) => [b, 1] as const));
      for (const [s, c] of new BlockRuns([[start, count]]).minus(inUse).runs()) {
        await this.device.discard(s * bs, c * bs);
        this.fs.forgetBlocks(s, c);
      }
    }
  }

  private async allocInode(goalGroup: number, isDir: boolean, at?: number): Promise<number> {
    let ino: number;
    if (at !== undefined) {
      await this.groups.markInodeUsed(at, isDir);
      ino = at;
    } else ino = await this.groups.allocInode(goalGroup, isDir);
    // Inodes that came into the table's checked range must read as unused.
    for (const z of this.groups.zeroedInodes.splice(0)) {
      if (z === ino) continue;
      const sb = this.fs.superblock;
      const loc = locateInode(sb, (g) => this.fs.groupDescriptor(g), z);
      const zero = new Uint8Array(sb.s_inode_size);
      await this.device.write(loc.blockNo * sb.blockSize + loc.within, zero);
      this.fs.noteInodeWrite(z, zero);
    }
    this.inodesAllocated.push(ino);
    this.madeHere.add(ino);
    return ino;
  }

  private csumSeedOf(ino: number, generation: number): number {
    return this.metadataCsum ? ext4Crc32cU32(ext4Crc32cU32(this.fs.superblock.csumSeed, ino), generation) : 0;
  }

  // ---------------------------------------------------------------- directories

  private dirFormat(dir: Inode): DirFormat {
    return dirFormat(this.fs.superblock, dir);
  }

  /** A DirectoryBlocks over directory `ino` whose appends grow its extent tree. */
  private async directory(ino: number): Promise<{ blocks: DirectoryBlocks; fmt: DirFormat; inode: () => Inode }> {
    let inode = await this.fs.readInode(ino);
    if (fileType(inode.i_mode) !== S_IFDIR) throw new InternalError(`inode ${ino} is not a directory`);
    await this.checkBlockCount(inode);
    if (inode.i_flags & EXT4_INLINE_DATA_FL) inode = await this.uninlineDirectory(inode);
    let extents = await this.fs.directoryExtentsOf(inode);
    const bs = this.blockSize;
    const pblkOf = (lblk: number): number => {
      const e = extents.find((x) => lblk >= x.lblk && lblk < x.lblk + x.len);
      if (e === undefined) throw new InternalError(`directory ${ino} has no block ${lblk}`);
      return e.pblk + (lblk - e.lblk);
    };
    const self = this;
    const blocks: DirectoryBlocks = {
      ino,
      blockSize: bs,
      get blockCount() {
        return Math.ceil(inode.i_size / bs);
      },
      get htree() {
        return (inode.i_flags & EXT4_INDEX_FL) !== 0;
      },
      async read(lblk) {
        return (await self.fs.readMetadataBlock(pblkOf(lblk))).slice();
      },
      async write(lblk, bytes) {
        await self.writeBlock(pblkOf(lblk), bytes);
      },
      async append() {
        const lblk = Math.ceil(inode.i_size / bs);
        const last = extents[extents.length - 1];
        const goal = last !== undefined ? last.pblk + last.len : self.groups.goalForInode(ino);
        const [run] = await self.allocBlocks(1, goal);
        extents = [...extents, { lblk, pblk: run!.start, len: 1, unwritten: false }];
        await self.writeBlock(run!.start, new Uint8Array(bs));
        inode = await self.setMap(inode, extents, (lblk + 1) * bs);
        return lblk;
      },
      encoded: this.encodedOf(ino),
      setHtree(on) {
        // Takes effect with the next inode write: an append's, or touchDir's after the change.
        inode = { ...inode, i_flags: on ? inode.i_flags | EXT4_INDEX_FL : inode.i_flags & ~EXT4_INDEX_FL };
      },
    };
    return { blocks, fmt: this.dirFormat(inode), inode: () => inode };
  }

  /**
   * CORRUPT_IMAGE when a directory the writer is about to change (and did not make) counts
   * other blocks in i_blocks than it holds: rewriting its inode would carry the damage into
   * the output, where a metadata checksum no longer says so (found by a new user on a
   * filesystem without metadata_csum). Once per directory.
   */
  private async checkBlockCount(inode: Inode): Promise<void> {
    if (this.blockCountChecked.has(inode.ino) || this.madeHere.has(inode.ino)) return;
    this.blockCountChecked.add(inode.ino);
    let blocks = inode.i_file_acl !== 0 ? 1 : 0;
    if (!(inode.i_flags & EXT4_INLINE_DATA_FL)) {
      const { data, nodes } = await this.blocksOf(inode);
      for (const r of [...data, ...nodes]) blocks += r.count;
    }
    const expected = blocks * (this.blockSize / 512);
    if (inode.i_blocks !== expected) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file: this.o.file,
        structure: `ext4.inode[${inode.ino}].i_blocks`,
        offset: inode.deviceOffset + 0x1c,
        detail: `directory inode ${inode.ino} counts ${inode.i_blocks} 512-byte units in i_blocks, and holds ${expected} (e2fsck: "i_blocks is ..., should be ..."; run e2fsck -f on the filesystem first)`,
        expected,
        actual: inode.i_blocks,
      });
    }
  }
  private readonly blockCountChecked = new Set<number>();
  /** Inodes this session made (their counts are the writer's own). */
  private readonly madeHere = new Set<number>();

  /** The encoded blocks kept for directory `ino` (all are dropped once ENCODED_BLOCKS are kept). */
  private encodedOf(ino: number): Map<number, EncodedBlock> {
    let m = this.encodedBlocks.get(ino);
    if (m !== undefined) return m;
    let held = 0;
    for (const x of this.encodedBlocks.values()) held += x.size;
    if (held > ENCODED_BLOCKS) this.encodedBlocks.clear();
    m = new Map();
    this.encodedBlocks.set(ino, m);
    return m;
  }

  /** Adds entry `name` -> `ino` to directory `dirIno`. */
  private async link(dirIno: number, name: Uint8Array, ino: number, kind: NodeKind): Promise<void> {
    const d = await this.directory(dirIno);
    const fileType = d.fmt.filetype ? KIND_FT[kind] : 0;
    const cached = this.names.get(dirIno);
    const key = byteKey(name);
    // The cached listing says the name is absent (the callers looked it up): the directory need not be searched for it.
    const absent = cached !== undefined && !cached.has(key);
    const startAt = this.addAt.get(dirIno);
    const lblk = await addEntry(d.blocks, d.fmt, { name, ino, fileType }, absent ? { absent, ...(startAt !== undefined ? { startAt } : {}) } : {});
    if (lblk !== undefined) this.addAt.set(dirIno, lblk);
    else this.addAt.delete(dirIno);
    if (absent) {
      cached.set(key, { ino, fileType, lblk });
      this.namesHeld++;
    }
    await this.touchDir(d.inode());
  }

  /** Removes entry `name` from directory `dirIno`; returns what it named. */
  private async unlinkEntry(dirIno: number, name: Uint8Array): Promise<number | undefined> {
    const d = await this.directory(dirIno);
    const cached = this.names.get(dirIno);
    const key = byteKey(name);
    const dup = this.duplicateNames.has(dirIno);
    const known = dup ? undefined : cached?.get(key);
    const lblk = known?.lblk;
    if (known?.fileType !== EXT4_FT_REG_FILE) this.resolved.clear();
    const gone = await removeEntry(d.blocks, d.fmt, name, lblk !== undefined ? { lblk } : {});
    // Where a name appears twice (a corrupt directory), the other entry may remain: that directory is listed again.
    if (dup) this.forgetNames(dirIno);
    else if (cached?.delete(key)) this.namesHeld--;
    await this.touchDir(d.inode());
    return gone?.ino;
  }

  /** Directory mtime/ctime to now (with any flag change dirWriter made), written. */
  private async touchDir(dir: Inode): Promise<void> {
    await this.writeInode({ ...dir, mtime: this.now, ctime: this.now }, dir.raw);
  }

  private async lookupIn(dirIno: number, name: Uint8Array): Promise<{ ino: number; fileType: number } | undefined> {
    return (await this.namesOf(dirIno))?.get(byteKey(name));
  }

  /** The entries of directory `dirIno` ('.' and '..' included), or undefined when it is not a directory. */
  private async namesOf(dirIno: number): Promise<Map<string, CachedEntry> | undefined> {
    const known = this.names.get(dirIno);
    if (known !== undefined) return known;
    const inode = await this.fs.readInode(dirIno);
    // Only directories reach here (an entry said so, or the inode did): anything else is damage.
    this.checkEntry({ ino: dirIno, fileType: EXT4_FT_DIR }, inode);
    const map = new Map<string, CachedEntry>();
    for await (const batch of this.fs.dirBlocksOf(inode)) {
      for (const e of batch.entries) {
        const k = byteKey(e.name);
        // The first of duplicate names is the one a lookup finds.
        if (!map.has(k)) map.set(k, { ino: e.ino, fileType: e.fileType, lblk: batch.lblk });
        else this.duplicateNames.add(dirIno);
      }
    }
    if (this.namesHeld + map.size > NAME_CACHE_ENTRIES) {
      this.names.clear();
      this.namesHeld = 0;
    }
    this.names.set(dirIno, map);
    this.namesHeld += map.size;
    return map;
  }

  /**
   * An entry and the inode it names must agree (the entry's file type, a live inode):
   * otherwise the filesystem is damaged in a way e2fsck repairs, and replacing or removing
   * the object would orphan what it holds. Throws CORRUPT_IMAGE.
   */
  private checkEntry(entry: { ino: number; fileType: number }, inode: Inode): void {
    const kind = kindOfMode(inode.i_mode);
    const typeMismatch = entry.fileType !== 0 && (kind === undefined || KIND_FT[kind] !== entry.fileType);
    if (!typeMismatch && inode.i_links_count > 0) return;
    throw new CorruptImageError('CORRUPT_IMAGE', {
      file: this.o.file,
      structure: `ext4.inode[${entry.ino}]`,
      offset: inode.deviceOffset,
      detail: inode.i_links_count === 0 ? `inode ${entry.ino} is reached by a path but has no links (deleted): run e2fsck` : `a directory entry gives inode ${entry.ino} another file type than the inode has (not one): run e2fsck`,
    });
  }

  /** Forgets the cached entries of directory `ino` (freed, or its blocks replaced). */
  private forgetNames(ino: number): void {
    this.resolved.clear();
    this.encodedBlocks.delete(ino);
    const map = this.names.get(ino);
    if (map === undefined) return;
    this.namesHeld -= map.size;
    this.names.delete(ino);
    this.duplicateNames.delete(ino);
    this.addAt.delete(ino);
  }

  /**
   * An inline-data directory made an ordinary one-block directory (the kernel does the
   * same when an inline directory outgrows its inode), so entries can be added by
   * dirWriter. Returns the rewritten inode.
   */
  private async uninlineDirectory(inode: Inode): Promise<Inode> {
    const entries = [];
    for await (const e of this.fs.readdirOf(inode)) entries.push(e);
    const parent = entries.find((e) => e.name.length === 2 && isDotOrDotDot(e.name))?.ino ?? EXT4_ROOT_INO;
    const fmt = this.dirFormat(inode);
    const [run] = await this.allocBlocks(1, this.groups.goalForInode(inode.ino));
    // Start from '.' and '..', then add the rest through dirWriter so the block is laid out as it lays blocks out.
    await this.writeBlock(run!.start, newDirBlock(fmt, inode.ino, parent, this.blockSize));
    // i_block held the inline entries: it becomes an empty extent root before the map is set.
    const written = await this.setMap(await this.leavingInlineData(inode), [{ lblk: 0, pblk: run!.start, len: 1, unwritten: false }], this.blockSize);
    void written;
    const d = await this.directory(inode.ino);
    for (const e of entries) if (!isDotOrDotDot(e.name)) await addEntry(d.blocks, d.fmt, { name: e.name, ino: e.ino, fileType: e.fileType });
    await this.touchDir(d.inode());
    return this.fs.readInode(inode.ino);
  }

  /** The inode with its inline data dropped (system.data gone, an empty extent root in i_block, the extents flag), before setMap gives it a map. */
  private async leavingInlineData(inode: Inode): Promise<Inode> {
    return { ...inode, raw: dropInlineData(inode, this.fs.superblock), i_block: await this.emptyExtentRoot(), i_flags: (inode.i_flags & ~EXT4_INLINE_DATA_FL) | EXT4_EXTENTS_FL };
  }

  /** i_block of an extent-mapped inode that maps nothing. */
  private async emptyExtentRoot(): Promise<Uint8Array> {
    return (await buildExtentTree([], { blockSize: this.blockSize, allocate: async () => [] })).iBlock;
  }

  /** An inline-data symlink made a slow one: its target moved to a block of its own (an extent), system.data dropped. */
  private async uninlineSymlink(inode: Inode): Promise<Inode> {
    const target = await this.fs.readlinkOf(inode);
    const [run] = await this.allocBlocks(1, this.groups.goalForInode(inode.ino));
    const block = new Uint8Array(this.blockSize);
    block.set(target);
    await this.writeBlock(run!.start, block);
    return this.setMap(await this.leavingInlineData(inode), [{ lblk: 0, pblk: run!.start, len: 1, unwritten: false }], target.length);
  }

  // ---------------------------------------------------------------- block maps

  /**
   * Gives `inode` exactly the map `extents` and size `size`: builds a new extent tree
   * (freeing the old tree's node blocks), sets i_blocks, writes the inode. Data blocks
   * are the caller's business (allocated or freed before). Returns the inode written.
   */
  private async setMap(inode: Inode, extents: readonly FileExtent[], size: number, extra: Partial<InodeFields> = {}): Promise<Inode> {
    return (await this.setMapNodes(inode, extents, size, extra)).inode;
  }

  /** setMap, also saying which tree node blocks were freed and which now hold the tree. */
  private async setMapNodes(inode: Inode, extents: readonly FileExtent[], size: number, extra: Partial<InodeFields> = {}): Promise<{ inode: Inode; oldNodes: number[]; newNodes: number[] }> {
    const oldNodes: number[] = [];
    if (inode.i_flags & EXT4_EXTENTS_FL && !(inode.i_flags & EXT4_INLINE_DATA_FL)) {
      for await (const _ of this.fs.extentsOf(inode, (p) => oldNodes.push(p))) void _;
    }
    await this.freeRuns(mergeRuns(oldNodes.map((b) => ({ start: b, count: 1 }))));
    const goal = extents.length > 0 ? extents[0]!.pblk : this.groups.goalForInode(inode.ino);
    const tree = await buildExtentTree(extents, {
      blockSize: this.blockSize,
      ...(this.metadataCsum ? { csumSeed: inode.csumSeed } : {}),
      allocate: (n) => this.allocBlocks(n, goal),
    });
    for (const n of tree.nodes) await this.writeBlock(n.blockNo, n.bytes);
    const dataBlocks = extents.reduce((s, e) => s + e.len, 0);
    const xattrBlocks = inode.i_file_acl !== 0 ? 1 : 0;
    const i_blocks = (dataBlocks + tree.nodes.length + xattrBlocks) * (this.blockSize / 512);
    const next: InodeFields = { ...inode, ...extra, i_size: size, i_blocks, i_blocks_raw: undefined, hugeFileUnits: undefined, i_block: tree.iBlock, i_flags: (extra.i_flags ?? inode.i_flags) | EXT4_EXTENTS_FL };
    await this.writeInode(next, inode.raw);
    return { inode: await this.fs.readInode(inode.ino), oldNodes, newNodes: tree.nodes.map((n) => n.blockNo) };
  }

  /** Data blocks and extent-tree node blocks of an inode, as runs. */
  private async blocksOf(inode: Inode): Promise<{ data: Run[]; nodes: Run[]; extents: FileExtent[] }> {
    const nodes: number[] = [];
    const extents: FileExtent[] = [];
    for await (const e of this.fs.extentsOf(inode, (p) => nodes.push(p))) extents.push(e);
    return { data: mergeRuns(extents.map((e) => ({ start: e.pblk, count: e.len }))), nodes: mergeRuns(nodes.map((b) => ({ start: b, count: 1 }))), extents };
  }

  /**
   * Streams file content into newly allocated blocks; all-zero blocks become holes.
   * Returns the extents. Throws BAD_UPDATE if the stream's length is not `size`.
   */
  private async writeData(ino: number, content: Extract<NodeContent, { kind: 'file' }>, path: Uint8Array): Promise<FileExtent[]> {
    const bs = this.blockSize;
    const extents: FileExtent[] = [];
    let goal = this.groups.goalForInode(ino);
    // One buffer for every file of the session (the device copies what it is given): a
    // buffer per file or per chunk churns the allocator and leaves the RSS high.
    this.dataBuffer ??= new Uint8Array(WRITE_CHUNK);
    const buf = this.dataBuffer;
    let fill = 0;
    let lblk = 0;
    let total = 0;
    const flush = async (final: boolean): Promise<void> => {
      const n = final ? Math.ceil(fill / bs) : Math.floor(fill / bs);
      if (final && fill % bs !== 0) buf.fill(0, fill, n * bs);
      let i = 0;
      while (i < n) {
        if (isZero(buf.subarray(i * bs, (i + 1) * bs))) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < n && !isZero(buf.subarray(j * bs, (j + 1) * bs))) j++;
        let at = i;
        for (const r of await this.allocBlocks(j - i, goal)) {
          await this.device.write(r.start * bs, buf.subarray(at * bs, (at + r.count) * bs));
          // The block may have held metadata the reader cached earlier in this session (freed, then reused).
          this.fs.noteWrite(r.start, 0, buf.subarray(at * bs, (at + r.count) * bs));
          extents.push({ lblk: lblk + at, pblk: r.start, len: r.count, unwritten: false });
          at += r.count;
          goal = r.start + r.count;
        }
        i = j;
      }
      const wrote = Math.min(fill, n * bs);
      this.bytesWritten += wrote;
      this.bytesWrittenTo.set(ino, (this.bytesWrittenTo.get(ino) ?? 0) + wrote);
      lblk += n;
      if (final) return;
      // Only a partial block remains (fill was a whole buffer, a multiple of the block size): none.
      buf.copyWithin(0, n * bs, fill);
      fill -= n * bs;
    };
    for await (const chunk of content.data()) {
      total += chunk.length;
      if (total > content.size) break;
      let off = 0;
      while (off < chunk.length) {
        const take = Math.min(chunk.length - off, buf.length - fill);
        buf.set(chunk.subarray(off, off + take), fill);
        fill += take;
        off += take;
        if (fill === buf.length) await flush(false);
      }
    }
    if (total !== content.size) {
      throw new RefusedError('BAD_UPDATE', { file: this.o.file, path: new TextDecoder().decode(path), detail: `file content is ${total > content.size ? 'longer' : 'shorter'} than its stated size`, expected: content.size, actual: total });
    }
    await flush(true);
    return extents;
  }

  // ---------------------------------------------------------------- paths

  /**
   * The directory inode that `parts` names, following symlinks inside the filesystem
   * (absolute targets from its root; `..` never above the root). Returns undefined if a
   * component is missing (or, with `notDirIsMissing`, not a directory); throws BAD_UPDATE
   * if one is not a directory or symlinks loop.
   */
  async resolveDir(parts: readonly Uint8Array[], path: Uint8Array, options: { notDirIsMissing?: boolean } = {}): Promise<number | undefined> {
    const key = partsKey(parts);
    const hit = this.resolved.get(key);
    if (hit !== undefined) return hit;
    const ino = await this.resolveDirUncached(parts, path, options);
    if (ino !== undefined) {
      if (this.resolved.size >= RESOLVED_PATHS) this.resolved.clear();
      this.resolved.set(key, ino);
    }
    return ino;
  }

  private async resolveDirUncached(parts: readonly Uint8Array[], path: Uint8Array, options: { notDirIsMissing?: boolean }): Promise<number | undefined> {
    const stack: number[] = [EXT4_ROOT_INO];
    const queue = [...parts];
    let followed = 0;
    while (queue.length > 0) {
      const name = queue.shift()!;
      const cur = stack[stack.length - 1]!;
      if (name.length === 1 && name[0] === 0x2e) continue;
      if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const hit = await this.lookupIn(cur, name);
      if (hit === undefined) return undefined;
      // The entry's file type says "directory" without reading the inode (namesOf checks it
      // when the directory is listed); without the filetype feature, the inode says.
      if (hit.fileType === EXT4_FT_DIR) {
        stack.push(hit.ino);
        continue;
      }
      const inode = await this.fs.readInode(hit.ino);
      const t = fileType(inode.i_mode);
      if (t === S_IFDIR) {
        stack.push(hit.ino);
        continue;
      }
      if (t === S_IFLNK) {
        if (++followed > MAX_SYMLINKS) throw this.badPath(path, 'too many levels of symbolic links');
        const target = await this.fs.readlinkOf(inode);
        if (target[0] === 0x2f) stack.splice(1);
        queue.unshift(...splitPath(target));
        continue;
      }
      if (options.notDirIsMissing) return undefined;
      throw this.badPath(path, 'a parent component is not a directory');
    }
    return stack[stack.length - 1]!;
  }

  private badPath(path: Uint8Array, detail: string): RefusedError {
    const shown = new TextDecoder().decode(path);
    return new RefusedError('BAD_UPDATE', { file: this.o.file, path: shown, detail: `${shown}: ${detail}` });
  }

  private splitParent(path: Uint8Array): { parts: Uint8Array[]; name: Uint8Array } {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw this.badPath(path, 'the root itself cannot be replaced or removed');
    if (name.length > EXT4_NAME_LEN) throw this.badPath(path, `name longer than ${EXT4_NAME_LEN} bytes`);
    if (isDotOrDotDot(name)) throw this.badPath(path, "a name cannot be '.' or '..'");
    return { parts, name };
  }

  /**
   * For a normalised path ('/a/b/c': no empty, '.' or '..' component, its last name at most
   * 255 bytes) whose directory was resolved before (and is still in `resolved`): that
   * directory and where the last name starts. No component arrays, no I/O: an update looks
   * up each of its paths three or four times. Undefined otherwise (the general way then).
   */
  private knownParent(key: string): { dirIno: number; cut: number } | undefined {
    const cut = key.lastIndexOf('/');
    if (cut < 0 || key.charCodeAt(0) !== 0x2f || cut + 1 === key.length || key.length - cut - 1 > EXT4_NAME_LEN) return undefined;
    if (key.includes('//') || key.includes('/.')) return undefined;
    const dirIno = cut === 0 ? EXT4_ROOT_INO : this.resolved.get(key.slice(1, cut));
    return dirIno === undefined ? undefined : { dirIno, cut };
  }

  /** The directory `path` lies in (symlinks followed) and its last name; BAD_UPDATE if that directory does not exist. */
  private async existingParent(path: Uint8Array): Promise<{ dirIno: number; name: Uint8Array }> {
    const known = this.knownParent(byteKey(path));
    if (known !== undefined) return { dirIno: known.dirIno, name: path.subarray(known.cut + 1) };
    const { parts, name } = this.splitParent(path);
    const dirIno = await this.resolveDir(parts, path);
    if (dirIno === undefined) throw this.badPath(path, 'parent directory does not exist');
    return { dirIno, name };
  }

  /** The inode `path` names (its last component not followed), or undefined (also when a parent is not a directory). */
  async lookup(path: Uint8Array): Promise<number | undefined> {
    const key = byteKey(path);
    const known = this.knownParent(key);
    if (known !== undefined) {
      const names = this.names.get(known.dirIno) ?? (await this.namesOf(known.dirIno));
      return names?.get(key.slice(known.cut + 1))?.ino;
    }
    const parts = splitPath(path);
    if (parts.length === 0) return EXT4_ROOT_INO;
    const { name } = this.splitParent(path);
    const dir = await this.resolveDir(parts.slice(0, -1), path, { notDirIsMissing: true });
    return dir === undefined ? undefined : (await this.lookupIn(dir, name))?.ino;
  }

  /**
   * Creates or replaces the object at `path` (OCI layer semantics): a directory over a
   * directory only takes the new attributes; anything else first removes what is there
   * (a directory with its whole subtree). The parent must exist. `at` creates the object
   * at that inode number (it must be free). Returns the inode number.
   */
  async put(path: Uint8Array, content: NodeContent, attrs: NodeAttrs, options: { at?: number } = {}): Promise<number> {
    try {
      return await this.putAt(path, content, attrs, options);
    } catch (err) {
      throw this.namingPath(err, path);
    }
  }

  /** A refusal raised below put (xattrWriter's, dirWriter's) made to name the image and the path. */
  private namingPath(err: unknown, path: Uint8Array): unknown {
    if (!(err instanceof RefusedError) || err.data['file'] !== undefined) return err;
    const shown = new TextDecoder().decode(path);
    return new RefusedError(err.code as ConstructorParameters<typeof RefusedError>[0], { ...err.data, file: this.o.file, path: shown, detail: `${shown}: ${String(err.data['detail'] ?? '')}` });
  }

  private async putAt(path: Uint8Array, content: NodeContent, attrs: NodeAttrs, options: { at?: number }): Promise<number> {
    const { dirIno, name } = await this.existingParent(path);
    const existing = await this.lookupIn(dirIno, name);
    let before: PathChange['before'] = null;
    if (existing !== undefined) {
      const old = await this.fs.readInode(existing.ino);
      this.checkEntry(existing, old);
      before = stateOf(old);
      if (before.kind === 'dir' && content.kind === 'dir' && options.at === undefined) {
        await this.setAttrsOf(old, attrs);
        this.changes.push({ path, before, after: stateOf(await this.fs.readInode(existing.ino)) });
        return existing.ino;
      }
      await this.removeEntryAt(dirIno, name, path, false);
    }
    const ino = await this.create(dirIno, name, content, attrs, options.at, path);
    this.changes.push({ path, before, after: stateOf(await this.fs.readInode(ino)) });
    return ino;
  }

  /** Removes `path` (a directory with everything below it). Returns whether it existed. */
  async remove(path: Uint8Array): Promise<boolean> {
    const { parts, name } = this.splitParent(path);
    const dirIno = await this.resolveDir(parts, path);
    if (dirIno === undefined) return false;
    const hit = await this.lookupIn(dirIno, name);
    if (hit === undefined) return false;
    await this.removeEntryAt(dirIno, name, path, true);
    return true;
  }

  /** Names of the entries of directory `path` ('.' and '..' left out). */
  async children(path: Uint8Array): Promise<Uint8Array[]> {
    // The directory itself is followed like its parents (an opaque /lib over /lib -> usr/lib empties usr/lib).
    const ino = await this.resolveDir(splitPath(path), path).catch((err: unknown) => {
      if (err instanceof RefusedError && err.code === 'BAD_UPDATE') return undefined;
      throw err;
    });
    if (ino === undefined) return [];
    return this.childrenOf(ino);
  }

  /** Makes `path` another name of the object `target` names (not a directory). */
  async hardlink(path: Uint8Array, target: Uint8Array): Promise<void> {
    const tIno = await this.lookup(target);
    if (tIno === undefined) throw this.badPath(path, `hard link target ${new TextDecoder().decode(target)} does not exist`);
    await this.linkInode(path, tIno, target);
  }

  /**
   * Makes `path` another name of inode `tIno` (in use, not a directory), which may have no
   * name the caller knows: the merge links a client's name to the file M already holds.
   * `target` names it in errors.
   */
  async linkInode(path: Uint8Array, tIno: number, target?: Uint8Array): Promise<void> {
    const shownTarget = target !== undefined ? new TextDecoder().decode(target) : `inode ${tIno}`;
    const sb = this.fs.superblock;
    if (tIno < sb.s_first_ino || tIno > sb.s_inodes_count || !(await this.groups.inodeInUse(tIno))) throw this.badPath(path, `hard link target ${shownTarget} is not a file in use`);
    const t = await this.fs.readInode(tIno);
    const kind = kindOfMode(t.i_mode) ?? 'file';
    if (kind === 'dir') throw this.badPath(path, 'hard link to a directory');
    const { dirIno, name } = await this.existingParent(path);
    const existing = await this.lookupIn(dirIno, name);
    let before: PathChange['before'] = null;
    if (existing !== undefined) {
      if (existing.ino === tIno) return;
      const old = await this.fs.readInode(existing.ino);
      before = stateOf(old);
      await this.removeEntryAt(dirIno, name, path, false);
      // The target's last name lay inside the directory this link replaces and went with it
      // (tar finds it gone too); linking the freed inode would corrupt the filesystem.
      if ((await this.fs.readInode(tIno)).i_links_count === 0) throw this.badPath(path, `hard link target ${shownTarget} was inside the directory the link replaces`);
    }
    if (t.i_links_count >= EXT4_LINK_MAX) throw this.badPath(path, 'too many links');
    await this.link(dirIno, name, tIno, kind);
    const fresh = await this.fs.readInode(tIno);
    await this.writeInode({ ...fresh, i_links_count: fresh.i_links_count + 1, ctime: this.now }, fresh.raw);
    this.changes.push({ path, before, after: stateOf(await this.fs.readInode(tIno)) });
  }

  /** Sets the attributes of the object at `path`. */
  async setAttrs(path: Uint8Array, attrs: NodeAttrs): Promise<void> {
    const ino = await this.lookup(path);
    if (ino === undefined) throw this.badPath(path, 'no such file');
    const inode = await this.fs.readInode(ino);
    await this.setAttrsOf(inode, attrs);
    this.changes.push({ path, before: stateOf(inode), after: stateOf(await this.fs.readInode(ino)) });
  }

  /** Sets only the modification and access times of `path` (not recorded as a change of its state). */
  async setTimes(path: Uint8Array, mtime: Ext4Time, atime: Ext4Time): Promise<void> {
    const ino = await this.lookup(path);
    if (ino === undefined) throw this.badPath(path, 'no such file');
    const inode = await this.fs.readInode(ino);
    await this.writeInode({ ...inode, mtime, atime }, inode.raw);
  }

  private async setAttrsOf(inode: Inode, attrs: NodeAttrs): Promise<void> {
    let cur = inode;
    if (attrs.xattrs !== undefined) cur = await this.replaceXattrs(cur, attrs.xattrs);
    await this.writeInode(
      {
        ...cur,
        i_mode: (cur.i_mode & S_IFMT) | (attrs.mode & 0o7777),
        i_uid: attrs.uid,
        i_gid: attrs.gid,
        atime: attrs.atime ?? cur.atime,
        mtime: attrs.mtime ?? cur.mtime,
        ctime: attrs.ctime ?? this.now,
        crtime: attrs.crtime ?? cur.crtime,
        i_flags: attrs.flags !== undefined ? (cur.i_flags & ~EXT4_USER_FLAGS) | (attrs.flags & EXT4_USER_FLAGS) : cur.i_flags,
      },
      cur.raw,
    );
  }

  private async replaceXattrs(given: Inode, xattrs: readonly XattrSpec[]): Promise<Inode> {
    let inode = given;
    // e2fsck (1.47) does not count an xattr block of an inline-data symlink as in use and would
    // free it ("Block bitmap differences"): such a symlink takes its target out of the inode
    // first, which may leave room for the xattrs there (found by the property tests).
    if (fileType(inode.i_mode) === S_IFLNK && inode.i_flags & EXT4_INLINE_DATA_FL && needsXattrBlock(inode, xattrs, this.fs.superblock)) inode = await this.uninlineSymlink(inode);
    const r = await writeXattrs(inode, xattrs, {
      sb: this.fs.superblock,
      fs: this.fs,
      allocate: (goal) => this.allocBlocks(1, goal),
      free: (b) => this.freeRuns([{ start: b, count: 1 }]),
      writeBlock: (b, bytes) => this.writeBlock(b, bytes),
      goal: this.groups.goalForInode(inode.ino),
    });
    return { ...inode, raw: r.raw, i_file_acl: r.fileAcl, i_blocks: inode.i_blocks + r.blocksDelta * (this.blockSize / 512), i_blocks_raw: undefined as unknown as number, hugeFileUnits: false };
  }

  private async create(dirIno: number, name: Uint8Array, content: NodeContent, attrs: NodeAttrs, at: number | undefined, path: Uint8Array): Promise<number> {
    const sb = this.fs.superblock;
    const isDir = content.kind === 'dir';
    const parent = await this.fs.readInode(dirIno);
    // Refuse before allocating anything if the parent cannot count one more subdirectory.
    if (isDir) linksAfterSubdirAdded(parent.i_links_count, { htree: (parent.i_flags & EXT4_INDEX_FL) !== 0, dirNlink: (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_DIR_NLINK) !== 0, ino: dirIno });
    const ino = await this.allocInode(this.groups.groupOfInode(dirIno), isDir, at);
    const generation = 0;
    const extraIsize = sb.s_inode_size > EXT4_GOOD_OLD_INODE_SIZE ? Math.max(32, sb.s_want_extra_isize) : 0;
    const t = attrs.mtime ?? this.now;
    const blank: InodeFields = {
      ino,
      i_mode: KIND_TYPE[content.kind] | (attrs.mode & 0o7777),
      i_uid: attrs.uid,
      i_gid: attrs.gid,
      i_size: 0,
      i_links_count: isDir ? 2 : 1,
      i_blocks: 0,
      i_flags: (attrs.flags ?? 0) & EXT4_USER_FLAGS,
      i_generation: generation,
      i_file_acl: 0,
      i_dtime: 0,
      i_extra_isize: extraIsize,
      i_projid: 0,
      atime: attrs.atime ?? t,
      ctime: attrs.ctime ?? this.now,
      mtime: t,
      crtime: attrs.crtime ?? this.now,
      i_block: new Uint8Array(EXT4_I_BLOCK_SIZE),
    };
    // The blank inode as it would read back; every kind below writes it (once, with its content).
    let inode = this.fs.inodeFromBytes(ino, encodeInode(blank, sb, { raw: new Uint8Array(sb.s_inode_size) }));
    const csumSeed = this.csumSeedOf(ino, generation);
    switch (content.kind) {
      case 'file': {
        const extents = await this.writeData(ino, content, path);
        inode = await this.setMap(inode, extents, content.size);
        break;
      }
      case 'dir': {
        const [run] = await this.allocBlocks(1, this.groups.goalForInode(ino));
        const fmt = { ...this.dirFormat(inode), csumSeed };
        await this.writeBlock(run!.start, newDirBlock(fmt, ino, dirIno, this.blockSize));
        inode = await this.setMap(inode, [{ lblk: 0, pblk: run!.start, len: 1, unwritten: false }], this.blockSize);
        break;
      }
      case 'symlink': {
        const target = content.target;
        if (target.length === 0 || target.length >= this.blockSize) throw this.badPath(path, `symlink target of ${target.length} bytes (1..${this.blockSize - 1} allowed)`);
        if (target.length < EXT4_I_BLOCK_SIZE) {
          const iBlock = new Uint8Array(EXT4_I_BLOCK_SIZE);
          iBlock.set(target);
          await this.writeInode({ ...inode, i_size: target.length, i_block: iBlock }, inode.raw);
        } else {
          const [run] = await this.allocBlocks(1, this.groups.goalForInode(ino));
          const block = new Uint8Array(this.blockSize);
          block.set(target);
          await this.device.write(run!.start * this.blockSize, block);
          this.fs.noteWrite(run!.start, 0, block);
          inode = await this.setMap(inode, [{ lblk: 0, pblk: run!.start, len: 1, unwritten: false }], target.length);
        }
        break;
      }
      case 'chardev':
      case 'blockdev': {
        const iBlock = new Uint8Array(EXT4_I_BLOCK_SIZE);
        const v = new DataView(iBlock.buffer);
        const { major, minor } = content;
        // ext4 doc, inodes.rst: the old 16-bit encoding where it fits, else the new one in word 1.
        if (major < 256 && minor < 256) v.setUint32(0, (major << 8) | minor, true);
        else v.setUint32(4, ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0, true);
        await this.writeInode({ ...inode, i_block: iBlock }, inode.raw);
        break;
      }
      case 'fifo':
      case 'socket':
        await this.writeInode(inode, inode.raw);
        break;
    }
    if (attrs.xattrs !== undefined && attrs.xattrs.length > 0) {
      const cur = await this.fs.readInode(ino);
      const withX = await this.replaceXattrs(cur, attrs.xattrs);
      await this.writeInode(withX, withX.raw);
    }
    await this.link(dirIno, name, ino, content.kind);
    if (isDir) {
      const p = await this.fs.readInode(dirIno);
      const dirNlink = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_DIR_NLINK) !== 0;
      await this.writeInode({ ...p, i_links_count: linksAfterSubdirAdded(p.i_links_count, { htree: (p.i_flags & EXT4_INDEX_FL) !== 0, dirNlink, ino: dirIno }) }, p.raw);
    }
    return ino;
  }

  /**
   * Removes entry `name` of directory `dirIno` and, when it was the last link, the
   * object (a directory's subtree first). `record` adds the removal to the report.
   */
  private async removeEntryAt(dirIno: number, name: Uint8Array, path: Uint8Array, record: boolean): Promise<void> {
    const hit = await this.lookupIn(dirIno, name);
    if (hit === undefined) return;
    const inode = await this.fs.readInode(hit.ino);
    this.checkEntry(hit, inode);
    const kind = kindOfMode(inode.i_mode) ?? 'file';
    if (inode.i_flags & (EXT4_VERITY_FL | EXT4_ENCRYPT_FL | EXT4_EA_INODE_FL)) {
      throw new RefusedError('WRITE_REFUSED', { file: this.o.file, structure: `ext4.inode[${hit.ino}]`, path: new TextDecoder().decode(path), detail: 'refusing to remove a verity, encrypted or EA inode' });
    }
    if (kind === 'dir') {
      // Everything below is gone, whatever replaces the directory: each path is recorded.
      for (const child of await this.childrenOf(hit.ino)) await this.removeEntryAt(hit.ino, child, joinPath(path, child), true);
    }
    await this.unlinkEntry(dirIno, name);
    if (record) this.changes.push({ path, before: stateOf(inode), after: null });
    if (kind === 'dir') {
      const p = await this.fs.readInode(dirIno);
      const links = linksAfterSubdirRemoved(p.i_links_count);
      if (links !== p.i_links_count) await this.writeInode({ ...p, i_links_count: links }, p.raw);
      await this.release(await this.fs.readInode(hit.ino), true);
      return;
    }
    const fresh = await this.fs.readInode(hit.ino);
    if (fresh.i_links_count > 1) {
      await this.writeInode({ ...fresh, i_links_count: fresh.i_links_count - 1, ctime: this.now }, fresh.raw);
      return;
    }
    await this.release(fresh, false);
  }

  private async childrenOf(dirIno: number): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    for await (const e of this.fs.readdir(dirIno)) if (!isDotOrDotDot(e.name)) out.push(e.name);
    return out;
  }

  /** Frees an inode that lost its last link: its blocks, its xattr block reference, its number. */
  private async release(inode: Inode, isDir: boolean): Promise<void> {
    // An xattr value held in an EA inode would be left unreferenced: decoding the xattrs
    // refuses one (CORRUPT_IMAGE without the ea_inode feature; the feature is refused at open).
    await this.fs.xattrsOf(inode);
    const hasMap = !(inode.i_flags & EXT4_INLINE_DATA_FL) && (inode.i_flags & EXT4_EXTENTS_FL) !== 0;
    if (hasMap) {
      const { data, nodes } = await this.blocksOf(inode);
      await this.freeRuns(data);
      await this.freeRuns(nodes);
    } else if (fileType(inode.i_mode) === S_IFREG || fileType(inode.i_mode) === S_IFDIR || (fileType(inode.i_mode) === S_IFLNK && inode.i_blocks > (inode.i_file_acl ? this.blockSize / 512 : 0))) {
      if (!(inode.i_flags & EXT4_INLINE_DATA_FL)) {
        // Block-mapped (ext3-style) files: their blocks and indirect blocks, as the reader lists them.
        const meta: number[] = [];
        const ext: FileExtent[] = [];
        for await (const e of this.fs.extentsOf(inode, (p) => meta.push(p))) ext.push(e);
        await this.freeRuns(mergeRuns(ext.map((e) => ({ start: e.pblk, count: e.len }))));
        await this.freeRuns(mergeRuns(meta.map((b) => ({ start: b, count: 1 }))));
      }
    }
    if (inode.i_file_acl !== 0) {
      await releaseXattrBlock(inode.i_file_acl, {
        fs: this.fs,
        sb: this.fs.superblock,
        free: (b) => this.freeRuns([{ start: b, count: 1 }]),
        writeBlock: (b, bytes) => this.writeBlock(b, bytes),
      });
    }
    await this.groups.freeInode(inode.ino, isDir);
    this.forgetNames(inode.ino);
    this.inodesFreed.push(inode.ino);
    // What a layer wrote and a later one deleted is not in the output (discardFreed): nor in the count.
    this.bytesWritten -= this.bytesWrittenTo.get(inode.ino) ?? 0;
    this.bytesWrittenTo.delete(inode.ino);
    // An extent-mapped inode keeps a valid empty extent root, as the kernel leaves it: e2fsck
    // counts an extent flag over a zeroed i_block as garbage, and a block of such inodes as insane.
    const flags = inode.i_flags & ~(EXT4_INLINE_DATA_FL | EXT4_INDEX_FL);
    const iBlock = flags & EXT4_EXTENTS_FL ? await this.emptyExtentRoot() : new Uint8Array(EXT4_I_BLOCK_SIZE);
    await this.writeInode({ ...inode, i_links_count: 0, i_dtime: this.now.sec >>> 0, i_size: 0, i_blocks: 0, i_blocks_raw: undefined, hugeFileUnits: undefined, i_file_acl: 0, i_block: iBlock, i_flags: flags }, inode.raw);
  }

  // ---------------------------------------------------------------- point and relocate

  /**
   * Gives inode `ino` exactly the map `extents`, over blocks that already hold the right
   * content: blocks of the map it did not use are marked in use (they must be free),
   * blocks it used that the map leaves out are freed. `size` sets i_size.
   */
  async point(ino: number, extents: readonly FileExtent[], size: number): Promise<void> {
    let inode = await this.fs.readInode(ino);
    const t = fileType(inode.i_mode);
    if (t !== S_IFREG && t !== S_IFDIR && t !== S_IFLNK) throw new InternalError(`point: inode ${ino} has no block map`);
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
      // The map replaces the inline content: the inode leaves inline data (system.data
      // dropped, an empty extent root in i_block) before setMap gives it the map.
      inode = await this.leavingInlineData(inode);
    }
    this.forgetNames(ino);
    const { data } = await this.blocksOf(inode);
    const oldSet = new BlockRuns(data.map((r) => [r.start, r.count] as const));
    const newSet = new BlockRuns(extents.map((e) => [e.pblk, e.len] as const));
    for (const [s, c] of newSet.minus(oldSet).toArray()) {
      const inUse = await this.groups.blocksInUse(s, c);
      if (inUse.length > 0) throw new InternalError(`point: block ${inUse[0]} is in use`);
      await this.groups.markBlocksUsed(s, c);
      this.allocated.push({ start: s, count: c });
    }
    await this.freeRuns(oldSet.minus(newSet).toArray().map(([s, c]) => ({ start: s, count: c })));
    await this.setMap(inode, extents, size);
  }

  /**
   * Moves whatever lives in blocks [start, start+count) to blocks outside that range
   * (under the constraints) and updates its owners: file and directory data (the
   * extents), extent-tree nodes (the tree is rebuilt), xattr blocks (every inode that
   * refers to one). Free blocks in the range stay free. Returns the moves, block by
   * block. `owners` is the block ownership to go by (default: a scan of the filesystem as
   * it is now; a caller that has made changes in this session and knows the owners from
   * before them passes those, since the on-disk bitmaps are written only at commit).
   * Throws WRITE_REFUSED for blocks that cannot move (group metadata, the journal,
   * block-mapped files), NO_SPACE.
   */
  async relocate(start: number, count: number, owners?: BlockOwnership): Promise<Array<{ from: number; to: number }>> {
    const range = new BlockRuns([[start, count]]);
    // The owners as of a consistent state: the caller's (the rebase knows them from T), else a scan now;
    // blocks of inodes made in this session are not in a scan (the on-disk bitmaps lag until commit).
    const own = owners ?? (await this.fs.blockOwnership());
    const late = await this.sessionBlockOwners();
    const inodes = new Set<number>();
    const xattrBlocks: number[] = [];
    for (let b = start; b < start + count; b++) {
      if (!(await this.groups.blockInUse(b))) continue;
      const lateOwner = late.get(b);
      if (lateOwner !== undefined) {
        if (lateOwner.xattr) xattrBlocks.push(b);
        else inodes.add(lateOwner.ino);
        continue;
      }
      const o = own.ownerOf(b);
      if (o === 'free' || o === undefined) {
        // In use now but not in the scan: the writer allocated it in this session (its owner is in `inodes` by then or it is a node of a tree being rebuilt).
        throw new InternalError(`relocate: block ${b} has no known owner`);
      }
      if ((o.kind === 'data' || o.kind === 'directory' || o.kind === 'extent node') && o.ino !== undefined) inodes.add(o.ino);
      else if (o.kind === 'xattr block') xattrBlocks.push(b);
      else throw new RefusedError('WRITE_REFUSED', { file: this.o.file, structure: `ext4.block[${b}]`, detail: `cannot relocate a block of ${o.kind}${o.ino !== undefined ? ` (inode ${o.ino})` : ''}` });
    }
    const moves: Array<{ from: number; to: number }> = [];
    await this.groups.avoiding(range, async () => {
      for (const ino of inodes) moves.push(...(await this.relocateInodeBlocks(ino, range)));
      for (const b of xattrBlocks) moves.push(await this.relocateXattrBlock(b));
    });
    return moves;
  }

  /** Moves the data blocks of `ino` that lie in `range` and rebuilds its tree (whose new nodes avoid the range). */
  private async relocateInodeBlocks(ino: number, range: BlockRuns): Promise<Array<{ from: number; to: number }>> {
    const inode = await this.fs.readInode(ino);
    if (!(inode.i_flags & EXT4_EXTENTS_FL)) throw new RefusedError('WRITE_REFUSED', { file: this.o.file, structure: `ext4.inode[${ino}]`, detail: 'cannot relocate the blocks of a block-mapped (ext3-style) file' });
    const { extents } = await this.blocksOf(inode);
    const next: FileExtent[] = [];
    const moves: Array<{ from: number; to: number }> = [];
    for (const e of extents) {
      let l = e.lblk;
      let p = e.pblk;
      let left = e.len;
      while (left > 0) {
        const inRange = range.has(p);
        let n = 1;
        while (n < left && range.has(p + n) === inRange) n++;
        if (!inRange) next.push({ lblk: l, pblk: p, len: n, unwritten: e.unwritten });
        else {
          let at = 0;
          for (const r of await this.allocBlocks(n, p + n)) {
            const bytes = await this.fs.readBlocks(p + at, r.count);
            await this.device.write(r.start * this.blockSize, bytes);
            this.fs.noteWrite(r.start, 0, bytes);
            next.push({ lblk: l + at, pblk: r.start, len: r.count, unwritten: e.unwritten });
            for (let k = 0; k < r.count; k++) moves.push({ from: p + at + k, to: r.start + k });
            at += r.count;
          }
          await this.freeRuns([{ start: p, count: n }]);
        }
        l += n;
        p += n;
        left -= n;
      }
    }
    // Rebuilt even when no data moved: its nodes may be the blocks in the range. Node moves
    // are reported old to new in tree order (the tree is rebuilt whole, so the pairing is nominal).
    const { oldNodes, newNodes } = await this.setMapNodes(await this.fs.readInode(ino), next, inode.i_size);
    oldNodes.forEach((b, i) => {
      if (range.has(b)) moves.push({ from: b, to: newNodes[Math.min(i, newNodes.length - 1)] ?? 0 });
    });
    return moves;
  }

  /**
   * Inodes this session made that are still in use. The reader's scans (blockOwnership,
   * scanInodes) go by the inode bitmaps on disk, which show them only after commit.
   */
  private async sessionInodes(): Promise<number[]> {
    const out: number[] = [];
    for (const ino of new Set(this.inodesAllocated)) if (await this.groups.inodeInUse(ino)) out.push(ino);
    return out;
  }

  /** The blocks of the inodes this session made (data, extent nodes, xattr block), by block. */
  private async sessionBlockOwners(): Promise<Map<number, { ino: number; xattr: boolean }>> {
    const out = new Map<number, { ino: number; xattr: boolean }>();
    for (const ino of await this.sessionInodes()) {
      const inode = await this.fs.readInode(ino);
      if (inode.i_file_acl !== 0) out.set(inode.i_file_acl, { ino, xattr: true });
      if (inode.i_flags & EXT4_INLINE_DATA_FL) continue;
      const { data, nodes } = await this.blocksOf(inode);
      for (const r of [...data, ...nodes]) for (let b = r.start; b < r.start + r.count; b++) out.set(b, { ino, xattr: false });
    }
    return out;
  }

  /** Copies xattr block `b` to a new block (its checksum covers its number) and points every inode that uses it there. */
  private async relocateXattrBlock(b: number): Promise<{ from: number; to: number }> {
    const [run] = await this.allocBlocks(1, b + 1);
    const to = run!.start;
    const bytes = (await this.fs.readBlocks(b, 1)).slice();
    if (this.metadataCsum) new DataView(bytes.buffer).setUint32(0x10, xattrBlockChecksum(this.fs.superblock.csumSeed, to, bytes), true);
    await this.writeBlock(to, bytes);
    const users: number[] = [];
    await this.fs.scanInodes((inode) => {
      if (inode.i_links_count > 0 && inode.i_file_acl === b) users.push(inode.ino);
    });
    for (const ino of await this.sessionInodes()) if (!users.includes(ino) && (await this.fs.readInode(ino)).i_file_acl === b) users.push(ino);
    for (const ino of users) {
      const inode = await this.fs.readInode(ino);
      await this.writeInode({ ...inode, i_file_acl: to }, inode.raw);
    }
    await this.freeRuns([{ start: b, count: 1 }]);
    return { from: b, to };
  }

  /**
   * Whether inode number `ino` is free now, so that `put(..., { at: ino })` can create a
   * file there. Avoided numbers count as free here: the caller chose this one on purpose
   * (the rebase keeps a client's own inode numbers, which it avoids for everything else).
   */
  async inodeFree(ino: number): Promise<boolean> {
    if (ino < this.fs.superblock.s_first_ino || ino > this.fs.superblock.s_inodes_count) return false;
    return !(await this.groups.inodeInUse(ino));
  }

  /** Whether block `b` is in use now. */
  async blockInUse(b: number): Promise<boolean> {
    return this.groups.blockInUse(b);
  }

  /** The blocks of [start, start + count) in use now, ascending. */
  async blocksInUse(start: number, count: number): Promise<number[]> {
    return this.groups.blocksInUse(start, count);
  }

  // ---------------------------------------------------------------- commit

  /** Free inodes the constraints allow (for NO_SPACE checks before writing). */
  async freeInodes(): Promise<number> {
    return this.groups.countFreeInodes();
  }

  /** Whether blocks are allocated under constraints (a replaced file's blocks are then in use elsewhere: the rebase's clients). */
  get blocksConstrained(): boolean {
    return this.groups.blocksConstrained;
  }

  /** Whether the constraints keep inode `ino` from being used again once freed (a replaced file then needs a new one). */
  inodeAvoided(ino: number): boolean {
    return this.groups.inodeAvoided(ino);
  }

  /** Free blocks the constraints allow, in bytes (for NO_SPACE checks before writing). */
  async freeBytes(): Promise<number> {
    return (await this.groups.countFreeBlocks()) * this.blockSize;
  }

  /**
   * Writes the group accounting (bitmaps, descriptors, superblock counts) and returns
   * what changed. The writer cannot be used afterwards.
   */
  async commit(): Promise<WriteReport> {
    if (this.committed) throw new InternalError('Ext4Writer.commit called twice');
    this.committed = true;
    await this.discardFreed();
    await this.groups.flush();
    if (this.device instanceof WriteBackDevice) await this.device.flush();
    // The reader's bitmap cache predates the flush.
    this.fs.layout.forgetBitmaps();
    const allocated = new BlockRuns(this.allocated.map((r) => [r.start, r.count] as const));
    const freed = new BlockRuns(this.freed.map((r) => [r.start, r.count] as const));
    return {
      changes: this.changes,
      // A block allocated and then freed again (a rebuilt extent tree's node) is neither.
      blocksAllocated: allocated.minus(freed),
      blocksFreed: freed.minus(allocated),
      inodesAllocated: this.inodesAllocated.filter((i) => !this.inodesFreed.includes(i)),
      inodesFreed: this.inodesFreed.filter((i) => !this.inodesAllocated.includes(i)),
      bytesWritten: this.bytesWritten,
      blockOperations: { ...this.grossBlocks },
      inodeOperations: { allocated: this.inodesAllocated.length, freed: this.inodesFreed.length },
    };
  }
}

/**
 * A writer whose operation failed part-way (NO_SPACE in the middle of a file, after the
 * old one was removed and the new inode taken) holds a half-made change: bitmaps and
 * inodes that no directory reaches. It is spent: every later change and the commit throw,
 * so no caller can write out a filesystem e2fsck would have to repair. Wrapped here, once,
 * rather than in each method's body.
 */
const CHANGING = ['put', 'remove', 'hardlink', 'setAttrs', 'setTimes', 'point', 'relocate', 'commit'] as const;
const spent = new WeakMap<Ext4Writer, Error>();
for (const name of CHANGING) {
  const op = Ext4Writer.prototype[name] as (this: Ext4Writer, ...args: unknown[]) => Promise<unknown>;
  Object.defineProperty(Ext4Writer.prototype, name, {
    configurable: true,
    writable: true,
    value: async function (this: Ext4Writer, ...args: unknown[]): Promise<unknown> {
      const cause = spent.get(this);
      if (cause !== undefined) throw new InternalError(`Ext4Writer.${name} after an earlier operation failed part-way (${cause.message}): its changes are incomplete and must be dropped, not committed`);
      try {
        return await op.apply(this, args);
      } catch (e) {
        spent.set(this, e instanceof Error ? e : new Error(String(e)));
        throw e;
      }
    },
  });
}

/** The components joined by '/' as one lossless string (byteKey's mapping): one conversion for the whole path. */
function partsKey(parts: readonly Uint8Array[]): string {
  let n = Math.max(0, parts.length - 1);
  for (const p of parts) n += p.length;
  const joined = Buffer.allocUnsafe(n);
  let at = 0;
  for (const p of parts) {
    if (at > 0) joined[at++] = 0x2f;
    joined.set(p, at);
    at += p.length;
  }
  return joined.toString('latin1', 0, n);
}
