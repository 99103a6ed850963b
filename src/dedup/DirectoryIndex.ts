/**
 * Path lookups in a filesystem that does not change while they run (the base, T and a
 * client during a merge), with the listing of every directory they pass through kept:
 * a merge resolves thousands of paths in the same few directories of three filesystems,
 * and Ext4Fs.lookup reads and decodes each directory again for every path (a linear
 * scan of /usr/share/man/man1 per man page).
 */
import type { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { EXT4_ROOT_INO, S_IFDIR } from '../fs/ext4/constants.js';
import { fileType } from '../fs/ext4/inode.js';
import { byteKey, splitPath } from '../fs/ext4/names.js';

/** Entries kept before the index starts over (bounds its memory whatever the tree). */
const MAX_ENTRIES = 200_000;

export class DirectoryIndex {
  /** Directory inode -> name key -> inode; null: not a directory, or its listing failed (looked up the ordinary way). */
  private readonly listings = new Map<number, Map<string, number> | null>();
  private held = 0;

  constructor(
    readonly fs: Ext4Fs,
    private readonly maxEntries = MAX_ENTRIES,
  ) {}

  /** As Ext4Fs.lookup: the inode `path` names (no symlink followed), or undefined. Throws what Ext4Fs.lookup throws. */
  async lookup(path: Uint8Array): Promise<number | undefined> {
    let ino: number | undefined = EXT4_ROOT_INO;
    for (const part of splitPath(path)) {
      ino = await this.lookupIn(ino, part);
      if (ino === undefined) return undefined;
    }
    return ino;
  }

  private async lookupIn(dirIno: number, name: Uint8Array): Promise<number | undefined> {
    let listing = this.listings.get(dirIno);
    if (listing === undefined) {
      listing = await this.list(dirIno);
      if (this.held > this.maxEntries) {
        this.listings.clear();
        this.held = 0;
      }
      this.listings.set(dirIno, listing);
      this.held += listing?.size ?? 1;
    }
    // A directory that could not be listed whole: Ext4Fs's scan, which stops at the name (and so meets only the errors before it).
    if (listing === null) return this.fs.lookupIn(dirIno, name);
    return listing.get(byteKey(name));
  }

  /** The entries of directory `ino` (the first of a repeated name wins, as in a scan), or null. */
  private async list(ino: number): Promise<Map<string, number> | null> {
    try {
      const inode = await this.fs.readInode(ino);
      if (fileType(inode.i_mode) !== S_IFDIR) return null;
      const out = new Map<string, number>();
      for await (const e of this.fs.readdirOf(inode)) {
        const k = byteKey(e.name);
        if (!out.has(k)) out.set(k, e.ino);
      }
      return out;
    } catch {
      return null;
    }
  }
}
