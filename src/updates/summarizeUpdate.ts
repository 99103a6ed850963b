/**
 * What an update holds, counted in one pass over its entries without reading file
 * content (a tar layer is still decompressed and walked): for `apply --dry-run` and for
 * checking free space before anything is written.
 */
import type { UpdateEntry, UpdateSource } from './UpdateEntry.js';

export interface UpdateSummary {
  readonly layers: number;
  readonly entries: number;
  readonly files: number;
  readonly dirs: number;
  readonly symlinks: number;
  readonly hardlinks: number;
  /** Character and block devices. */
  readonly devices: number;
  /** Fifos and sockets. */
  readonly specials: number;
  readonly whiteouts: number;
  readonly opaques: number;
  /** Sum of regular files' sizes. */
  readonly fileBytes: number;
  /** Extended attributes on all entries. */
  readonly xattrs: number;
  /** `roughBlocksNeeded` summed over the entries, for the block size asked for (0 when none was). */
  readonly roughBlocks: number;
}

/** ext4 keeps a symlink target shorter than this in the inode (a "fast" symlink: i_block's 60 bytes). */
const FAST_SYMLINK_MAX = 59;

/**
 * A rough count of the filesystem blocks an entry needs: a file's bytes (no more than
 * the host stores of a sparse file) rounded up to blocks, one block for a directory and for a slow symlink; nothing for extent-tree
 * blocks, xattr blocks, inline data, or what a replaced file frees. A lower estimate
 * for a NO_SPACE check before writing, not a promise.
 */
export function roughBlocksNeeded(entry: UpdateEntry, blockSize: number): number {
  switch (entry.kind) {
    case 'file':
      // A sparse file needs no more than what the host stores of it (its holes stay holes).
      return Math.ceil(Math.min(entry.size, entry.storedBytes ?? entry.size) / blockSize);
    case 'dir':
      return 1;
    case 'symlink':
      return entry.target.length > FAST_SYMLINK_MAX ? 1 : 0;
    default:
      return 0;
  }
}

/** Counts the entries of every layer of `source` (one full pass; BAD_UPDATE and IO errors pass through). */
export async function summarizeUpdate(source: UpdateSource, options: { blockSize?: number } = {}): Promise<UpdateSummary> {
  const c = { layers: 0, entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, specials: 0, whiteouts: 0, opaques: 0, fileBytes: 0, xattrs: 0, roughBlocks: 0 };
  for await (const layer of source.layers()) {
    c.layers++;
    for await (const e of layer.entries()) {
      c.entries++;
      if (options.blockSize !== undefined) c.roughBlocks += roughBlocksNeeded(e, options.blockSize);
      if ('meta' in e) c.xattrs += e.meta.xattrs.length;
      switch (e.kind) {
        case 'file':
          c.files++;
          c.fileBytes += e.size;
          break;
        case 'dir':
          c.dirs++;
          break;
        case 'symlink':
          c.symlinks++;
          break;
        case 'hardlink':
          c.hardlinks++;
          break;
        case 'chardev':
        case 'blockdev':
          c.devices++;
          break;
        case 'fifo':
        case 'socket':
          c.specials++;
          break;
        case 'whiteout':
          c.whiteouts++;
          break;
        case 'opaque':
          c.opaques++;
          break;
      }
    }
  }
  return c;
}
