/**
 * File-level diff of two ext4 filesystems, A and B, given the blocks that may differ
 * between their devices (changedRanges).
 *
 * Incremental mode (same geometry, or B is A grown in place by resize2fs; cost grows with
 * the change, and blocks and inodes past A's end count as B's own):
 * 1. Changed inode-table blocks are found arithmetically (FsBlocks.recordBlocksIn) and their inode
 *    records compared between A and B: the changed inodes.
 * 2. Every other changed block must be explained by the blocks (in A or B) of a changed
 *    inode, by group metadata, or by the journal. The rest are checked: blocks free on both
 *    sides or byte-identical are dropped; a directory's first block names its directory
 *    ('.'); what remains is attributed by an ownership scan (FsBlocks.owners, which
 *    reads every inode but keeps the owners of those blocks only), and reported in
 *    `unattributedBlocks` when no inode owns it. B reads the blocks outside the changed
 *    ones from A's device (Ext4Fs.borrowBlocks): the same bytes, without an overlay's
 *    per-read lookups.
 * 3. Changed directories are diffed by entry; changed inodes are located by climbing '..'
 *    (directories) or by one tree walk that stops once all are found (files, every link),
 *    which reads entries without an object per entry; step 4 resolves the paths it found
 *    through the directories it walked (listing them only where in doubt).
 * 4. Each affected path is compared between A and B (compareInodes): added, removed
 *    (whole subtrees for directories), or modified with its change kinds.
 * Full mode (other geometry, or unrelated images): both trees are walked and every
 * path compared; content is still only hashed where blocks may differ.
 * In both modes an entry naming a directory that is not its own entry (the one in the
 * directory its '..' names: a directory hard link or loop) is listed, not descended into,
 * and reported in `dirLinks`.
 *
 * Names are bytes (fs/ext4/names.ts). Inside the differ a path is its byteKey, a string
 * with one char per byte, so maps, sets, sorting and '/'-splitting stay lossless; results
 * carry the bytes.
 */
import type { ByteRange } from '../diskimage/BlockDevice.js';
import type { Ext4Fs, Inode } from '../fs/ext4/Ext4Fs.js';
import { EXT4_ROOT_INO, S_IFDIR } from '../fs/ext4/constants.js';
import { fileType } from '../fs/ext4/inode.js';
import { byteKey, keyBytes } from '../fs/ext4/names.js';
import { BlockRuns, type BlockRun } from '../fs/BlockRuns.js';
import type { BlockHolders, FsBlocks } from '../fs/FsBlocks.js';
import { DifferingBytes } from './differingBytes.js';
import { compareInodes, type ChangeKind } from './fileChanges.js';
import { mapAhead } from './mapAhead.js';

export type { ChangeKind } from './fileChanges.js';

export type FileKind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket' | 'unknown';

/** An added or removed path. `changedBlocks`: the blocks it uses (in B if added, in A if removed). */
export interface PathEntry {
  /** Absolute path within the filesystem, as bytes. */
  readonly path: Uint8Array;
  readonly ino: number;
  readonly type: FileKind;
  readonly changedBlocks: Array<[number, number]>;
}

/** A path present on both sides whose file differs. `ino` is B's; `inoA` is set when A's differs. */
export interface ModifiedEntry extends PathEntry {
  readonly changes: ChangeKind[];
  readonly inoA?: number;
}

export interface Ext4DiffStats {
  /** 'incremental' (from the changed blocks) or 'full' (both trees walked). */
  readonly mode: 'incremental' | 'full';
  /** Bytes of the filesystem blocks that may differ (whole blocks; the sector-exact count is the disk diff's). */
  readonly changedBlockBytes: number;
  readonly inodesCompared: number;
  readonly dirsRead: number;
  /** Whether unexplained changed blocks forced a full ownership scan. */
  readonly ownershipScan: boolean;
  readonly seconds: number;
}

/**
 * An entry naming a directory that is reachable at another path: a directory hard link or
 * a loop, which e2fsck reports as corruption ("is a link to directory"). The entry is
 * listed (added, removed, modified) but not descended into.
 */
export interface DirLink {
  /** The side whose tree holds it. */
  readonly side: 'a' | 'b';
  /** The entry's path. */
  readonly path: Uint8Array;
  readonly ino: number;
  /**
   * The directory's own path: where a full walk listed it first, or (incremental) where
   * its '..' entries lead; null when they lead nowhere.
   */
  readonly dirPath: Uint8Array | null;
}

export interface Ext4Diff {
  readonly added: PathEntry[];
  readonly removed: PathEntry[];
  readonly modified: ModifiedEntry[];
  /** Changed blocks in use on either side that no inode owns (a leak on a corrupt filesystem). */
  readonly unattributedBlocks: Array<[number, number]>;
  /** Directory hard links and loops met among the entries compared, by path. */
  readonly dirLinks: DirLink[];
  readonly stats: Ext4DiffStats;
}

export interface DiffExt4Options {
  /** Force full mode even when the geometry allows incremental. */
  readonly full?: boolean;
  /**
   * Filesystem byte ranges known to differ (exact, ascending, disjoint: changedRanges'
   * result), so that content found there is not read again to be compared.
   */
  readonly differingBytes?: readonly ByteRange[];
}

