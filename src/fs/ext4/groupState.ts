/**
 * The writer's view of the block groups: the descriptors' counts and flags, the bitmaps
 * it has loaded, and every change to them, kept consistent as the kernel keeps them
 * (ext4 doc, group_descr.rst): free block and inode counts, used directories,
 * BLOCK_UNINIT / INODE_UNINIT cleared when a group is first used, bg_itable_unused
 * lowered when an inode past it is taken. `flush` writes the dirty bitmaps (padding bits
 * set, checksums in the descriptor), descriptors (checksummed) and the superblock's free
 * counts; nothing is written before.
 */
import type { WritableDevice } from '../../diskimage/BlockDevice.js';
import { CorruptImageError, InternalError } from '../../errors.js';
import { clearBits, freeRuns, noSpace, setBits, type AllocConstraints, type NumberSet, type Run } from './allocator.js';
import { blockBitmapChecksum, countClear, inodeBitmapChecksum, testBit } from './bitmaps.js';
import {
  EXT4_BG_BLOCK_UNINIT,
  EXT4_BG_INODE_UNINIT,
  EXT4_BG_INODE_ZEROED,
  EXT4_FEATURE_INCOMPAT_FLEX_BG,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
} from './constants.js';
import {
  descriptorBlockLocation,
  descriptorsPerBlock,
  encodeGroupDescriptor,
  groupBlockCount,
  groupFirstBlock,
  hasGroupChecksums,
  type GroupDescriptor,
} from './groupDescriptors.js';
import { encodeSuperblock, type Superblock } from './superblock.js';

/** A group descriptor's fields the writer changes. */
interface MutableGroup {
  freeBlocks: number;
  freeInodes: number;
  usedDirs: number;
  flags: number;
  itableUnused: number;
}

/** Loads a group's bitmap as a private copy; null when the group's bitmap cannot be had (then the group is not allocated from). */
export type BitmapLoader = (group: number) => Promise<Uint8Array | null>;

export interface GroupStateOptions {
  readonly file: string;
  readonly sb: Superblock;
  readonly descriptor: (g: number) => GroupDescriptor;
  readonly device: WritableDevice;
  readonly loadBlockBitmap: BitmapLoader;
  readonly loadInodeBitmap: BitmapLoader;
  readonly constraints?: AllocConstraints;
}

export class GroupState {
  private readonly sb: Superblock;
  private readonly groups = new Map<number, MutableGroup>();
  private readonly blockBitmaps = new Map<number, Uint8Array | null>();
  private readonly inodeBitmaps = new Map<number, Uint8Array | null>();
  private readonly dirtyBlockBitmaps = new Set<number>();
  /**
   * The longest free run (under the constraints) of groups whose bitmap was scanned whole
   * and has not changed since: allocBlocks passes over a group that cannot hold a request
   * without scanning it again (a nearly full disk has many such groups before the free ones).
   */
  private readonly longestRun = new Map<number, number>();
  /** Per group, a bit of the inode bitmap below which no inode is free (allocInode takes the lowest free one: it need not look below). */
  private readonly inodeFloor = new Map<number, number>();
  private readonly dirtyInodeBitmaps = new Set<number>();
  private freeBlocksDelta = 0;
  private freeInodesDelta = 0;
  /** Inodes zeroed in the table since they came into the used range of a group not INODE_ZEROED. */
  readonly zeroedInodes: number[] = [];

  constructor(private readonly o: GroupStateOptions) {
    this.sb = o.sb;
  }

  /** Blocks avoided for a while besides the constraints (a range being relocated). */
  private extraAvoid: NumberSet | undefined;

  get constraints(): AllocConstraints {
    const c = this.o.constraints ?? {};
    const extra = this.extraAvoid;
    if (extra === undefined) return c;
    const base = c.avoidBlocks;
    return { ...c, avoidBlocks: base === undefined ? extra : { has: (n) => base.has(n) || extra.has(n) } };
  }

