/**
 * Adding and removing directory entries (ext4 doc, directory.rst), in linear directories
 * and in hash-tree (htree) directories, block by block through `DirectoryBlocks` (the
 * writer supplies the blocks, allocation and the inode flag; this module only decides
 * what the blocks hold).
 *
 * Linear: a new entry goes into the first record with room (an unused record, or the slack
 * after a used one, which is split off as the kernel does), else into a new block.
 * htree: the name's hash leads through the index to one leaf; a full leaf is split in the
 * middle by size (upper hashes to a new block, with the collision bit on the new index
 * entry when equal hashes straddle the split); a full index node is split, or the root
 * grows one level (up to 2 index levels, 3 with largedir). Leaves are never freed. With
 * DirFormat.dirIndex, a one-block linear directory that fills becomes an htree, as the
 * kernel does; larger linear directories stay linear (e2fsck accepts them).
 * Casefolded directories (and their siphash) are not handled: dxHash refuses them.
 *
 * Link counts and i_size are the caller's: this module touches blocks only, and gives the
 * rule for a directory's link count under dir_nlink (linksAfterSubdirAdded/Removed).
 */
import { InternalError, RefusedError } from '../../errors.js';
import {
  DX_HASH_TEA,
  EXT2_FLAGS_UNSIGNED_HASH,
  EXT4_CASEFOLD_FL,
  EXT4_FEATURE_COMPAT_DIR_INDEX,
  EXT4_ENCRYPT_FL,
  EXT4_FEATURE_INCOMPAT_DIRDATA,
  EXT4_FEATURE_INCOMPAT_FILETYPE,
  EXT4_FEATURE_INCOMPAT_LARGEDIR,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT4_FT_DIR,
  EXT4_HTREE_LEVEL,
  EXT4_HTREE_LEVEL_COMPAT,
  EXT4_LINK_MAX,
  EXT4_NAME_LEN,
} from './constants.js';
import type { Ext4Context } from './context.js';
import {
  decodeDirBlockRecords,
  decodeDxNode,
  decodeDxRoot,
  dirRecLen,
  dxLimit,
  DX_NODE_ENTRIES_AT,
  DX_ROOT_ENTRIES_AT,
  encodeDirBlock,
  encodeDxNode,
  encodeDxRoot,
  type DirEntry,
  type DirFormat,
  type DirRecord,
  type DxRoot,
} from './directory.js';
import { dxHash, effectiveHashVersion } from './dxHash.js';
import type { Inode } from './inode.js';
import type { Superblock } from './superblock.js';
import { bytesEqual } from './names.js';

export type { DirFormat } from './directory.js';

/** A directory's blocks as the writer holds them (Ext4Writer implements it). */
export interface DirectoryBlocks {
  /** The directory's inode. */
  readonly ino: number;
  readonly blockSize: number;
  /** Logical blocks the directory has now (i_size / blockSize). */
  readonly blockCount: number;
  /** EXT4_INDEX_FL is set. */
  readonly htree: boolean;
  /** Current bytes of logical block lblk (a private copy the caller may edit). */
  read(lblk: number): Promise<Uint8Array>;
  /** Stores a whole block (checksum tails already set). */
  write(lblk: number, bytes: Uint8Array): Promise<void>;
  /** Allocates a new block at the end; returns its logical number (its content: the caller writes it). */
  append(): Promise<number>;
  /** Sets or clears EXT4_INDEX_FL on the inode. */
  setHtree(on: boolean): void;
  /** For error messages: the image file and checksum policy (default: a context naming the inode). */
  readonly ctx?: Ext4Context;
  /** For error messages: the filesystem byte of logical block lblk. */
  fsOffsetOf?(lblk: number): number;
  /**
   * Blocks this module encoded and the records it encoded them from, by logical block,
   * kept by the caller from one change to the next: a block whose current bytes are those
   * is not decoded (and its checksum not verified) again. Adding thousands of entries to
   * one directory otherwise decodes the same block as often.
   */
  readonly encoded?: Map<number, EncodedBlock>;
}

/** A directory block as encoded, and its records. */
export interface EncodedBlock {
  readonly bytes: Uint8Array;
  readonly records: readonly DirRecord[];
}

/**
 * The DirFormat of directory `dir` in the filesystem of `sb`. Throws WRITE_REFUSED for a
 * directory this module cannot keep correct: casefolded (names compared and hashed after
 * Unicode folding) or encrypted (names stored encrypted), or a filesystem with dirdata.
 */