interface Side {
  readonly fs: Ext4Fs;
  /** Block questions, through the filesystem-neutral surface. */
  readonly blocks: FsBlocks;
  /** dir ino -> name (byteKey) -> [ino, dirent file_type]. Only directories that were needed. */
  readonly listings: Map<number, Map<string, readonly [number, number]>>;
  /** dir ino -> path (byteKey), from climbing. */
  readonly dirPaths: Map<number, string | null>;
  /** Inodes read by the incremental steps (each is asked about again and again: liveness, sameness, lookups). */
  readonly inodes: Map<number, Inode>;
  /** live()'s answers. */
  readonly live: Map<number, Inode | undefined>;
  /** ino -> the file_type its directory entries give (where recorded), checked against its mode when settled. */
  readonly entryTypes: Map<number, number>;
  ownership?: BlockHolders;
}

const STAT_TYPES: Readonly<Record<number, FileKind>> = {
  0o100000: 'file',
  0o040000: 'dir',
  0o120000: 'symlink',
  0o020000: 'chardev',
  0o060000: 'blockdev',
  0o010000: 'fifo',
  0o140000: 'socket',
};

/** Reads one directory's entries: name (byteKey) -> [ino, dirent file_type]. */
async function readListing(fs: Ext4Fs, dirIno: number): Promise<Map<string, readonly [number, number]>> {
  const m = new Map<string, readonly [number, number]>();
  for (const e of await fs.listDirectory(dirIno)) m.set(byteKey(e.name), [e.ino, e.fileType]);
  return m;
}

/** Unexplained changed blocks above which they are attributed by the ownership scan without reading each (two reads per block cost more than the scan's few large ones). */
const EXPLAIN_READ_LIMIT = 256;
/** Directory listings and inode comparisons started ahead of the sequential steps that use them. */
const PREFETCH_AHEAD = 16;

const kindOf = (inode: Inode): FileKind => STAT_TYPES[fileType(inode.i_mode)] ?? 'unknown';
const isDir = (inode: Inode): boolean => fileType(inode.i_mode) === S_IFDIR;
/** '.' as a byte. */
const DOT = 0x2e;
/** A path the walk found (a byteKey), and the directories it goes through, root first. */
interface Found {
  readonly path: string;
  readonly dirs: readonly number[];
}
const join = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);
/** Most '..' steps when climbing (deeper means a loop on a corrupt filesystem). */
const MAX_DEPTH = 4096;

class Ext4Differ {
  private readonly a: Side;
  private readonly b: Side;
  private inodesCompared = 0;
  private dirsRead = 0;
  private ownershipScan = false;
  // Keyed by path byteKey.
  private readonly added = new Map<string, PathEntry>();
  private readonly removed = new Map<string, PathEntry>();
  private readonly modified = new Map<string, ModifiedEntry>();
  private readonly settled = new Set<string>();
  private unattributed = new BlockRuns();
  /** `${side}:${path byteKey}` -> a directory link found there (not descended into). */
  private readonly links = new Map<string, DirLink>();
  /** Directory inode -> whether it lists the same entries in A and B (sameDirectory). */
  private readonly sameDirs = new Map<number, boolean>();
  /** `${inoA}:${inoB}` -> compareInodes of those inodes, started ahead of settle (which awaits it, and so meets its error). */
  private readonly compared = new Map<string, Promise<ChangeKind[]>>();

  constructor(
    fsA: Ext4Fs,
    fsB: Ext4Fs,
    private readonly changed: BlockRuns,
    private readonly differing: DifferingBytes | undefined,
  ) {
    this.a = { fs: fsA, blocks: fsA.blocks, listings: new Map(), dirPaths: new Map(), inodes: new Map(), live: new Map(), entryTypes: new Map() };
    this.b = { fs: fsB, blocks: fsB.blocks, listings: new Map(), dirPaths: new Map(), inodes: new Map(), live: new Map(), entryTypes: new Map() };
  }

  /** Incremental mode needs B to be A, or A grown in place (the changed blocks then cover B's new blocks). */
  get canIncremental(): boolean {
    return this.b.blocks.grownFrom(this.a.blocks);
  }

  /** Whether block `blockNo` exists in A (B may have grown past A's end). */
  private inA(blockNo: number): boolean {
    return blockNo < this.a.blocks.blockCount;
  }

  /** Inodes a file diff never reports: reserved ones below s_first_ino, except the root. */
  private internal(ino: number): boolean {
    return ino !== EXT4_ROOT_INO && ino < this.b.fs.superblock.s_first_ino;
  }

  /** The inode if it is live on this side (bitmap says in use, and it has a mode and links). */
  private async live(side: Side, ino: number): Promise<Inode | undefined> {
    if (side.live.has(ino)) return side.live.get(ino);
    const inode = (await side.blocks.fileInUse(ino)) ? await this.inode(side, ino) : undefined;
    const result = inode !== undefined && inode.i_mode !== 0 && inode.i_links_count > 0 ? inode : undefined;
    side.live.set(ino, result);
    return result;
  }

  /** Inode `ino` of this side, read once. Throws as readInode. */
  private async inode(side: Side, ino: number): Promise<Inode> {
    let inode = side.inodes.get(ino);
    if (inode === undefined) {
      inode = await side.fs.readInode(ino);
      side.inodes.set(ino, inode);
    }
    return inode;
  }