  /** Runs `fn` with `blocks` avoided as well (nothing is allocated there meanwhile). */
  async avoiding<T>(blocks: NumberSet, fn: () => Promise<T>): Promise<T> {
    const before = this.extraAvoid;
    this.extraAvoid = before === undefined ? blocks : { has: (n) => before.has(n) || blocks.has(n) };
    try {
      return await fn();
    } finally {
      this.extraAvoid = before;
    }
  }

  private group(g: number): MutableGroup {
    let m = this.groups.get(g);
    if (m === undefined) {
      const d = this.o.descriptor(g);
      m = { freeBlocks: d.bg_free_blocks_count, freeInodes: d.bg_free_inodes_count, usedDirs: d.bg_used_dirs_count, flags: d.bg_flags, itableUnused: d.bg_itable_unused };
      // Counts are kept by adding and subtracting: one that cannot be right would end out of range.
      if (m.freeBlocks > groupBlockCount(this.sb, g)) this.badCount(g, 'bg_free_blocks_count', m.freeBlocks, `<= ${groupBlockCount(this.sb, g)} (blocks in the group)`);
      if (m.freeInodes > this.sb.s_inodes_per_group) this.badCount(g, 'bg_free_inodes_count', m.freeInodes, `<= ${this.sb.s_inodes_per_group} (inodes per group)`);
      if (m.usedDirs > this.sb.s_inodes_per_group) this.badCount(g, 'bg_used_dirs_count', m.usedDirs, `<= ${this.sb.s_inodes_per_group} (inodes per group)`);
      this.groups.set(g, m);
    }
    return m;
  }

  /** Current free blocks of group `g` as its descriptor will say. */
  freeBlocksIn(g: number): number {
    return this.group(g).freeBlocks;
  }

  private async blockBitmap(g: number): Promise<Uint8Array | null> {
    if (!this.blockBitmaps.has(g)) {
      const bm = await this.o.loadBlockBitmap(g);
      // The descriptor's count is kept by adding and subtracting: one that disagrees with the
      // bitmap would reach the output as damage e2fsck reports (found by a new user).
      if (bm !== null) this.checkCount(g, 'bg_free_blocks_count', this.o.descriptor(g).bg_free_blocks_count, countClear(bm, groupBlockCount(this.sb, g)));
      this.blockBitmaps.set(g, bm);
    }
    return this.blockBitmaps.get(g)!;
  }

  private async inodeBitmap(g: number): Promise<Uint8Array | null> {
    if (!this.inodeBitmaps.has(g)) {
      const bm = await this.o.loadInodeBitmap(g);
      if (bm !== null) this.checkCount(g, 'bg_free_inodes_count', this.o.descriptor(g).bg_free_inodes_count, countClear(bm, this.sb.s_inodes_per_group));
      this.inodeBitmaps.set(g, bm);
    }
    return this.inodeBitmaps.get(g)!;
  }

