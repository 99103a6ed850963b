/**
 * The state of a path for the three-way merge (DESIGN.md, "Semantics of a rebase"):
 * type, content, mode, uid, gid, xattrs, symlink target, device numbers; absent is a
 * state too. Two states are compared field by field and, for files of the same size,
 * byte by byte (streamed), never by a hash that could collide. How a file or directory
 * is stored (inline data or blocks) is not part of its state.
 */
import type { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { kindOfMode, type NodeKind } from '../fs/ext4/Ext4Writer.js';
import type { Inode } from '../fs/ext4/inode.js';
import { EXT4_USER_FLAGS } from '../fs/ext4/constants.js';
import { bytesEqual, compareBytes } from '../fs/ext4/names.js';
import { isInlineDataXattr } from '../fs/ext4/xattr.js';

/** A path's state in one filesystem (null: absent). */
export interface PathState {
  readonly fs: Ext4Fs;
  readonly inode: Inode;
  readonly kind: NodeKind;
}

/** The state of `path` in `fs` (its last component not followed), or null. */
export async function stateAt(fs: Ext4Fs, path: Uint8Array): Promise<PathState | null> {
  const ino = await fs.lookup(path);
  if (ino === undefined) return null;
  const inode = await fs.readInode(ino);
  return { fs, inode, kind: kindOfMode(inode.i_mode) ?? 'file' };
}

/** Bytes compared at a time per file (a few paths are compared at once; reads this size are synchronous). */
const COMPARE_CHUNK = 256 << 10;

/** Compare buffers not in use (a merge compares thousands of files: they are reused, not reallocated). */
const spareBuffers: Uint8Array[] = [];

/** Compares two files of the same size, a chunk at a time through two buffers. */
async function sameContent(a: PathState, b: PathState): Promise<boolean> {
  const size = a.inode.i_size;
  const x = spareBuffers.pop() ?? new Uint8Array(COMPARE_CHUNK);
  const y = spareBuffers.pop() ?? new Uint8Array(COMPARE_CHUNK);
  try {
    for (let off = 0; off < size; off += COMPARE_CHUNK) {
      const [n, m] = await Promise.all([a.fs.readOfInto(a.inode, off, x), b.fs.readOfInto(b.inode, off, y)]);
      // Buffer#equals: one memcmp per chunk.
      if (n !== m || !Buffer.from(x.buffer, x.byteOffset, n).equals(y.subarray(0, m))) return false;
    }
    return true;
  } finally {
    // As many pairs are kept as comparisons run at once.
    if (spareBuffers.length < 8) spareBuffers.push(x, y);
  }
}

/** The xattrs a user sees, in name order: system.data is where inline data keeps its overflow, not an attribute. */
async function sameXattrs(a: PathState, b: PathState): Promise<boolean> {
  const sort = (xs: Awaited<ReturnType<Ext4Fs['xattrsOf']>>) => xs.filter((x) => !isInlineDataXattr(x)).sort((p, q) => compareBytes(p.name, q.name));
  const [x, y] = await Promise.all([a.fs.xattrsOf(a.inode).then(sort), b.fs.xattrsOf(b.inode).then(sort)]);
  return x.length === y.length && x.every((e, i) => bytesEqual(e.name, y[i]!.name) && bytesEqual(e.value, y[i]!.value));
}

/**
 * Whether two states are the same for the merge: both absent, or the same type, mode,
 * owner, xattrs, and (by type) content, symlink target or device numbers. Times and
 * inode numbers do not count: a client that installed the update itself has the
 * update's files, whenever and wherever it wrote them.
 */
export async function sameState(a: PathState | null, b: PathState | null): Promise<boolean> {
  if (a === null || b === null) return a === b;
  if (a.kind !== b.kind) return false;
  const x = a.inode;
  const y = b.inode;
  if ((x.i_mode & 0o7777) !== (y.i_mode & 0o7777) || x.i_uid !== y.i_uid || x.i_gid !== y.i_gid) return false;
  // chattr flags (immutable, append-only, ...) are the owner's too.
  if ((x.i_flags & EXT4_USER_FLAGS) !== (y.i_flags & EXT4_USER_FLAGS)) return false;
  if (a.kind === 'file' || a.kind === 'symlink') {
    if (x.i_size !== y.i_size) return false;
    if (a.kind === 'symlink' && !bytesEqual(await a.fs.readlinkOf(x), await b.fs.readlinkOf(y))) return false;
    if (a.kind === 'file' && !(await sameContent(a, b))) return false;
  }
  if (a.kind === 'chardev' || a.kind === 'blockdev') {
    const ra = a.fs.statOf(x).rdev;
    const rb = b.fs.statOf(y).rdev;
    if (ra?.major !== rb?.major || ra?.minor !== rb?.minor) return false;
  }
  return sameXattrs(a, b);
}