  private async listing(side: Side, dirIno: number): Promise<Map<string, readonly [number, number]>> {
    let m = side.listings.get(dirIno);
    if (m === undefined) {
      // The other side's listing, when the directory is the same on both.
      const theirs = (side === this.a ? this.b : this.a).listings.get(dirIno);
      if (theirs !== undefined && (await this.sameDirectory(dirIno))) m = theirs;
      else {
        this.dirsRead++;
        m = await readListing(side.fs, dirIno);
      }
      side.listings.set(dirIno, m);
      for (const [name, [ino, ft]] of m) if (ft !== 0 && name !== '.' && name !== '..') side.entryTypes.set(ino, ft);
    }
    return m;
  }

  /**
   * Whether directory `ino` lists the same entries in A and B, known without reading them:
   * its inode records are byte-identical (so its mapping, inline entries and checksum seed
   * are), and none of the blocks it maps (directory blocks, extent tree or indirect blocks)
   * is among the blocks that may differ. False when either record cannot be read.
   */
  private async sameDirectory(ino: number): Promise<boolean> {
    let same = this.sameDirs.get(ino);
    if (same === undefined) {
      same = false;
      try {
        const [iA, iB] = await Promise.all([this.inode(this.a, ino), this.inode(this.b, ino)]);
        if (isDir(iA) && Buffer.compare(iA.raw, iB.raw) === 0) {
          same = true;
          for (const [s, c] of (await this.a.blocks.fileBlocks(ino)).runs()) if (this.changed.overlaps(s, c)) same = false;
        }
      } catch {
        // Either side's error is met when that side's listing is read.
      }
      this.sameDirs.set(ino, same);
    }
    return same;
  }

  /** The inode a path names on this side, or undefined. */
  private async lookup(side: Side, path: string): Promise<number | undefined> {
    let ino = EXT4_ROOT_INO;
    for (const part of path.split('/').filter((p) => p !== '')) {
      const inode = await this.live(side, ino);
      if (inode === undefined || !isDir(inode)) return undefined;
      const e = (await this.listing(side, ino)).get(part);
      if (e === undefined) return undefined;
      ino = e[0];
    }
    return (await this.live(side, ino)) !== undefined ? ino : undefined;
  }

  /** A directory's path by climbing '..', or null if it is unreachable that way. */
  private async dirPath(side: Side, dirIno: number, depth = 0): Promise<string | null> {
    if (dirIno === EXT4_ROOT_INO) return '/';
    const cached = side.dirPaths.get(dirIno);
    if (cached !== undefined) return cached;
    let result: string | null = null;
    if (depth < MAX_DEPTH) {
      const parent = (await this.listing(side, dirIno)).get('..')?.[0];
      if (parent !== undefined && parent !== dirIno && (await this.live(side, parent)) !== undefined) {
        let name: string | undefined;
        for (const [n, [ino]] of await this.listing(side, parent)) if (ino === dirIno && n !== '.' && n !== '..') name = n;
        const pp = name !== undefined ? await this.dirPath(side, parent, depth + 1) : null;
        result = pp !== null && name !== undefined ? join(pp, name) : null;
      }
    }
    side.dirPaths.set(dirIno, result);
    return result;
  }

  /**
   * Paths of the wanted inodes, by one walk that stops as soon as each has as many paths
   * as links (or at the end of the tree). The walk goes as Ext4Fs.walk goes (depth-first,
   * children in directory order, a directory reached twice not descended again) and reads
   * each directory's entries without making an object or a key per entry: only the
   * wanted ones and subdirectories get names. Each path comes with the directories it
   * passes through (root first), so that step 4 can resolve it without listing them.
   */
  private async walkFor(side: Side, wanted: Map<number, number>): Promise<Map<number, Found[]>> {
    const found = new Map<number, Found[]>();
    let open = wanted.size;
    if (open === 0) return found;
    const seen = new Set<number>([EXT4_ROOT_INO]);
    const stack: Array<{ ino: number; path: string; dirs: readonly number[] }> = [{ ino: EXT4_ROOT_INO, path: '/', dirs: [EXT4_ROOT_INO] }];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      // Entries that may be subdirectories (file_type directory, or unknown: its inode says), in order.
      const maybeDirs: Array<{ ino: number; name: string; known: boolean }> = [];
      let done = false;
      const inode = await this.inode(side, dir.ino);
      this.dirsRead++;
      // Names as byteKeys decoded in place: latin1 is one char per byte.
      await side.fs.forEachEntry(inode, (ino, ft, bytes, at, len) => {
        if (done) return;
        if ((len === 1 && bytes[at] === DOT) || (len === 2 && bytes[at] === DOT && bytes[at + 1] === DOT)) return;
        const need = wanted.get(ino);
        if (need !== undefined) {
          const list = found.get(ino) ?? [];
          list.push({ path: join(dir.path, bytes.toString('latin1', at, at + len)), dirs: dir.dirs });
          found.set(ino, list);
          if (list.length === need) open--;
          if (open === 0) {
            done = true;
            return;
          }
        }
        if (ft === 2 || ft === 0) maybeDirs.push({ ino, name: bytes.toString('latin1', at, at + len), known: ft === 2 });
      });
      const subdirs: Array<{ ino: number; path: string; dirs: readonly number[] }> = [];
      for (const c of maybeDirs) {
        const isDirEntry = c.known || isDir(await side.fs.readInode(c.ino));
        if (isDirEntry && !seen.has(c.ino)) {
          seen.add(c.ino);
          subdirs.push({ ino: c.ino, path: join(dir.path, c.name), dirs: [...dir.dirs, c.ino] });
        }
      }
      if (done) return found;
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
    return found;
  }