  /** CORRUPT_IMAGE when a group's free count is not what its bitmap says. */
  private checkCount(g: number, field: string, stated: number, counted: number): void {
    if (stated !== counted) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file: this.o.file,
        structure: `ext4.group_desc[${g}].${field}`,
        detail: `the group's ${field.includes('blocks') ? 'block' : 'inode'} bitmap has ${counted} free, its descriptor says ${stated} (run e2fsck -f on the filesystem first)`,
        expected: counted,
        actual: stated,
      });
    }
  }

  groupOfBlock(block: number): number {
    return Math.floor((block - this.sb.s_first_data_block) / this.sb.s_blocks_per_group);
  }

  groupOfInode(ino: number): number {
    return Math.floor((ino - 1) / this.sb.s_inodes_per_group);
  }

  /** The first group of `g`'s flex group (g itself without flex_bg). */
  flexLeader(g: number): number {
    if (!(this.sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_FLEX_BG)) return g;
    const size = 2 ** this.sb.s_log_groups_per_flex;
    return g - (g % size);
  }

  /** The goal block for data of an inode (the kernel's ext4_inode_to_goal_block: its flex group's first block). */
  goalForInode(ino: number): number {
    return groupFirstBlock(this.sb, this.flexLeader(this.groupOfInode(ino)));
  }

  /** Whether block `b` is in use now (avoided blocks are not "in use"). */
  async blockInUse(b: number): Promise<boolean> {
    const g = this.groupOfBlock(b);
    const bm = await this.blockBitmap(g);
    if (bm === null) throw new InternalError(`block bitmap of group ${g} is not available`);
    return testBit(bm, b - groupFirstBlock(this.sb, g));
  }

  /** The blocks of [start, start + count) in use now, ascending: one bitmap load per group, not one call per block (a client's file is thousands). */
  async blocksInUse(start: number, count: number): Promise<number[]> {
    const used: number[] = [];
    for (let b = start; b < start + count; ) {
      const g = this.groupOfBlock(b);
      const bm = await this.blockBitmap(g);
      if (bm === null) throw new InternalError(`block bitmap of group ${g} is not available`);
      const first = groupFirstBlock(this.sb, g);
      const end = Math.min(start + count, first + this.sb.s_blocks_per_group);
      for (; b < end; b++) if (testBit(bm, b - first)) used.push(b);
    }
    return used;
  }

  /**
   * Allocates `count` blocks, as few runs as it can, starting at `goal`: first a single
   * run that holds them all (from the goal's group on, wrapping), else the free runs in
   * order from the goal. Throws NO_SPACE when the free blocks (not avoided) are fewer.
   */
  async allocBlocks(count: number, goal: number): Promise<Run[]> {
    if (count <= 0) return [];
    const sb = this.sb;
    const g0 = Math.min(sb.groupCount - 1, Math.max(0, this.groupOfBlock(Math.max(goal, sb.s_first_data_block))));
    const avoid = this.constraints.avoidBlocks;
    // Pass 1: one run long enough.
    for (let k = 0; k < sb.groupCount; k++) {
      const g = (g0 + k) % sb.groupCount;
      if (this.group(g).freeBlocks < count && !(k === 0)) continue;
      const bm = await this.blockBitmap(g);
      if (bm === null) continue;
      const first = groupFirstBlock(sb, g);
      const from = k === 0 ? Math.max(0, goal - first) : 0;
      // The cache holds for the session's constraints only (not while a range is avoided for a relocation).
      const cached = this.extraAvoid === undefined;
      if (cached && (this.longestRun.get(g) ?? count) < count) continue;
      let longest = 0;
      for (const [s, n] of freeRuns(bm, groupBlockCount(sb, g), Math.min(from, groupBlockCount(sb, g)), first, avoid)) {
        if (n >= count) {
          this.takeBlocks(g, bm, s, count);
          return [{ start: first + s, count }];
        }
        longest = Math.max(longest, n);
      }
      if (cached && from === 0) this.longestRun.set(g, longest);
    }
    // Pass 2: gather runs from the goal on.
    const out: Run[] = [];
    let left = count;
    const taken: Array<[number, Uint8Array, number, number]> = [];
    for (let k = 0; k <= sb.groupCount && left > 0; k++) {
      const g = (g0 + k) % sb.groupCount;
      const bm = await this.blockBitmap(g);
      if (bm === null) continue;
      const first = groupFirstBlock(sb, g);
      const from = k === 0 ? Math.max(0, goal - first) : 0;
      const to = k === sb.groupCount ? Math.max(0, goal - first) : groupBlockCount(sb, g);
      for (const [s, n] of freeRuns(bm, to, Math.min(from, to), first, avoid)) {
        const take = Math.min(n, left);
        taken.push([g, bm, s, take]);
        out.push({ start: first + s, count: take });
        left -= take;
        if (left === 0) break;
      }
    }
    if (left > 0) throw noSpace(this.o.file, 'blocks', count, count - left, sb.blockSize);
    for (const [g, bm, s, n] of taken) this.takeBlocks(g, bm, s, n);
    return mergeRuns(out);
  }

  /** A descriptor count the writer cannot keep right (e2fsck fixes it; the writer must not write on it). */
  private badCount(g: number, field: string, actual: number, expected: string): never {
    throw new CorruptImageError('CORRUPT_IMAGE', {
      file: this.o.file,
      structure: `ext4.group_desc[${g}].${field}`,
      detail: 'group descriptor count disagrees with the group (run e2fsck on the filesystem first)',
      expected,
      actual,
    });
  }

  private takeBlocks(g: number, bm: Uint8Array, bit: number, count: number): void {
    const m = this.group(g);
    if (m.freeBlocks < count) this.badCount(g, 'bg_free_blocks_count', m.freeBlocks, `>= ${count} (free blocks in the bitmap being allocated)`);
    setBits(bm, bit, count);
    this.longestRun.delete(g);
    m.freeBlocks -= count;
    m.flags &= ~EXT4_BG_BLOCK_UNINIT;
    this.freeBlocksDelta -= count;
    this.dirtyBlockBitmaps.add(g);
  }

  /**
   * Marks blocks in use that already hold what they should (the writer's `point`). Throws
   * INTERNAL if one is in use already: the caller checks first.
   */
  async markBlocksUsed(start: number, count: number): Promise<void> {
    for (const [g, bit, n] of this.split(start, count)) {
      const bm = await this.requireBlockBitmap(g);
      for (let i = bit; i < bit + n; i++) if (testBit(bm, i)) throw new InternalError(`block ${groupFirstBlock(this.sb, g) + i} is in use already`);
      this.takeBlocks(g, bm, bit, n);
    }
  }

  /** Frees blocks. Throws INTERNAL if one is free already (a double free is a writer bug). */
  async freeBlocks(start: number, count: number): Promise<void> {
    for (const [g, bit, n] of this.split(start, count)) {
      const bm = await this.requireBlockBitmap(g);
      for (let i = bit; i < bit + n; i++) {
        if (!testBit(bm, i)) {
          // The writer frees only blocks an inode maps: one the bitmap says is free means the bitmap and the inodes disagree.
          throw new CorruptImageError('CORRUPT_IMAGE', {
            file: this.o.file,
            structure: `ext4.block_bitmap[${g}]`,
            deviceOffset: this.o.descriptor(g).bg_block_bitmap * this.sb.blockSize,
            detail: `block ${groupFirstBlock(this.sb, g) + i} is in use by a file but free in the block bitmap (run e2fsck)`,
          });
        }
      }
      clearBits(bm, bit, n);
      this.longestRun.delete(g);
      const m = this.group(g);
      m.freeBlocks += n;
      this.freeBlocksDelta += n;
      this.dirtyBlockBitmaps.add(g);
    }
  }

  private async requireBlockBitmap(g: number): Promise<Uint8Array> {
    const bm = await this.blockBitmap(g);
    if (bm === null) throw new InternalError(`block bitmap of group ${g} is not available`);
    return bm;
  }

  /** [group, first bit, count] pieces of a block run. */
  private *split(start: number, count: number): Generator<[number, number, number]> {
    let b = start;
    const end = start + count;
    if (start < this.sb.s_first_data_block || end > this.sb.s_blocks_count) throw new InternalError(`blocks ${start}+${count} outside the filesystem`);
    while (b < end) {
      const g = this.groupOfBlock(b);
      const first = groupFirstBlock(this.sb, g);
      const n = Math.min(end, first + groupBlockCount(this.sb, g)) - b;
      yield [g, b - first, n];
      b += n;
    }
  }

  /**
   * Allocates an inode number: the lowest free one (not avoided, >= s_first_ino) in the
   * goal group, else in the groups after it. Throws NO_SPACE.
   */
  async allocInode(goalGroup: number, isDir: boolean): Promise<number> {
    const sb = this.sb;
    const avoid = this.constraints.avoidInodes;
    for (let k = 0; k < sb.groupCount; k++) {
      const g = (goalGroup + k) % sb.groupCount;
      if (this.group(g).freeInodes === 0) continue;
      const bm = await this.inodeBitmap(g);
      if (bm === null) continue;
      const base = g * sb.s_inodes_per_group + 1;
      const from = Math.max(0, sb.s_first_ino - base, this.inodeFloor.get(g) ?? 0);
      for (const [s] of freeRuns(bm, sb.s_inodes_per_group, from, base, avoid)) {
        await this.takeInode(g, bm, s, isDir);
        this.inodeFloor.set(g, s + 1);
        return base + s;
      }
      this.inodeFloor.set(g, sb.s_inodes_per_group);
    }
    const inFs = this.freeCounts.inodes;
    throw noSpace(this.o.file, 'inodes', 1, 0, sb.blockSize, avoid !== undefined && inFs > 0 ? `no free inode the constraints allow: the filesystem has ${inFs} free, each in use elsewhere (${this.o.file}'s constraints)` : undefined);
  }

  /** Marks inode `ino` in use (creating a file at a given inode number). Throws INTERNAL if it is in use. */
  async markInodeUsed(ino: number, isDir: boolean): Promise<void> {
    const g = this.groupOfInode(ino);
    const bm = await this.inodeBitmap(g);
    if (bm === null) throw new InternalError(`inode bitmap of group ${g} is not available`);
    const bit = (ino - 1) % this.sb.s_inodes_per_group;
    if (testBit(bm, bit)) throw new InternalError(`inode ${ino} is in use already`);
    await this.takeInode(g, bm, bit, isDir);
  }

  /** Whether inode `ino` is in use now. */
  async inodeInUse(ino: number): Promise<boolean> {
    const g = this.groupOfInode(ino);
    const bm = await this.inodeBitmap(g);
    if (bm === null) return false;
    return testBit(bm, (ino - 1) % this.sb.s_inodes_per_group);
  }

  private async takeInode(g: number, bm: Uint8Array, bit: number, isDir: boolean): Promise<void> {
    const sb = this.sb;
    const m = this.group(g);
    if (m.freeInodes < 1) this.badCount(g, 'bg_free_inodes_count', m.freeInodes, '>= 1 (a free inode in the bitmap is being allocated)');
    setBits(bm, bit, 1);
    m.freeInodes--;
    this.freeInodesDelta--;
    if (isDir) m.usedDirs++;
    if (hasGroupChecksums(sb)) {
      if (m.flags & EXT4_BG_INODE_UNINIT) m.flags &= ~EXT4_BG_INODE_UNINIT;
      const highWater = sb.s_inodes_per_group - m.itableUnused;
      if (bit >= highWater) {
        // Inodes between the old high-water mark and this one become part of the table
        // e2fsck reads: unless the table is known zeroed, they must be zeroed now.
        if (!(m.flags & EXT4_BG_INODE_ZEROED)) {
          for (let i = highWater; i < bit; i++) this.zeroedInodes.push(g * sb.s_inodes_per_group + i + 1);
        }
        m.itableUnused = sb.s_inodes_per_group - bit - 1;
      }
      // The kernel initialises a BLOCK_UNINIT group's block bitmap when it hands out one of its inodes.
      if (m.flags & EXT4_BG_BLOCK_UNINIT) {
        const bb = await this.blockBitmap(g);
        if (bb !== null) {
          m.flags &= ~EXT4_BG_BLOCK_UNINIT;
          this.dirtyBlockBitmaps.add(g);
        }
      }
    }
    this.dirtyInodeBitmaps.add(g);
  }

  /** Frees inode `ino`. Throws INTERNAL if it is free already. */
  async freeInode(ino: number, isDir: boolean): Promise<void> {
    const g = this.groupOfInode(ino);
    const bm = await this.inodeBitmap(g);
    const bit = (ino - 1) % this.sb.s_inodes_per_group;
    if (bm === null || !testBit(bm, bit)) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: this.o.file, structure: `ext4.inode_bitmap[${g}]`, detail: `inode ${ino} is linked but free in the inode bitmap (run e2fsck)` });
    }
    clearBits(bm, bit, 1);
    const floor = this.inodeFloor.get(g);
    if (floor !== undefined && bit < floor) this.inodeFloor.set(g, bit);
    const m = this.group(g);
    m.freeInodes++;
    this.freeInodesDelta++;
    if (isDir) m.usedDirs--;
    this.dirtyInodeBitmaps.add(g);
  }

  /** Directory count change without an inode allocation (a file replaced by a directory in place). */
  adjustDirs(g: number, delta: number): void {
    this.group(g).usedDirs += delta;
  }

  /** Free blocks (bitmap-free and not avoided) in the whole filesystem: reads every group's bitmap. */
  async countFreeBlocks(): Promise<number> {
    let n = 0;
    const avoid = this.constraints.avoidBlocks;
    for (let g = 0; g < this.sb.groupCount; g++) {
      if (avoid === undefined) {
        n += this.group(g).freeBlocks;
        continue;
      }
      const bm = await this.blockBitmap(g);
      if (bm === null) continue;
      for (const [, c] of freeRuns(bm, groupBlockCount(this.sb, g), 0, groupFirstBlock(this.sb, g), avoid)) n += c;
    }
    return n;
  }

  /** Free inodes (bitmap-free, not avoided, at or past s_first_ino) in the whole filesystem: reads every group's bitmap under constraints. */
  async countFreeInodes(): Promise<number> {
    const sb = this.sb;
    const avoid = this.constraints.avoidInodes;
    let n = 0;
    for (let g = 0; g < sb.groupCount; g++) {
      if (avoid === undefined) {
        n += this.group(g).freeInodes;
        continue;
      }
      const bm = await this.inodeBitmap(g);
      if (bm === null) continue;
      const base = g * sb.s_inodes_per_group + 1;
      for (const [, c] of freeRuns(bm, sb.s_inodes_per_group, Math.max(0, sb.s_first_ino - base), base, avoid)) n += c;
    }
    return n;
  }

  /** Whether the constraints keep blocks from being allocated (then blocks freed may not be usable again). */
  get blocksConstrained(): boolean {
    return this.constraints.avoidBlocks !== undefined;
  }

  /** Whether the constraints keep inode `ino` from being allocated. */
  inodeAvoided(ino: number): boolean {
    return this.constraints.avoidInodes?.has(ino) === true;
  }

  /**
   * The free counts of the whole filesystem after the changes so far: the sums of the
   * descriptors' counts as read, plus the changes (superblockFreeCounts says what the
   * superblock gets).
   */
  get freeCounts(): { blocks: number; inodes: number } {
    if (this.descriptorSums === undefined) {
      // The descriptors as read (every change since is in the deltas).
      let blocks = 0;
      let inodes = 0;
      for (let g = 0; g < this.sb.groupCount; g++) {
        const d = this.o.descriptor(g);
        blocks += d.bg_free_blocks_count;
        inodes += d.bg_free_inodes_count;
      }
      this.descriptorSums = { blocks, inodes };
    }
    return { blocks: this.descriptorSums.blocks + this.freeBlocksDelta, inodes: this.descriptorSums.inodes + this.freeInodesDelta };
  }

  private descriptorSums: { blocks: number; inodes: number } | undefined;

  /**
   * The superblock's free counts to write: its own plus the changes, where it agreed with the
   * descriptors; where it did not (a stale or damaged summary, or damaged descriptors), the
   * bitmaps are counted, as e2fsck counts them, so that neither is carried into the output.
   */
  private async superblockFreeCounts(): Promise<{ blocks: number; inodes: number }> {
    const now = this.freeCounts;
    const sums = this.descriptorSums!;
    const sb = this.sb;
    /** Free bits of every group's bitmap (the one held, else the one on disk; the group's count where there is none). */
    const counted = async (kind: 'blocks' | 'inodes'): Promise<number> => {
      let n = 0;
      for (let g = 0; g < sb.groupCount; g++) {
        const bm = kind === 'blocks' ? (this.blockBitmaps.get(g) ?? (await this.o.loadBlockBitmap(g))) : (this.inodeBitmaps.get(g) ?? (await this.o.loadInodeBitmap(g)));
        if (bm !== null) n += countClear(bm, kind === 'blocks' ? groupBlockCount(sb, g) : sb.s_inodes_per_group);
        else n += kind === 'blocks' ? (this.groups.get(g)?.freeBlocks ?? this.o.descriptor(g).bg_free_blocks_count) : (this.groups.get(g)?.freeInodes ?? this.o.descriptor(g).bg_free_inodes_count);
      }
      return n;
    };
    return {
      blocks: sb.s_free_blocks_count === sums.blocks ? now.blocks : await counted('blocks'),
      inodes: sb.s_free_inodes_count === sums.inodes ? now.inodes : await counted('inodes'),
    };
  }

  /** Whether anything changed. */
  get dirty(): boolean {
    return this.dirtyBlockBitmaps.size + this.dirtyInodeBitmaps.size > 0 || [...this.groups.entries()].some(([g, m]) => groupChanged(this.o.descriptor(g), m));
  }

  /**
   * Writes the dirty bitmaps, the changed descriptors and the superblock's free counts,
   * with their checksums. Returns the filesystem byte ranges written.
   */
  async flush(): Promise<void> {
    const { sb, device } = this.o;
    const csum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
    const bitmapCsums = new Map<number, { block?: number; inode?: number }>();
    for (const g of this.dirtyBlockBitmaps) {
      const bm = this.blockBitmaps.get(g)!;
      // Bits past the group's last block (the last group) up to the block's end are set, as e2fsck requires.
      setBits(bm, groupBlockCount(sb, g), sb.blockSize * 8 - groupBlockCount(sb, g));
      await device.write(this.o.descriptor(g).bg_block_bitmap * sb.blockSize, bm);
      if (csum) bitmapCsums.set(g, { ...bitmapCsums.get(g), block: blockBitmapChecksum(sb, bm) });
    }
    for (const g of this.dirtyInodeBitmaps) {
      const bm = this.inodeBitmaps.get(g)!;
      setBits(bm, sb.s_inodes_per_group, sb.blockSize * 8 - sb.s_inodes_per_group);
      await device.write(this.o.descriptor(g).bg_inode_bitmap * sb.blockSize, bm);
      if (csum) bitmapCsums.set(g, { ...bitmapCsums.get(g), inode: inodeBitmapChecksum(sb, bm) });
    }
    // Descriptors, a descriptor block at a time.
    const per = descriptorsPerBlock(sb);
    const byBlock = new Map<number, number[]>();
    for (const g of new Set([...this.groups.keys(), ...bitmapCsums.keys()])) {
      const i = Math.floor(g / per);
      byBlock.set(i, [...(byBlock.get(i) ?? []), g]);
    }
    for (const [i, gs] of byBlock) {
      const blk = descriptorBlockLocation(sb, i);
      const bytes = await device.read(blk * sb.blockSize, sb.blockSize);
      let changed = false;
      for (const g of gs) {
        const d = this.o.descriptor(g);
        const m = this.group(g);
        const c = bitmapCsums.get(g);
        const next: GroupDescriptor = {
          ...d,
          bg_free_blocks_count: m.freeBlocks,
          bg_free_inodes_count: m.freeInodes,
          bg_used_dirs_count: m.usedDirs,
          bg_flags: m.flags,
          bg_itable_unused: m.itableUnused,
          bg_block_bitmap_csum: c?.block ?? d.bg_block_bitmap_csum,
          bg_inode_bitmap_csum: c?.inode ?? d.bg_inode_bitmap_csum,
        };
        const off = (g % per) * sb.descSize;
        const enc = encodeGroupDescriptor({ ...next, raw: bytes.subarray(off, off + sb.descSize) }, g, sb);
        if (enc.some((b, k) => b !== bytes[off + k])) {
          bytes.set(enc, off);
          changed = true;
        }
      }
      if (changed) await device.write(blk * sb.blockSize, bytes);
    }
    const { blocks, inodes } = await this.superblockFreeCounts();
    await device.write(1024, encodeSuperblock({ ...sb, raw: await device.read(1024, 1024), s_free_blocks_count: blocks, s_free_inodes_count: inodes }));
  }
}

function groupChanged(d: GroupDescriptor, m: MutableGroup): boolean {
  return d.bg_free_blocks_count !== m.freeBlocks || d.bg_free_inodes_count !== m.freeInodes || d.bg_used_dirs_count !== m.usedDirs || d.bg_flags !== m.flags || d.bg_itable_unused !== m.itableUnused;
}

/** Runs sorted by start with adjacent ones joined. */
export function mergeRuns(runs: readonly Run[]): Run[] {
  const sorted = [...runs].sort((a, b) => a.start - b.start);
  const out: Run[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && last.start + last.count === r.start) out[out.length - 1] = { start: last.start, count: last.count + r.count };
    else out.push(r);
  }
  return out;
}