export function dirFormat(sb: Superblock, dir: Inode): DirFormat {
  const refuse = (why: string): never => {
    throw new RefusedError('WRITE_REFUSED', { structure: `ext4.inode[${dir.ino}]`, detail: `cannot write directory entries: ${why}` });
  };
  if (dir.i_flags & EXT4_CASEFOLD_FL) refuse('the directory is casefolded');
  if (dir.i_flags & EXT4_ENCRYPT_FL) refuse('the directory is encrypted');
  if (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_DIRDATA) refuse('the dirdata feature is set');
  return {
    filetype: (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_FILETYPE) !== 0,
    metadataCsum: (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0,
    csumSeed: dir.csumSeed,
    hashSeed: sb.s_hash_seed,
    defaultHashVersion: sb.s_def_hash_version,
    unsignedHash: (sb.s_flags & EXT2_FLAGS_UNSIGNED_HASH) !== 0,
    largedir: (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_LARGEDIR) !== 0,
    inodesCount: sb.s_inodes_count,
    dirIndex: (sb.s_feature_compat & EXT4_FEATURE_COMPAT_DIR_INDEX) !== 0,
  };
}

/** An entry to add. */
export interface NewDirEntry {
  readonly name: Uint8Array;
  readonly ino: number;
  readonly fileType: number;
}

/** What a lookup or removal found. */
export interface FoundEntry {
  readonly ino: number;
  readonly fileType: number;
}

/**
 * Adds `entry` to the directory. Throws BAD_UPDATE if the name exists or is not a valid
 * name (empty, over 255 bytes, holding '/' or NUL, '.' or '..'), NO_SPACE if an htree is
 * full at its deepest allowed level, WRITE_REFUSED for a hash it does not support
 * (casefold), CORRUPT_IMAGE/BAD_CHECKSUM for a damaged block.
 */
export async function addEntry(dir: DirectoryBlocks, fmt: DirFormat, entry: NewDirEntry, hints: AddHints = {}): Promise<number | undefined> {
  checkName(dir, entry.name);
  if (!Number.isInteger(entry.ino) || entry.ino < 1 || entry.ino > fmt.inodesCount) throw new InternalError(`directory entry for inode ${entry.ino}`);
  const rec: DirEntry = { ino: entry.ino, name: entry.name, fileType: fmt.filetype ? entry.fileType : 0 };
  if (dir.htree) {
    await addIndexed(dir, fmt, rec, hints.absent === true);
    return undefined;
  }
  return addLinear(dir, fmt, rec, hints);
}

/**
 * What a caller that keeps a directory's listing knows, so that a linear directory of
 * many blocks is not read whole for each change (the kernel does not check for an
 * existing name when it adds either: its caller has looked the name up).
 */
export interface AddHints {
  /** The caller has the whole listing and the name is not in it: skip the scan for it (the lookup, in an htree). */
  readonly absent?: boolean;
  /** With `absent`: the block to try first (the one the last entry went into). */
  readonly startAt?: number;
}

/**
 * Removes the entry `name`; returns what it named, or undefined if there is none. The
 * record is merged into the one before it, or (first in its block) marked unused.
 * Throws BAD_UPDATE for '.' and '..', and as addEntry for damaged blocks.
 */
export async function removeEntry(dir: DirectoryBlocks, fmt: DirFormat, name: Uint8Array, hints: { readonly lblk?: number } = {}): Promise<FoundEntry | undefined> {
  if (isDots(name)) throw new RefusedError('BAD_UPDATE', { structure: structureOf(dir, 0), detail: "'.' and '..' cannot be removed from a directory" });
  const found = await find(dir, fmt, name, hints.lblk);
  if (found === undefined) return undefined;
  const { lblk, records, index } = found;
  const rec = records[index]!;
  const next: DirRecord[] = records.slice();
  if (index > 0) {
    const prev = next[index - 1]!;
    next[index - 1] = { ...prev, recLen: prev.recLen + rec.recLen };
    next.splice(index, 1);
  } else {
    next[0] = { ino: 0, name: new Uint8Array(0), fileType: 0, recLen: rec.recLen };
  }
  await dir.write(lblk, encodeDirBlock(next, fmt, dir.blockSize));
  return { ino: rec.ino, fileType: rec.fileType };
}

/** The entry `name` of the directory, or undefined; htree directories are searched by hash. Throws as addEntry. */
export async function lookupEntry(dir: DirectoryBlocks, fmt: DirFormat, name: Uint8Array): Promise<FoundEntry | undefined> {
  const found = await find(dir, fmt, name);
  if (found === undefined) return undefined;
  const rec = found.records[found.index]!;
  return { ino: rec.ino, fileType: rec.fileType };
}

/** The first block of a new directory: '.' and '..' (and the checksum tail under metadata_csum). */
export function newDirBlock(fmt: Pick<DirFormat, 'filetype' | 'metadataCsum' | 'csumSeed'>, selfIno: number, parentIno: number, blockSize: number): Uint8Array {
  const ft = fmt.filetype ? EXT4_FT_DIR : 0;
  return encodeDirBlock(
    [
      { ino: selfIno, name: DOT, fileType: ft },
      { ino: parentIno, name: DOTDOT, fileType: ft },
    ],
    fmt,
    blockSize,
  );
}

/**
 * A directory's link count after a subdirectory is added to it (its '..' names the
 * directory), as the kernel's ext4_inc_count: with the dir_nlink feature an htree
 * directory past EXT4_LINK_MAX links, or already at 1, has 1 ("not counted"). Throws
 * BAD_UPDATE where the kernel says EMLINK: EXT4_LINK_MAX links without dir_nlink, or
 * in a linear directory.
 */
export function linksAfterSubdirAdded(links: number, dir: { readonly htree: boolean; readonly dirNlink: boolean; readonly ino: number }): number {
  if (links >= EXT4_LINK_MAX && !(dir.dirNlink && dir.htree)) {
    throw new RefusedError('BAD_UPDATE', { structure: `ext4.inode[${dir.ino}]`, detail: `directory has ${links} links, the most without dir_nlink in an indexed directory`, expected: `< ${EXT4_LINK_MAX}`, actual: links });
  }
  const n = links + 1;
  return dir.htree && (n > EXT4_LINK_MAX || n === 2) ? 1 : n;
}

/** A directory's link count after a subdirectory is removed, as the kernel's ext4_dec_count: 1 ("not counted") and 2 stay. */
export function linksAfterSubdirRemoved(links: number): number {
  return links > 2 ? links - 1 : links;
}

const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

function isDots(name: Uint8Array): boolean {
  return (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

function sameName(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkName(dir: DirectoryBlocks, name: Uint8Array): void {
  const bad =
    name.length === 0 ? 'empty name' : name.length > EXT4_NAME_LEN ? `name longer than ${EXT4_NAME_LEN} bytes` : name.includes(0x2f) || name.includes(0) ? "name holds '/' or NUL" : isDots(name) ? "name is '.' or '..'" : undefined;
  if (bad !== undefined) throw new RefusedError('BAD_UPDATE', { structure: structureOf(dir, 0), detail: `cannot add a directory entry: ${bad}`, actual: Buffer.from(name).toString('latin1') });
}

function structureOf(dir: DirectoryBlocks, lblk: number): string {
  return `ext4.dir[${dir.ino}:${lblk}]`;
}

function ctxOf(dir: DirectoryBlocks): Ext4Context {
  return dir.ctx ?? { file: `directory inode ${dir.ino}`, verifyChecksums: 'error', diagnostics: [] };
}

function fsOffset(dir: DirectoryBlocks, lblk: number): number {
  return dir.fsOffsetOf?.(lblk) ?? lblk * dir.blockSize;
}

async function readRecords(dir: DirectoryBlocks, fmt: DirFormat, lblk: number): Promise<readonly DirRecord[]> {
  const bytes = await dir.read(lblk);
  const known = dir.encoded?.get(lblk);
  if (known !== undefined && bytesEqual(known.bytes, bytes)) return known.records;
  const opts = { filetype: fmt.filetype, metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, inodesCount: fmt.inodesCount };
  return decodeDirBlockRecords(bytes, ctxOf(dir), structureOf(dir, lblk), fsOffset(dir, lblk), opts, dir.blockSize);
}

/**
 * Puts `rec` into the first record of `records` with room, as the kernel's
 * ext4_find_dest_de does: an unused record large enough, or a used one whose slack
 * (rec_len beyond its own size) holds the new record, which is split off. Returns the new
 * list, or undefined if nothing has room.
 */
function insertIntoRecords(records: readonly DirRecord[], rec: DirEntry): DirRecord[] | undefined {
  const need = dirRecLen(rec.name.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    if (r.ino === 0 && r.recLen >= need) {
      const out = records.slice();
      out[i] = { ...rec, recLen: r.recLen };
      return out;
    }
    const own = dirRecLen(r.name.length);
    if (r.ino !== 0 && r.recLen - own >= need) {
      const out = records.slice();
      out.splice(i, 1, { ...r, recLen: own }, { ...rec, recLen: r.recLen - own });
      return out;
    }
  }
  return undefined;
}

async function addLinear(dir: DirectoryBlocks, fmt: DirFormat, rec: DirEntry, hints: AddHints): Promise<number | undefined> {
  if (hints.absent === true) {
    // Any block with room will do in a linear directory: from the hint to the end, then from the start.
    const n = dir.blockCount;
    const from = hints.startAt !== undefined && hints.startAt >= 0 && hints.startAt < n ? hints.startAt : 0;
    for (let k = 0; k < n; k++) {
      const lblk = (from + k) % n;
      const inserted = insertIntoRecords(await readRecords(dir, fmt, lblk), rec);
      if (inserted !== undefined) {
        const bytes = encodeDirBlock(inserted, fmt, dir.blockSize);
        await dir.write(lblk, bytes);
        dir.encoded?.set(lblk, { bytes, records: inserted });
        return lblk;
      }
    }
    return appendLinear(dir, fmt, rec);
  }
  // One pass: the name must not exist anywhere, and the first block with room takes it.
  let target: { lblk: number; records: DirRecord[] } | undefined;
  for (let lblk = 0; lblk < dir.blockCount; lblk++) {
    const records = await readRecords(dir, fmt, lblk);
    if (records.some((r) => r.ino !== 0 && sameName(r.name, rec.name))) throw exists(dir, lblk, rec.name);
    if (target === undefined) {
      const inserted = insertIntoRecords(records, rec);
      if (inserted !== undefined) target = { lblk, records: inserted };
    }
  }
  if (target !== undefined) {
    await dir.write(target.lblk, encodeDirBlock(target.records, fmt, dir.blockSize));
    return target.lblk;
  }
  return appendLinear(dir, fmt, rec);
}

/** No block has room: a one-block directory becomes an htree (as the kernel does), any other gets a new block. Returns the block of `rec` (undefined: the directory became an htree). */
async function appendLinear(dir: DirectoryBlocks, fmt: DirFormat, rec: DirEntry): Promise<number | undefined> {
  if (fmt.dirIndex === true && dir.blockCount === 1 && (await makeIndexed(dir, fmt, await readRecords(dir, fmt, 0), rec))) return undefined;
  const lblk = await dir.append();
  await dir.write(lblk, encodeDirBlock([rec], fmt, dir.blockSize));
  return lblk;
}

/**
 * Turns a full one-block linear directory into an htree, as the kernel's make_indexed_dir
 * (which runs exactly then, with dir_index): block 0 becomes the root ('.', '..', hash
 * version s_def_hash_version), its other entries move to block 1, which is split at once
 * into blocks 1 and 2, and `rec` goes into its half. Returns false (the caller appends a
 * linear block instead) when block 0 does not start with '.' and '..', holds fewer than two
 * other entries, or the default hash is one dxHash does not compute.
 */
async function makeIndexed(dir: DirectoryBlocks, fmt: DirFormat, records: readonly DirRecord[], rec: DirEntry): Promise<boolean> {
  const [dot, dotdot] = records;
  if (dot === undefined || dotdot === undefined || dot.ino === 0 || dotdot.ino === 0 || !sameName(dot.name, DOT) || !sameName(dotdot.name, DOTDOT)) return false;
  const entries = records.slice(2).filter((r) => r.ino !== 0);
  if (entries.length < 2 || fmt.defaultHashVersion > DX_HASH_TEA) return false;
  const info = { hash_version: fmt.defaultHashVersion, info_length: 8, indirect_levels: 0 };
  const tree: Tree = {
    root: { info, node: { limit: 0, count: 1, hashes: [0], blocks: [1] }, dot, dotdot },
    version: effectiveHashVersion(fmt.defaultHashVersion, fmt.unsignedHash),
    maxLevels: fmt.largedir ? EXT4_HTREE_LEVEL : EXT4_HTREE_LEVEL_COMPAT,
  };
  const leaf = await dir.append();
  if (leaf !== 1) throw new InternalError(`directory ${dir.ino}: the block after block 0 is ${leaf}`);
  const moved: DirRecord[] = entries.map((e) => ({ ino: e.ino, name: e.name, fileType: e.fileType, recLen: dirRecLen(e.name.length) }));
  await dir.write(leaf, encodeDirBlock(moved, fmt, dir.blockSize));
  const frames: Frame[] = [{ lblk: 0, hashes: [0], blocks: [leaf], at: 0 }];
  await splitLeaf(dir, fmt, tree, frames, moved, rec, dxHash(rec.name, tree.version, fmt.hashSeed).hash);
  dir.setHtree(true);
  return true;
}

function exists(dir: DirectoryBlocks, lblk: number, name: Uint8Array): RefusedError {
  return new RefusedError('BAD_UPDATE', { structure: structureOf(dir, lblk), detail: 'directory entry exists', actual: Buffer.from(name).toString('latin1') });
}

// --- htree -------------------------------------------------------------------------------

/** One index node on the path from the root to a leaf: its entries and which one the path took. */
interface Frame {
  readonly lblk: number;
  hashes: number[];
  blocks: number[];
  at: number;
}

interface Tree {
  readonly root: DxRoot;
  readonly version: number;
  readonly maxLevels: number;
}

function dxOpts(dir: DirectoryBlocks, fmt: DirFormat) {
  return { metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, largedir: fmt.largedir, dirBlocks: dir.blockCount };
}

async function readTree(dir: DirectoryBlocks, fmt: DirFormat): Promise<Tree> {
  const root = decodeDxRoot(await dir.read(0), ctxOf(dir), `ext4.dx_root[${dir.ino}]`, fsOffset(dir, 0), dir.blockSize, dxOpts(dir, fmt));
  return { root, version: effectiveHashVersion(root.info.hash_version, fmt.unsignedHash), maxLevels: fmt.largedir ? EXT4_HTREE_LEVEL : EXT4_HTREE_LEVEL_COMPAT };
}

/** The last entry whose hash is <= `hash` (entry 0 covers everything below entry 1), as dx_probe's binary search. */
function entryFor(hashes: readonly number[], hash: number): number {
  let lo = 1;
  let hi = hashes.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (hashes[mid]! > hash) hi = mid - 1;
    else lo = mid + 1;
  }
  return lo - 1;
}

async function readNode(dir: DirectoryBlocks, fmt: DirFormat, lblk: number): Promise<Frame> {
  const node = decodeDxNode(await dir.read(lblk), ctxOf(dir), `ext4.dx_node[${dir.ino}:${lblk}]`, fsOffset(dir, lblk), dir.blockSize, dxOpts(dir, fmt));
  return { lblk, hashes: [...node.hashes], blocks: [...node.blocks], at: 0 };
}

/** The frames from the root to the bottom index node for `hash`; the leaf is the bottom frame's blocks[at]. */
async function probe(dir: DirectoryBlocks, fmt: DirFormat, tree: Tree, hash: number): Promise<Frame[]> {
  const frames: Frame[] = [{ lblk: 0, hashes: [...tree.root.node.hashes], blocks: [...tree.root.node.blocks], at: 0 }];
  for (let level = 0; ; level++) {
    const f = frames[level]!;
    f.at = entryFor(f.hashes, hash);
    if (level === tree.root.info.indirect_levels) return frames;
    frames.push(await readNode(dir, fmt, f.blocks[f.at]!));
  }
}

const leafOf = (frames: readonly Frame[]): number => {
  const f = frames[frames.length - 1]!;
  return f.blocks[f.at]!;
};

/**
 * Moves the path to the next leaf if that leaf continues `hash` (its index hash is `hash`
 * with the collision bit), as the kernel's ext4_htree_next_block. Returns false at the end.
 */
async function nextLeaf(dir: DirectoryBlocks, fmt: DirFormat, frames: Frame[], hash: number): Promise<boolean> {
  let level = frames.length - 1;
  while (level >= 0 && frames[level]!.at + 1 >= frames[level]!.blocks.length) level--;
  if (level < 0) return false;
  const f = frames[level]!;
  if ((f.hashes[f.at + 1]! & ~1) >>> 0 !== hash) return false;
  f.at++;
  for (let l = level + 1; l < frames.length; l++) {
    frames[l] = await readNode(dir, fmt, frames[l - 1]!.blocks[frames[l - 1]!.at]!);
    frames[l]!.at = 0;
  }
  return true;
}

async function writeFrame(dir: DirectoryBlocks, fmt: DirFormat, tree: Tree, f: Frame, indirectLevels = tree.root.info.indirect_levels): Promise<void> {
  const node = { hashes: f.hashes, blocks: f.blocks };
  const bytes = f.lblk === 0 ? encodeDxRoot({ ...tree.root, info: { ...tree.root.info, indirect_levels: indirectLevels }, node }, fmt, dir.blockSize) : encodeDxNode(node, fmt, dir.blockSize);
  await dir.write(f.lblk, bytes);
}

/** Where an entry was found: its block, that block's records and the record's index. */
interface Found {
  readonly lblk: number;
  readonly records: readonly DirRecord[];
  readonly index: number;
}

async function find(dir: DirectoryBlocks, fmt: DirFormat, name: Uint8Array, hintLblk?: number): Promise<Found | undefined> {
  const match = async (lblk: number): Promise<Found | undefined> => {
    const records = await readRecords(dir, fmt, lblk);
    const index = records.findIndex((r) => r.ino !== 0 && sameName(r.name, name));
    return index >= 0 ? { lblk, records, index } : undefined;
  };
  if (!dir.htree) {
    // The block the caller last saw the name in; a wrong hint costs one block, then the scan.
    if (hintLblk !== undefined && hintLblk >= 0 && hintLblk < dir.blockCount) {
      const f = await match(hintLblk);
      if (f !== undefined) return f;
    }
    for (let lblk = 0; lblk < dir.blockCount; lblk++) {
      const f = await match(lblk);
      if (f !== undefined) return f;
    }
    return undefined;
  }
  // '.' and '..' live in the root block, outside the index.
  const tree = await readTree(dir, fmt);
  if (isDots(name)) {
    const e = name.length === 1 ? tree.root.dot : tree.root.dotdot;
    return { lblk: 0, records: [{ ...e, recLen: 0 }], index: 0 };
  }
  const { hash } = dxHash(name, tree.version, fmt.hashSeed);
  const frames = await probe(dir, fmt, tree, hash);
  do {
    const f = await match(leafOf(frames));
    if (f !== undefined) return f;
  } while (await nextLeaf(dir, fmt, frames, hash));
  return undefined;
}

interface Hashed {
  readonly rec: DirEntry;
  readonly hash: number;
  readonly minor: number;
}

async function addIndexed(dir: DirectoryBlocks, fmt: DirFormat, rec: DirEntry, absent: boolean): Promise<void> {
  // A caller that knows the name is absent spares the lookup (the insert below finds the same leaf again).
  if (!absent && (await find(dir, fmt, rec.name)) !== undefined) throw exists(dir, 0, rec.name);
  // Each pass either inserts, or makes room in the index (split a node, grow the root) and
  // probes again; each pass frees a slot one level further down, so a few passes suffice.
  // A NO_SPACE after some passes leaves the index reorganised but valid.
  for (let pass = 0; pass < 2 * EXT4_HTREE_LEVEL + 2; pass++) {
    const tree = await readTree(dir, fmt);
    const { hash } = dxHash(rec.name, tree.version, fmt.hashSeed);
    const frames = await probe(dir, fmt, tree, hash);
    const leaf = leafOf(frames);
    const records = await readRecords(dir, fmt, leaf);
    const inserted = insertIntoRecords(records, rec);
    if (inserted !== undefined) {
      const bytes = encodeDirBlock(inserted, fmt, dir.blockSize);
      await dir.write(leaf, bytes);
      // The next name for this leaf finds its records without decoding (and re-checking) the block.
      dir.encoded?.set(leaf, { bytes, records: inserted });
      return;
    }
    const bottom = frames[frames.length - 1]!;
    if (bottom.blocks.length < limitOf(dir, fmt, bottom)) return splitLeaf(dir, fmt, tree, frames, records, rec, hash);
    await makeRoom(dir, fmt, tree, frames, frames.length - 1);
  }
  throw new InternalError(`htree insert into directory ${dir.ino} did not converge`);
}

function limitOf(dir: DirectoryBlocks, fmt: DirFormat, f: Frame): number {
  return dxLimit(dir.blockSize, f.lblk === 0 ? DX_ROOT_ENTRIES_AT : DX_NODE_ENTRIES_AT, fmt.metadataCsum);
}

/**
 * The index node frames[level] is full: split it (its upper half to a new node, a new
 * entry in its parent), or, for the root, move its entries to a new node under a root of
 * one entry (one level more). A full parent is made room in first (the caller probes again).
 */
async function makeRoom(dir: DirectoryBlocks, fmt: DirFormat, tree: Tree, frames: Frame[], level: number): Promise<void> {
  const f = frames[level]!;
  if (level === 0) {
    const levels = tree.root.info.indirect_levels;
    if (levels + 1 >= tree.maxLevels) {
      throw new RefusedError('NO_SPACE', { structure: `ext4.dx_root[${dir.ino}]`, detail: `directory index full at ${levels + 1} levels${fmt.largedir ? '' : ' (the largedir feature allows 3)'}` });
    }
    const lblk = await dir.append();
    await writeFrame(dir, fmt, tree, { lblk, hashes: f.hashes, blocks: f.blocks, at: 0 });
    await writeFrame(dir, fmt, tree, { lblk: 0, hashes: [0], blocks: [lblk], at: 0 }, levels + 1);
    return;
  }
  const parent = frames[level - 1]!;
  if (parent.blocks.length >= limitOf(dir, fmt, parent)) return makeRoom(dir, fmt, tree, frames, level - 1);
  // As the kernel: the lower half stays, the upper half moves; its first hash keys it in the parent.
  const keep = f.blocks.length >>> 1;
  const lblk = await dir.append();
  const moved: Frame = { lblk, hashes: [0, ...f.hashes.slice(keep + 1)], blocks: f.blocks.slice(keep), at: 0 };
  const hash2 = f.hashes[keep]!;
  f.hashes = f.hashes.slice(0, keep);
  f.blocks = f.blocks.slice(0, keep);
  parent.hashes.splice(parent.at + 1, 0, hash2);
  parent.blocks.splice(parent.at + 1, 0, lblk);
  await writeFrame(dir, fmt, tree, moved);
  await writeFrame(dir, fmt, tree, f);
  await writeFrame(dir, fmt, tree, parent);
}

/**
 * Splits a full leaf as the kernel's do_split: its entries sorted by hash, those past the
 * middle of the block (by size) move to a new block, whose index entry gets the first
 * moved hash, with the collision bit if the entry before it has the same hash (a lookup
 * must then go on into the new block). Then `rec` goes into the half its hash belongs to.
 */
async function splitLeaf(dir: DirectoryBlocks, fmt: DirFormat, tree: Tree, frames: Frame[], records: readonly DirRecord[], rec: DirEntry, hash: number): Promise<void> {
  const leaf = leafOf(frames);
  const map: Hashed[] = records
    .filter((r) => r.ino !== 0)
    .map((r) => {
      const h = dxHash(r.name, tree.version, fmt.hashSeed);
      return { rec: { ino: r.ino, name: r.name, fileType: r.fileType }, hash: h.hash, minor: h.minorHash };
    })
    .sort((a, b) => a.hash - b.hash || a.minor - b.minor);
  if (map.length < 2) throw new InternalError(`htree leaf ${leaf} of directory ${dir.ino} is full with ${map.length} entries`);
  let size = 0;
  let move = 0;
  for (let i = map.length - 1; i > 0; i--) {
    const s = dirRecLen(map[i]!.rec.name.length);
    if (size + s / 2 > dir.blockSize / 2) break;
    size += s;
    move++;
  }
  const split = Math.min(map.length - 1, Math.max(1, map.length - move));
  const hash2 = map[split]!.hash;
  const continued = map[split - 1]!.hash === hash2;
  const lower = map.slice(0, split).map((m) => m.rec);
  const upper = map.slice(split).map((m) => m.rec);
  if (hash >= hash2) upper.push(rec);
  else lower.push(rec);
  const newLblk = await dir.append();
  await dir.write(newLblk, encodeDirBlock(upper, fmt, dir.blockSize));
  await dir.write(leaf, encodeDirBlock(lower, fmt, dir.blockSize));
  const bottom = frames[frames.length - 1]!;
  bottom.hashes.splice(bottom.at + 1, 0, (hash2 | (continued ? 1 : 0)) >>> 0);
  bottom.blocks.splice(bottom.at + 1, 0, newLblk);
  await writeFrame(dir, fmt, tree, bottom);
}