  /**
   * The inode `path` names on `side`, knowing that the walk of `from` found it there as
   * `ino` through directories `dirs` (root first): what lookup() would answer, without
   * listing those directories where that is known. On `from` the walk read the entries
   * lookup() reads; on the other side they are the same where every directory on the way
   * is the same on both (sameDirectory). Liveness is checked as lookup() checks it; any
   * doubt is settled by lookup() itself.
   */
  private async resolve(side: Side, path: string, from: Side, ino: number, dirs: readonly number[]): Promise<number | undefined> {
    for (const d of dirs) {
      const inode = await this.live(side, d);
      if (inode === undefined || !isDir(inode) || (side !== from && !(await this.sameDirectory(d)))) return this.lookup(side, path);
    }
    return (await this.live(side, ino)) !== undefined ? ino : this.lookup(side, path);
  }

  private async blocksOf(side: Side, inode: Inode, onlyChanged: boolean): Promise<Array<[number, number]>> {
    const all = await side.blocks.fileBlocks(inode.ino);
    if (!onlyChanged) return all.toArray();
    const out: Array<[number, number]> = [];
    for (const [s, c] of all.runs()) for (const [x, n] of this.changed.intersect(s, c)) out.push([x, n]);
    return out;
  }

  private async addSubtree(side: Side, dirIno: number, path: string, into: Map<string, PathEntry>): Promise<void> {
    this.dirsRead++;
    // Paths + '/' of directory links met: the walk still goes below one it had not met, but what it finds there is not this subtree's.
    const linked: string[] = [];
    for await (const e of side.fs.walk(dirIno, keyBytes(path === '/' ? '' : path))) {
      if (e.fileType === 2) this.dirsRead++;
      const key = byteKey(e.path);
      if (linked.length > 0 && linked.some((p) => key.startsWith(p))) continue;
      if (this.settled.has(key)) continue;
      this.settled.add(key);
      const inode = await side.fs.readInode(e.ino);
      into.set(key, { path: e.path, ino: e.ino, type: kindOf(inode), changedBlocks: await this.blocksOf(side, inode, false) });
      if (isDir(inode) && (await this.linkedDir(side, key, e.ino, e.parentIno))) linked.push(`${key}/`);
    }
  }

  /** The inode number of directory `ino`'s '..' entry (its first block's second record), or undefined. */
  private async dotdotOf(side: Side, ino: number): Promise<number | undefined> {
    const known = side.listings.get(ino);
    if (known !== undefined) return known.get('..')?.[0];
    for await (const e of side.fs.readdirOf(await side.fs.readInode(ino))) if (e.name.length === 2 && e.name[0] === DOT && e.name[1] === DOT) return e.ino;
    return undefined;
  }

  /**
   * Whether entry `path` of directory `holder`, naming directory `ino`, is a directory
   * link or loop (then recorded): the root, its own holder, or a directory whose '..'
   * names another. A directory has one entry, the one in the directory its '..' names
   * (e2fsck pass 2/3), so this finds every second link without walking the tree.
   */
  private async linkedDir(side: Side, path: string, ino: number, holder: number): Promise<boolean> {
    if (path === '/') return false;
    if (ino !== EXT4_ROOT_INO && ino !== holder && (await this.dotdotOf(side, ino)) === holder) return false;
    const at = ino === EXT4_ROOT_INO ? '/' : await this.dirPath(side, ino);
    this.noteLink(side, path, ino, at);
    return true;
  }

  private noteLink(side: Side, path: string, ino: number, dirPath: string | null): void {
    const s = side === this.a ? 'a' : 'b';
    this.links.set(`${s}:${path}`, { side: s, path: keyBytes(path), ino, dirPath: dirPath === null ? null : keyBytes(dirPath) });
  }

  /** Whether `path` lies below a directory link found on either side (its entries were not descended into). */
  private belowLink(path: string): boolean {
    if (this.links.size === 0) return false;
    for (const l of this.links.values()) {
      const p = byteKey(l.path);
      if (path.length > p.length && path.startsWith(p) && path[p.length] === '/') return true;
    }
    return false;
  }

  /** Whether `path`'s entry on `side`, naming directory `ino`, is a link (see linkedDir); its holder found by lookup. */
  private async linkedEntry(side: Side, path: string, ino: number): Promise<boolean> {
    if (path === '/') return false;
    const cut = path.lastIndexOf('/');
    const holder = await this.lookup(side, cut === 0 ? '/' : path.slice(0, cut));
    return holder !== undefined && (await this.linkedDir(side, path, ino, holder));
  }

