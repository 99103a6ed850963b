/**
 * The state of a path for the three-way merge (DESIGN.md, "Semantics of a rebase"):
 * type, content, mode, uid, gid, xattrs, symlink target, device numbers; absent is a
 * state too. Two states are compared field by field and, for files of the same size,
 * byte by byte (streamed), never by a hash that could collide.
 */
import type { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { kindOfMode, type NodeKind } from '../fs/ext4/Ext4Writer.js';
import type { Inode } from '../fs/ext4/inode.js';
import { bytesEqual, compareBytes } from '../fs/ext4/names.js';

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

const COMPARE_CHUNK = 1 << 20;

async function sameContent(a: PathState, b: PathState): Promise<boolean> {
  const size = a.inode.i_size;
  for (let off = 0; off < size; off += COMPARE_CHUNK) {
    const [x, y] = await Promise.all([a.fs.readOf(a.inode, off, COMPARE_CHUNK), b.fs.readOf(b.inode, off, COMPARE_CHUNK)]);
    if (!bytesEqual(x, y)) return false;
  }
  return true;
}

async function sameXattrs(a: PathState, b: PathState): Promise<boolean> {
  const sort = (xs: Awaited<ReturnType<Ext4Fs['xattrsOf']>>) => [...xs].sort((p, q) => compareBytes(p.name, q.name));
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
