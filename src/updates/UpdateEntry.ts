/**
 * What an update source yields and the ext4 writer's `apply` consumes (issue 9, "Update
 * sources"; the contract is in the writer design). Paths are bytes from end to end: a
 * name on disk or in a tar header need not be UTF-8.
 */

/** A time as the filesystem keeps it: seconds since the epoch (may be negative) and nanoseconds 0..999,999,999. */
export interface EntryTime {
  readonly sec: number;
  readonly nsec: number;
}

/** An extended attribute with its full name ("user.x", "security.capability", "system.posix_acl_access"). */
export interface EntryXattr {
  readonly name: Uint8Array;
  readonly value: Uint8Array;
}

export interface EntryMeta {
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777); never type bits. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: EntryTime;
  readonly atime?: EntryTime;
  readonly xattrs: readonly EntryXattr[];
}

/**
 * One change. `path` is absolute within the filesystem, '/'-separated and normalised: no
 * '.', '..' or empty components, no trailing '/'; the root is "/". Every component is at
 * most 255 bytes (sources refuse longer ones with BAD_UPDATE).
 *
 * `whiteout` and `opaque` name what a layer removes from the layers below it (OCI image
 * spec, "Whiteouts"), never what the same layer adds: a tar layer yields them where the
 * archive has them, possibly after entries of the same layer; a tree yields OCI ones
 * before the other entries of their directory, overlayfs ones in name order (an opaque
 * right after its directory's `dir`).
 */
export type UpdateEntry =
  | {
      readonly kind: 'file';
      readonly path: Uint8Array;
      readonly meta: EntryMeta;
      readonly size: number;
      /**
       * Bytes the host stores for the file, when known (a sparse file stores fewer than
       * its size): the space check counts no more than these, since the writer leaves
       * all-zero blocks as holes.
       */
      readonly storedBytes?: number;
      /**
       * The content, exactly `size` bytes, streamed. Valid until the next entry is taken
       * from the same iteration (tar layers are one stream); call it at most once unless `reopenable`.
       * Throws BAD_UPDATE if the bytes are not there (a truncated tar, a file that
       * changed size while the tree was read) and IO if the host refuses a read.
       */
      /** Each chunk may be reused for the next one: use it (copy it) before asking for more. */
      open(): AsyncIterable<Uint8Array>;
      /** `open` may be called more than once, each call reading the content afresh (a tree's files; not a tar stream). */
      readonly reopenable?: boolean;
    }
  | { readonly kind: 'dir'; readonly path: Uint8Array; readonly meta: EntryMeta }
  | { readonly kind: 'symlink'; readonly path: Uint8Array; readonly meta: EntryMeta; readonly target: Uint8Array }
  /** Another name for the inode written at `target`, earlier in the same update (normalised like `path`). */
  | { readonly kind: 'hardlink'; readonly path: Uint8Array; readonly target: Uint8Array }
  | { readonly kind: 'chardev' | 'blockdev'; readonly path: Uint8Array; readonly meta: EntryMeta; readonly major: number; readonly minor: number }
  | { readonly kind: 'fifo' | 'socket'; readonly path: Uint8Array; readonly meta: EntryMeta }
  /** Delete `path` and its subtree, as the layers below have it. */
  | { readonly kind: 'whiteout'; readonly path: Uint8Array }
  /** Delete every child of directory `path` that the layers below have; what this layer adds stays. */
  | { readonly kind: 'opaque'; readonly path: Uint8Array };

export type EntryKind = UpdateEntry['kind'];

/** One layer: a directory tree, or one tar archive. */
export interface UpdateLayer {
  /** The file or directory it comes from, for messages. */
  readonly name: string;
  /**
   * The layer's entries, streamed, parents before children (in a tree; a tar has the
   * archive's order). May be called again for another pass (a dry run, then the apply);
   * each call reads the source afresh. Throws BAD_UPDATE for an entry that must not be
   * applied (a '..' component, a name over 255 bytes, an unreadable archive), naming the
   * file and the entry, and IO for a file the host will not read.
   */
  entries(): AsyncIterable<UpdateEntry>;
}

/** An update: layers applied in order, each over the result of those before it. */
export interface UpdateSource {
  /** What the update is, for messages: "directory tree DIR", "3 tar layers in DIR", "tar layer FILE (zstd)". */
  readonly describe: string;
  readonly kind: 'tree' | 'tar-layers';
  layers(): AsyncIterable<UpdateLayer>;
  /**
   * Things the caller should tell the user, collected as the entries are read (e.g. that
   * getfattr is missing, so a tree's xattrs were not read); each one once.
   */
  readonly warnings: readonly string[];
}