  /**
   * Compares one path between A and B and records the outcome. With `descend`, an added or
   * removed directory brings its whole subtree, and two different directories at one path
   * are compared child by child.
   */
  private async settle(path: string, inoA: number | undefined, inoB: number | undefined, descend: boolean): Promise<void> {
    if (this.settled.has(path)) return;
    this.settled.add(path);
    if (descend && this.belowLink(path)) return;
    // Those the incremental steps read are taken as read; others are not kept (full mode settles every path).
    const iA = inoA !== undefined ? (this.a.inodes.get(inoA) ?? (await this.a.fs.readInode(inoA))) : undefined;
    const iB = inoB !== undefined ? (this.b.inodes.get(inoB) ?? (await this.b.fs.readInode(inoB))) : undefined;
    // A type that the path's entry and its inode disagree on is damage, not a change.
    for (const [side, inode] of [[this.a, iA], [this.b, iB]] as const) {
      if (inode !== undefined) side.fs.requireDirentType(inode.ino, side.entryTypes.get(inode.ino) ?? 0, inode.i_mode, inode.deviceOffset, `the directory holding ${path}`);
    }
    if (iA === undefined && iB === undefined) return;
    // An entry that changed and names a directory: is it that directory's one entry? (Full
    // mode found links while walking.) A link is listed, and not descended into.
    const sameEntry = iA !== undefined && iB !== undefined && inoA === inoB && iA.i_generation === iB.i_generation;
    const linkA = descend && !sameEntry && iA !== undefined && isDir(iA) && (await this.linkedEntry(this.a, path, inoA!));
    const linkB = descend && !sameEntry && iB !== undefined && isDir(iB) && (await this.linkedEntry(this.b, path, inoB!));
    if (iA === undefined) {
      this.added.set(path, { path: keyBytes(path), ino: inoB!, type: kindOf(iB!), changedBlocks: await this.blocksOf(this.b, iB!, false) });
      if (descend && isDir(iB!) && !linkB) await this.addSubtree(this.b, inoB!, path, this.added);
      return;
    }
    if (iB === undefined) {
      this.removed.set(path, { path: keyBytes(path), ino: inoA!, type: kindOf(iA), changedBlocks: await this.blocksOf(this.a, iA, false) });
      if (descend && isDir(iA) && !linkA) await this.addSubtree(this.a, inoA!, path, this.removed);
      return;
    }
    this.inodesCompared++;
    const early = this.compared.get(`${inoA}:${inoB}`);
    const changes = await (early ?? compareInodes(this.a.fs, iA, this.b.fs, iB, this.changed, this.differing));
    if (changes.length > 0) {
      this.modified.set(path, {
        path: keyBytes(path),
        ino: inoB!,
        type: kindOf(iB),
        changes,
        changedBlocks: await this.blocksOf(this.b, iB, true),
        ...(inoA !== inoB ? { inoA: inoA! } : {}),
      });
    }
    if (!descend) return;
    if (isDir(iA) && isDir(iB) && !sameEntry) {
      if (linkA || linkB) return;
      // Two different directories at one path: compare their children by name.
      const la = await this.listing(this.a, inoA!);
      const lb = await this.listing(this.b, inoB!);
      for (const name of new Set([...la.keys(), ...lb.keys()])) {
        if (name === '.' || name === '..') continue;
        await this.settle(join(path, name), la.get(name)?.[0], lb.get(name)?.[0], true);
      }
    } else if (isDir(iA) && !isDir(iB)) {
      if (!linkA) await this.addSubtree(this.a, inoA!, path, this.removed);
    } else if (isDir(iB) && !isDir(iA) && !linkB) await this.addSubtree(this.b, inoB!, path, this.added);
  }

  /** Full mode: walk both trees and compare every path. */
  async runFull(): Promise<void> {
    const pa = await this.walkTree(this.a);
    const pb = await this.walkTree(this.b);
    for (const path of new Set([...pa.keys(), ...pb.keys()])) await this.settle(path, pa.get(path), pb.get(path), false);
  }

  /**
   * Every path of this side's tree (byteKey -> inode), for full mode. A directory is
   * descended into from the entry in the directory its '..' names (e2fsck's rule: one
   * entry per directory), whichever is met first; other entries naming it (directory hard
   * links, loops) are listed and noted (noteLink), not descended into. A directory whose
   * '..' names none of its holders is descended into from the first entry met.
   */
  private async walkTree(side: Side): Promise<Map<string, number>> {
    const m = new Map<string, number>([['/', EXT4_ROOT_INO]]);
    // Directory -> the path it was descended into at.
    const at = new Map<number, string>([[EXT4_ROOT_INO, '/']]);
    // Entries naming a directory whose '..' is not their holder, in the order met.
    const doubtful: Array<{ ino: number; path: string }> = [];
    const stack: Array<{ ino: number; path: string; holder: number }> = [{ ino: EXT4_ROOT_INO, path: '/', holder: EXT4_ROOT_INO }];
    const descend = async (dir: { ino: number; path: string; holder: number }, trusted: boolean): Promise<void> => {
      if (dir.path !== '/' && (dir.ino === EXT4_ROOT_INO || dir.ino === dir.holder || at.has(dir.ino))) {
        // The root, and a directory's own holder, are descended into already.
        this.noteLink(side, dir.path, dir.ino, at.get(dir.ino) ?? null);
        return;
      }
      const inode = await side.fs.readInode(dir.ino);
      this.dirsRead++;
      let dotdot: number | undefined;
      const children: Array<{ ino: number; ft: number; name: string }> = [];
      // Names as byteKeys decoded in place: latin1 is one char per byte.
      await side.fs.forEachEntry(inode, (ino, ft, bytes, nameAt, len) => {
        if (bytes[nameAt] === DOT && len <= 2 && (len === 1 || bytes[nameAt + 1] === DOT)) {
          if (len === 2) dotdot = ino;
          return;
        }
        children.push({ ino, ft, name: bytes.toString('latin1', nameAt, nameAt + len) });
      });
      if (!trusted && dir.path !== '/' && dotdot !== dir.holder) {
        doubtful.push({ ino: dir.ino, path: dir.path });
        return;
      }
      at.set(dir.ino, dir.path);
      const subdirs: Array<{ ino: number; path: string; holder: number }> = [];
      for (const c of children) {
        const path = join(dir.path, c.name);
        m.set(path, c.ino);
        if (c.ft !== 0) side.entryTypes.set(c.ino, c.ft);
        if (c.ft === 2 || (c.ft === 0 && isDir(await side.fs.readInode(c.ino)))) subdirs.push({ ino: c.ino, path, holder: dir.ino });
      }
      // Their listings are read while this one is worked on, instead of one after another.
      side.fs.prefetchDirectories(subdirs.filter((d) => !at.has(d.ino)).map((d) => d.ino));
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    };
    const drain = async (): Promise<void> => {
      while (stack.length > 0) await descend(stack.pop()!, false);
    };
    await drain();
    // A directory only doubtful entries name (its '..' is wrong, or it has no right entry): the first one met is its path.
    for (let i = 0; i < doubtful.length; i++) {
      const d = doubtful[i]!;
      if (at.has(d.ino)) this.noteLink(side, d.path, d.ino, at.get(d.ino)!);
      else {
        await descend({ ...d, holder: -1 }, true);
        await drain();
      }
    }
    return m;
  }

