/**
 * Block and inode bitmaps (ext4 doc, group_descr.rst and checksums.rst): one bit per
 * block (or inode) of a group; under metadata_csum their crc32c sits in the descriptor.
 */
import { ext4Crc32c } from './checksums.js';
import { checkChecksum, type Ext4Context } from './context.js';
import type { GroupDescriptor } from './groupDescriptors.js';
import type { Superblock } from './superblock.js';

/**
 * The value of bg_block_bitmap_csum for a group's block bitmap (ext4 doc, checksums.rst):
 * crc32c over the group's clusters_per_group bits, seeded with the filesystem seed, cut
 * to the 16 bits a 32-byte descriptor holds (lo and hi halves in 64-byte ones; see
 * encodeGroupDescriptor).
 */
export function blockBitmapChecksum(sb: Superblock, bitmap: Uint8Array): number {
  const c = ext4Crc32c(sb.csumSeed, bitmap.subarray(0, sb.s_clusters_per_group / 8));
  return sb.descSize >= 64 ? c : c & 0xffff;
}

/** The value of bg_inode_bitmap_csum for a group's inode bitmap: as blockBitmapChecksum, over inodes_per_group bits. */
export function inodeBitmapChecksum(sb: Superblock, bitmap: Uint8Array): number {
  const c = ext4Crc32c(sb.csumSeed, bitmap.subarray(0, sb.s_inodes_per_group / 8));
  return sb.descSize >= 64 ? c : c & 0xffff;
}

/** Verifies a group's block bitmap checksum (metadata_csum). Throws BAD_CHECKSUM (or warns). */
export function verifyBlockBitmap(sb: Superblock, ctx: Ext4Context, group: number, gd: GroupDescriptor, bitmap: Uint8Array): void {
  checkChecksum(ctx, `ext4.block_bitmap[${group}]`, gd.bg_block_bitmap * sb.blockSize, gd.bg_block_bitmap_csum, blockBitmapChecksum(sb, bitmap));
}

/** Verifies a group's inode bitmap checksum (metadata_csum). Throws BAD_CHECKSUM (or warns). */
export function verifyInodeBitmap(sb: Superblock, ctx: Ext4Context, group: number, gd: GroupDescriptor, bitmap: Uint8Array): void {
  checkChecksum(ctx, `ext4.inode_bitmap[${group}]`, gd.bg_inode_bitmap * sb.blockSize, gd.bg_inode_bitmap_csum, inodeBitmapChecksum(sb, bitmap));
}

/** Sets bit `i` (marks block or inode `i` of the group used). */
export function setBit(bitmap: Uint8Array, i: number): void {
  bitmap[i >>> 3] = bitmap[i >>> 3]! | (1 << (i & 7));
}

/** Clears bit `i` (marks block or inode `i` of the group free). */
export function clearBit(bitmap: Uint8Array, i: number): void {
  bitmap[i >>> 3] = bitmap[i >>> 3]! & ~(1 << (i & 7));
}

/** Bits clear among the first `nbits` of `bitmap` (free blocks or inodes of a group). */
export function countClear(bitmap: Uint8Array, nbits: number): number {
  let set = 0;
  const whole = nbits >>> 3;
  for (let i = 0; i < whole; i++) {
    let b = bitmap[i]!;
    b = b - ((b >>> 1) & 0x55);
    b = (b & 0x33) + ((b >>> 2) & 0x33);
    set += (b + (b >>> 4)) & 0x0f;
  }
  for (let i = whole * 8; i < nbits; i++) if (testBit(bitmap, i)) set++;
  return nbits - set;
}

/** Whether bit `i` is set. */
export function testBit(bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >>> 3]! & (1 << (i & 7))) !== 0;
}

/** Runs of clear (free) bits among the first `nbits`, as [start, length] pairs. */
export function clearRuns(bitmap: Uint8Array, nbits: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = 0;
  while (i < nbits) {
    const byte = bitmap[i >>> 3]!;
    if ((i & 7) === 0 && byte === 0xff) {
      i += 8;
      continue;
    }
    if (byte & (1 << (i & 7))) {
      i++;
      continue;
    }
    const start = i;
    while (i < nbits) {
      const b = bitmap[i >>> 3]!;
      if ((i & 7) === 0 && b === 0 && i + 8 <= nbits) {
        i += 8;
        continue;
      }
      if (b & (1 << (i & 7))) break;
      i++;
    }
    out.push([start, i - start]);
  }
  return out;
}
