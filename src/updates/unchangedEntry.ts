/**
 * Whether an update entry would change nothing: the filesystem already holds, at its path,
 * an object of the same kind with the same content (file bytes, symlink target), mode,
 * owner, mtime, xattrs and (for files and symlinks) no chattr flags and a single link. An
 * update applied a second time then rewrites nothing: no blocks are freed and taken again,
 * and an overlay holds (almost) nothing.
 *
 * The access time is not compared: reading the update's files on the host changes theirs.
 * Anything this module is unsure of (an ACL, stored in ext4's own format; a device node; a
 * file with hard links, whose other names a rewrite would detach) counts as changed: the
 * entry is then written as before, so the answer can only cost time, never a wrong tree.
 */
import type { Ext4Writer } from '../fs/ext4/Ext4Writer.js';
import { EXT4_GOOD_OLD_INODE_SIZE, EXT4_USER_FLAGS, S_IFDIR, S_IFLNK, S_IFREG } from '../fs/ext4/constants.js';
import { fileType, type Ext4Time, type Inode } from '../fs/ext4/inode.js';
import { bytesEqual } from '../fs/ext4/names.js';
import { isInlineDataXattr } from '../fs/ext4/xattr.js';
import type { EntryXattr, UpdateEntry } from './UpdateEntry.js';

/** Bytes of a file compared at a time. */
const COMPARE_CHUNK = 1 << 20;

/** Entries this module can find unchanged. */
type Comparable = Extract<UpdateEntry, { kind: 'file' | 'dir' | 'symlink' }>;

/**
 * Compares entries with what the filesystem holds; one per apply (it keeps a buffer for
 * file content). Reads only: the writer's state is not changed.
 */
export class UnchangedEntries {
  private buffer: Uint8Array | undefined;

  constructor(private readonly writer: Ext4Writer) {}

  /**
   * Whether writing `e` would leave the filesystem as it is. A file's content is compared
   * only when it can be read again (`reopenable`; a tar stream cannot) and everything else
   * already matches; otherwise false.
   */
  async matches(e: UpdateEntry): Promise<boolean> {
    if (e.kind !== 'file' && e.kind !== 'dir' && e.kind !== 'symlink') return false;
    if (e.kind === 'file' && !e.reopenable) return false;
    const ino = await this.writer.lookup(e.path).catch(() => undefined);
    if (ino === undefined) return false;
    const inode = await this.writer.fs.readInode(ino);
    if (!this.attrsMatch(inode, e)) return false;
    if (!(await this.xattrsMatch(inode, e.meta.xattrs))) return false;
    switch (e.kind) {
      case 'dir':
        return true;
      case 'symlink':
        return bytesEqual(await this.writer.fs.readlinkOf(inode), e.target);
      case 'file':
        return this.contentMatches(inode, e);
    }
  }

  /** Whether the object at `path` has mtime `mtime` already (a directory's times set again after a layer). */
  async mtimeIs(path: Uint8Array, mtime: Ext4Time): Promise<boolean> {
    const ino = await this.writer.lookup(path).catch(() => undefined);
    if (ino === undefined) return false;
    return this.timeMatches((await this.writer.fs.readInode(ino)).mtime, mtime);
  }

  /** Kind, mode, owner, mtime; for files and symlinks also size, one link, no flags (a new inode has none). */
  private attrsMatch(inode: Inode, e: Comparable): boolean {
    const type = fileType(inode.i_mode);
    if (type !== (e.kind === 'dir' ? S_IFDIR : e.kind === 'symlink' ? S_IFLNK : S_IFREG)) return false;
    if ((inode.i_mode & 0o7777) !== e.meta.mode || inode.i_uid !== e.meta.uid || inode.i_gid !== e.meta.gid) return false;
    if (!this.timeMatches(inode.mtime, e.meta.mtime)) return false;
    if (e.kind === 'dir') return true;
    if (inode.i_links_count !== 1 || (inode.i_flags & EXT4_USER_FLAGS) !== 0) return false;
    return e.kind === 'file' ? inode.i_size === e.size : inode.i_size === e.target.length;
  }

  /** Equal as the filesystem stores times: seconds, and nanoseconds where inodes hold them (not in 128-byte inodes). */
  private timeMatches(stored: Ext4Time, wanted: Ext4Time): boolean {
    if (stored.sec !== wanted.sec) return false;
    return this.writer.fs.superblock.s_inode_size <= EXT4_GOOD_OLD_INODE_SIZE || stored.nsec === wanted.nsec;
  }

  /** The same set of (name, value) pairs; system.data (inline content) is not an attribute. */
  private async xattrsMatch(inode: Inode, wanted: readonly EntryXattr[]): Promise<boolean> {
    const have = (await this.writer.fs.xattrsOf(inode)).filter((x) => !isInlineDataXattr(x));
    if (have.length !== wanted.length) return false;
    const key = (x: { name: Uint8Array; value: Uint8Array }): string => `${Buffer.from(x.name).toString('latin1')}\0${Buffer.from(x.value).toString('latin1')}`;
    const a = have.map(key).sort();
    const b = wanted.map(key).sort();
    return a.every((k, i) => k === b[i]);
  }

  /** The update's bytes against the file's, chunk by chunk; stops at the first difference. */
  private async contentMatches(inode: Inode, e: Extract<UpdateEntry, { kind: 'file' }>): Promise<boolean> {
    const fs = this.writer.fs;
    const extents = [];
    for await (const x of fs.extentsOf(inode)) extents.push(x);
    this.buffer ??= new Uint8Array(COMPARE_CHUNK);
    let off = 0;
    for await (const chunk of e.open()) {
      let at = 0;
      while (at < chunk.length) {
        const n = Math.min(chunk.length - at, this.buffer.length);
        if (off + n > inode.i_size) return false;
        const got = await fs.readOfInto(inode, off, this.buffer.subarray(0, n), extents);
        if (got !== n || Buffer.compare(this.buffer.subarray(0, n), chunk.subarray(at, at + n)) !== 0) return false;
        at += n;
        off += n;
      }
    }
    return off === inode.i_size;
  }
}