  /** Incremental mode (see the module comment). */
  async runIncremental(): Promise<void> {
    // B's inode-table blocks outside the changed blocks are A's: B takes those A has read.
    this.b.fs.borrowInodeTables(this.a.fs, (s, c) => !this.changed.overlaps(s, c));
    // And its other blocks outside the changed ones from A's device (B is usually an overlay).
    this.b.fs.borrowBlocks(this.a.fs, (s, c) => !this.changed.overlaps(s, c));
    const changed = new BlockRuns(this.changed.intersect(0, this.b.blocks.blockCount));
    const candidates = new Set<number>();
    // 1. Inode records that differ in changed inode-table blocks.
    const ipb = this.b.blocks.recordsPerBlock;
    const isz = this.b.blocks.recordSize;
    const bs = this.b.blocks.blockSize;
    for (const [s, c] of changed.runs()) {
      for (const t of this.b.blocks.recordBlocksIn(s, c)) {
        // Inodes B added (resize2fs: a new group's table) have no record in A: they are B's own.
        const inAGroups = t.firstIno <= this.a.blocks.fileCount && this.inA(t.block);
        const [ba, bb] = await Promise.all([inAGroups ? this.a.fs.readBlocks(t.block, 1) : new Uint8Array(bs), this.b.fs.readBlocks(t.block, 1)]);
        for (let k = 0; k < ipb; k++) {
          const ino = t.firstIno + k;
          if (ino > this.b.blocks.fileCount || this.internal(ino)) continue;
          if (Buffer.compare(ba.subarray(k * isz, (k + 1) * isz), bb.subarray(k * isz, (k + 1) * isz)) !== 0) candidates.add(ino);
        }
      }
    }
    // 2. Explain the other changed blocks.
    const explainedRuns: BlockRun[] = [];
    for (const [s, c] of this.b.blocks.metaBlocks.runs()) explainedRuns.push([s, c]);
    for (const side of [this.a, this.b]) {
      for (const r of (await side.blocks.journalBlocks()).runs()) explainedRuns.push(r);
      for (const ino of candidates) {
        const inode = await this.live(side, ino);
        if (inode !== undefined) for (const r of (await side.blocks.fileBlocks(ino)).runs()) explainedRuns.push(r);
      }
    }
    const unexplained = changed.minus(new BlockRuns(explainedRuns));
    const pending: number[] = [];
    // Many unexplained blocks (files edited in place keep their inode records): the
    // ownership scan, a few large reads, costs less than reading each block on both sides,
    // so they go to it unread; only blocks it leaves unowned are then read and compared.
    const byOwnership = unexplained.blockCount > EXPLAIN_READ_LIMIT;
    // Pieces of up to 256 blocks; which of their blocks are in use on either side, and, if
    // any, their bytes on both sides: read PREFETCH_AHEAD pieces ahead of their examination.
    const pieces: Array<[number, number]> = [];
    for (const [s, c] of unexplained.runs()) for (let off = 0; off < c; off += 256) pieces.push([s + off, Math.min(256, c - off)]);
    const readPiece = async ([start, n]: [number, number]): Promise<{ start: number; used: boolean[]; da?: Uint8Array; db?: Uint8Array }> => {
      const used: boolean[] = [];
      for (let k = 0; k < n; k++) {
        const blk = start + k;
        // Past A's end (B grew) a block exists in B only: free in A, and never equal.
        used.push((this.inA(blk) && (await this.a.blocks.blockInUse(blk))) || (await this.b.blocks.blockInUse(blk)));
      }
      if (byOwnership || !used.includes(true)) return { start, used };
      const nA = Math.max(0, Math.min(n, this.a.blocks.blockCount - start));
      const [da, db] = await Promise.all([nA > 0 ? this.a.fs.readBlocks(start, nA) : new Uint8Array(0), this.b.fs.readBlocks(start, n)]);
      return { start, used, da, db };
    };
    for await (const { start, used, da, db } of mapAhead(pieces, readPiece, { ahead: PREFETCH_AHEAD })) {
      for (let k = 0; k < used.length; k++) {
        const blk = start + k;
        const inA = this.inA(blk);
        if (!used[k]) continue;
        if (da === undefined || db === undefined) {
          pending.push(blk);
          continue;
        }
        const blockA = inA ? da.subarray(k * bs, (k + 1) * bs) : undefined;
        const blockB = db.subarray(k * bs, (k + 1) * bs);
        if (blockA !== undefined && Buffer.compare(blockA, blockB) === 0) continue;
        const dir = (await this.firstDirBlockOwner(this.b, blk, blockB)) ?? (blockA !== undefined ? await this.firstDirBlockOwner(this.a, blk, blockA) : undefined);
        if (dir !== undefined) candidates.add(dir);
        else pending.push(blk);
      }
    }
    if (pending.length > 0) {
      // Blocks nothing cheap explains: attribute them by a full ownership scan of A, and of
      // B unless A's says enough. When every such block belongs in A to an inode (which
      // becomes a candidate), B's owners add nothing: an owner in B whose inode record
      // changed is a candidate already (its blocks were explained), and one whose record
      // did not reaches the block through the same tree as in A, or through a tree block
      // that changed, sits where it sat in A, and so is a pending block owned by it in A.
      this.ownershipScan = true;
      // Owners of the pending blocks only: the scan reads every inode, but keeps no table of the rest.
      const scope = new BlockRuns(pending.map((blk) => [blk, 1] as const));
      const ownA = await this.a.blocks.owners(scope);
      this.a.ownership = ownA;
      const inodeOwnedInA = (blk: number): boolean => {
        const o = ownA.ownerOf(blk);
        return o !== undefined && o !== 'free' && o.ino !== undefined && o.kind !== 'journal' && !this.internal(o.ino);
      };
      if (!pending.every(inodeOwnedInA)) this.b.ownership = await this.b.blocks.owners(scope);
      const owners = this.b.ownership !== undefined ? [ownA, this.b.ownership] : [ownA];
      const left: BlockRun[] = [];
      for (const blk of pending) {
        let owned = false;
        for (const own of owners) {
          const o = own.ownerOf(blk);
          if (o === undefined || o === 'free') continue;
          owned = true;
          if (o.ino !== undefined && o.kind !== 'journal' && !this.internal(o.ino)) candidates.add(o.ino);
        }
        if (!owned && !(byOwnership && (await this.sameBytes(blk)))) left.push([blk, 1]);
      }
      this.unattributed = new BlockRuns(left);
    }
    // 3. Where the changed inodes are, and what changed in changed directories.
    const affected = new Set<string>();
    const seenA = new Set<number>();
    const seenB = new Set<number>();
    const walkA = new Map<number, number>();
    const walkB = new Map<number, number>();
    const states: Array<{ ino: number; iA: Inode | undefined; iB: Inode | undefined; same: boolean }> = [];
    for (const ino of [...candidates].sort((x, y) => x - y)) {
      const iA = await this.live(this.a, ino);
      const iB = await this.live(this.b, ino);
      if (iA === undefined && iB === undefined) continue;
      const same = iA !== undefined && iB !== undefined && iA.i_generation === iB.i_generation && fileType(iA.i_mode) === fileType(iB.i_mode);
      states.push({ ino, iA, iB, same });
    }
    // Directories first: their entries name the files that appeared or went away.
    for (const { ino, iA, iB, same } of states) {
      const sides = [
        [this.a, iA, seenA, walkA],
        [this.b, iB, seenB, walkB],
      ] as const;
      const paths: Array<string | null> = [null, null];
      const lists: Array<Map<string, readonly [number, number]> | undefined> = [undefined, undefined];
      for (let k = 0; k < 2; k++) {
        const [side, inode, seen, walk] = sides[k]!;
        if (inode === undefined || !isDir(inode)) continue;
        const p = await this.dirPath(side, ino);
        paths[k] = p;
        if (p !== null) affected.add(p);
        else walk.set(ino, 1);
        const l = await this.listing(side, ino);
        lists[k] = l;
        // A directory that appeared, went away or was replaced is settled with its whole subtree.
        if (!same) for (const [name, [child]] of l) if (name !== '.' && name !== '..') seen.add(child);
      }
      if (!same || !isDir(iB!)) continue;
      const [la, lb] = [lists[0]!, lists[1]!];
      const pa = paths[0] ?? null;
      const pb = paths[1] ?? null;
      for (const name of new Set([...la.keys(), ...lb.keys()])) {
        if (name === '.' || name === '..') continue;
        const ea = la.get(name);
        const eb = lb.get(name);
        if (ea?.[0] === eb?.[0] && ea?.[1] === eb?.[1]) continue;
        if (ea !== undefined && pa !== null) {
          affected.add(join(pa, name));
          seenA.add(ea[0]);
        }
        if (eb !== undefined && pb !== null) {
          affected.add(join(pb, name));
          seenB.add(eb[0]);
        }
      }
    }
    for (const { ino, iA, iB, same } of states) {
      for (const [side, inode, seen, walk] of [
        [this.a, iA, seenA, walkA],
        [this.b, iB, seenB, walkB],
      ] as const) {
        if (inode === undefined || isDir(inode)) continue;
        // Files modified in place: every link in B. New or gone files: their directory's
        // diff names them, unless the entry itself did not change (inode number reused).
        if (same ? side === this.b : !seen.has(ino)) walk.set(ino, inode.i_links_count);
      }
    }
    // Files edited in place (the usual change): their comparisons, and the listings that
    // step 4 looks their paths up in, are started ahead, PREFETCH_AHEAD at a time.
    const inPlace = states.filter((st) => st.same && st.iA !== undefined && st.iB !== undefined && !isDir(st.iA) && !isDir(st.iB));
    const compares = mapAhead(
      inPlace,
      async ({ ino, iA, iB }) => {
        const p = compareInodes(this.a.fs, iA!, this.b.fs, iB!, this.changed, this.differing);
        p.catch(() => undefined);
        this.compared.set(`${ino}:${ino}`, p);
        await p.catch(() => undefined);
      },
      { ahead: PREFETCH_AHEAD },
    );
    void (async () => {
      for await (const _ of compares);
    })();
    // Where the walks found each path: resolved in step 4 without listing its directories.
    const foundAt = new Map<string, { side: Side; ino: number; dirs: readonly number[] }>();
    for (const [side, walk] of [
      [this.a, walkA],
      [this.b, walkB],
    ] as const) {
      for (const [ino, paths] of await this.walkFor(side, walk)) {
        for (const f of paths) {
          affected.add(f.path);
          if (!foundAt.has(f.path)) foundAt.set(f.path, { side, ino, dirs: f.dirs });
        }
      }
    }
    // 4. Compare each affected path, parents first.
    for (const path of [...affected].sort()) {
      if (this.settled.has(path) || this.belowLink(path)) continue;
      // A path below an added or removed directory was settled with its subtree.
      const at = foundAt.get(path);
      const [inoA, inoB] =
        at === undefined
          ? await Promise.all([this.lookup(this.a, path), this.lookup(this.b, path)])
          : await Promise.all([this.resolve(this.a, path, at.side, at.ino, at.dirs), this.resolve(this.b, path, at.side, at.ino, at.dirs)]);
      await this.settle(path, inoA, inoB, true);
    }
  }

  /** Whether block `blk` holds the same bytes in A and B (false if it is past A's end). */
  private async sameBytes(blk: number): Promise<boolean> {
    if (!this.inA(blk)) return false;
    const [x, y] = await Promise.all([this.a.fs.readBlocks(blk, 1), this.b.fs.readBlocks(blk, 1)]);
    return Buffer.compare(x, y) === 0;
  }

  /**
   * If `bytes` (block `blk` on this side) is the first block of a live directory ('.' and
   * '..' records at its start, and that directory maps its block 0 here), that directory.
   */
  private async firstDirBlockOwner(side: Side, blk: number, bytes: Uint8Array): Promise<number | undefined> {
    if (bytes.length < 24) return undefined;
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // ext4 doc, directory.rst: ext4_dir_entry_2 {inode u32, rec_len u16, name_len u8, file_type u8, name}.
    const ino = v.getUint32(0, true);
    if (v.getUint16(4, true) !== 12 || bytes[6] !== 1 || bytes[8] !== 0x2e) return undefined;
    if (bytes[12 + 6] !== 2 || bytes[12 + 8] !== 0x2e || bytes[12 + 9] !== 0x2e) return undefined;
    if (ino < 1 || ino > side.fs.superblock.s_inodes_count || this.internal(ino)) return undefined;
    const inode = await this.live(side, ino);
    if (inode === undefined || !isDir(inode)) return undefined;
    for await (const e of side.fs.extentsOf(inode)) {
      if (e.lblk === 0) return e.pblk === blk ? ino : undefined;
    }
    return undefined;
  }

  result(stats: { mode: 'incremental' | 'full'; seconds: number }): Ext4Diff {
    // By path bytes (keys order as bytes).
    const sorted = <T>(m: Map<string, T>): T[] => [...m.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([, v]) => v);
    return {
      added: sorted(this.added),
      removed: sorted(this.removed),
      modified: sorted(this.modified),
      unattributedBlocks: this.unattributed.toArray(),
      dirLinks: sorted(new Map([...this.links.values()].map((l) => [`${byteKey(l.path)}\0${l.side}`, l]))),
      stats: {
        mode: stats.mode,
        changedBlockBytes: this.changed.blockCount * this.b.fs.blockSize,
        inodesCompared: this.inodesCompared,
        dirsRead: this.dirsRead,
        ownershipScan: this.ownershipScan,
        seconds: stats.seconds,
      },
    };
  }
}

/**
 * Diffs ext4 filesystem A against B. `changed` holds the filesystem blocks that may differ
 * between the two devices (a superset is fine; a block missing from it is assumed equal).
 * Throws CORRUPT_IMAGE, BAD_CHECKSUM, IO.
 */
export async function diffExt4(fsA: Ext4Fs, fsB: Ext4Fs, changed: BlockRuns, options: DiffExt4Options = {}): Promise<Ext4Diff> {
  const t0 = performance.now();
  const d = new Ext4Differ(fsA, fsB, changed, options.differingBytes !== undefined ? new DifferingBytes(options.differingBytes) : undefined);
  const incremental = !options.full && d.canIncremental;
  if (incremental) await d.runIncremental();
  else await d.runFull();
  return d.result({ mode: incremental ? 'incremental' : 'full', seconds: (performance.now() - t0) / 1000 });
}
