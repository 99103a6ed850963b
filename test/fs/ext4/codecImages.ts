/**
 * Real ext4 images for the codec round trips: a small tree made by `mkfs.ext4 -d` (files,
 * fast and slow symlinks, devices, a fifo, a fragmented sparse file whose extent tree has
 * depth 1 with 1 KiB blocks), xattrs and an ACL set by `debugfs ea_set` (in the inode and in blocks),
 * and walkers over the raw image bytes that hand every inode, group descriptor and extent
 * node to a test with the device offset it was read from.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync, openSync, writeSync, closeSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { decodeGroupDescriptor, descriptorBlockLocation, type GroupDescriptor } from '../../../src/fs/ext4/groupDescriptors.js';
import { decodeInode, type Inode } from '../../../src/fs/ext4/inode.js';
import { decodeSuperblock, type Superblock } from '../../../src/fs/ext4/superblock.js';
import type { Ext4Context } from '../../../src/fs/ext4/context.js';
import { walkExtentTree } from '../../../src/fs/ext4/extents.js';
import { EXT4_EXTENTS_FL, EXT4_FEATURE_RO_COMPAT_METADATA_CSUM, EXT4_SUPERBLOCK_OFFSET, EXT4_SUPERBLOCK_SIZE } from '../../../src/fs/ext4/constants.js';
import { debugfsWrite, makeExt4Image, posixAclXattr, seeded } from '../../../fixtures/ext4/ext4Fixtures.js';

/** Builds the small source tree under `dir`; returns its root. */
export function buildCodecTree(dir: string): string {
  const root = join(dir, 'tree');
  mkdirSync(join(root, 'sub/deeper'), { recursive: true });
  const rnd = seeded(9);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
  for (const n of [0, 1, 100, 5000, 70_000]) writeFileSync(join(root, `f${n}`), bytes(n));
  writeFileSync(join(root, 'sub/deeper/leaf'), 'leaf\n');
  symlinkSync('f100', join(root, 'fast_link'));
  symlinkSync('x'.repeat(200), join(root, 'slow_link'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  execFileSync('mknod', [join(root, 'null'), 'c', '1', '3']);
  execFileSync('mknod', [join(root, 'loop'), 'b', '7', '300']);
  // Every other 1 KiB block written: 600 extents, more than the root's 4 (depth 1).
  const fd = openSync(join(root, 'fragmented'), 'w');
  for (let i = 0; i < 600; i++) writeSync(fd, `blk${i}`, i * 2048);
  closeSync(fd);
  truncateSync(join(root, 'fragmented'), 600 * 2048);
  return root;
}

/** `mkfs.ext4 -d tree` into `image`, then xattrs of each kind and place (inode body, block, ACL). */
export function makeCodecImage(image: string, tree: string, args: readonly string[], workDir: string): void {
  makeExt4Image(image, tree, { args, sizeMiB: 8 });
  writeFileSync(join(workDir, 'big.bin'), 'v'.repeat(600));
  writeFileSync(join(workDir, 'acl.bin'), posixAclXattr([[1, 6, 0xffffffff], [2, 4, 1000], [4, 4, 0xffffffff], [8, 5, 50], [0x10, 6, 0xffffffff], [0x20, 4, 0xffffffff]]));
  debugfsWrite(
    image,
    [
      'ea_set /f1 user.comment hello',
      'ea_set /f1 security.selinux system_u:object_r:etc_t:s0',
      'ea_set /f1 trusted.md5 0123456789abcdef',
      `ea_set -f ${join(workDir, 'big.bin')} /f100 user.big`,
      'ea_set /f100 user.small v',
      'ea_set /f100 user.a x',
      'ea_set /sub user.dir yes',
      'ea_set /slow_link user.on_symlink yes',
      `ea_set -f ${join(workDir, 'acl.bin')} /f0 system.posix_acl_access`,
    ],
    workDir,
  );
}

export interface LoadedImage {
  readonly bytes: Uint8Array;
  readonly sb: Superblock;
  readonly ctx: Ext4Context;
  readonly groups: ReadonlyArray<{ readonly gd: GroupDescriptor; readonly offset: number }>;
  readonly metadataCsum: boolean;
}

/** Reads a raw image into memory and decodes its superblock and descriptors (checksums verified). */
export function loadImage(image: string): LoadedImage {
  const bytes = new Uint8Array(readFileSync(image));
  const ctx: Ext4Context = { file: image, verifyChecksums: 'error', diagnostics: [] };
  const sb = decodeSuperblock(bytes.subarray(EXT4_SUPERBLOCK_OFFSET, EXT4_SUPERBLOCK_OFFSET + EXT4_SUPERBLOCK_SIZE), ctx);
  const groups: Array<{ gd: GroupDescriptor; offset: number }> = [];
  const perBlock = sb.blockSize / sb.descSize;
  for (let g = 0; g < sb.groupCount; g++) {
    const offset = descriptorBlockLocation(sb, Math.floor(g / perBlock)) * sb.blockSize + (g % perBlock) * sb.descSize;
    groups.push({ gd: decodeGroupDescriptor(bytes.subarray(offset, offset + sb.descSize), g, sb, ctx, offset), offset });
  }
  return { bytes, sb, ctx, groups, metadataCsum: (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0 };
}

/** Every inode slot of the filesystem (used or not), decoded, with its device offset. */
export function* eachInode(img: LoadedImage): Generator<{ inode: Inode; offset: number; bytes: Uint8Array }> {
  const { sb } = img;
  for (let g = 0; g < sb.groupCount; g++) {
    const table = img.groups[g]!.gd.bg_inode_table * sb.blockSize;
    for (let i = 0; i < sb.s_inodes_per_group; i++) {
      const ino = g * sb.s_inodes_per_group + i + 1;
      if (ino > sb.s_inodes_count) return;
      const offset = table + i * sb.s_inode_size;
      const bytes = img.bytes.subarray(offset, offset + sb.s_inode_size);
      yield { inode: decodeInode(bytes, ino, sb, img.ctx, offset), offset, bytes };
    }
  }
}

/** Inodes in use (links > 0, not deleted), per the inode itself. */
export function* usedInodes(img: LoadedImage): Generator<{ inode: Inode; offset: number; bytes: Uint8Array }> {
  for (const x of eachInode(img)) if (x.inode.i_links_count > 0 && x.inode.i_dtime === 0 && x.inode.i_mode !== 0) yield x;
}

/** The extent-tree block nodes (depth >= 0, stored in their own blocks) of every extent-mapped inode. */
export async function extentBlockNodes(img: LoadedImage): Promise<Array<{ inode: Inode; pblk: number }>> {
  const out: Array<{ inode: Inode; pblk: number }> = [];
  const env = {
    ctx: img.ctx,
    blockSize: img.sb.blockSize,
    blocksCount: img.sb.s_blocks_count,
    metadataCsum: img.metadataCsum,
    readBlocks: async (b: number, n: number): Promise<Uint8Array> => img.bytes.subarray(b * img.sb.blockSize, (b + n) * img.sb.blockSize),
  };
  for (const { inode } of usedInodes(img)) {
    if (!(inode.i_flags & EXT4_EXTENTS_FL)) continue;
    for await (const _ of walkExtentTree(env, inode.ino, inode.i_block, inode.deviceOffset + 0x28, inode.csumSeed, (n) => out.push({ inode, pblk: n.pblk }))) void _;
  }
  return out;
}

/** The mkfs variants of the round trips: block size, inode size, checksum kind. */
export const CODEC_VARIANTS: ReadonlyArray<{ name: string; args: string[] }> = [
  // Small groups (-g) so that each image has backup superblocks and several descriptors.
  { name: '4k metadata_csum 64bit huge_file 256-byte inodes', args: ['-b', '4096', '-g', '512', '-N', '256'] },
  { name: '1k metadata_csum (depth-1 extent tree)', args: ['-b', '1024', '-g', '2048', '-N', '256'] },
  { name: '1k ^metadata_csum uninit_bg ^64bit 128-byte inodes', args: ['-b', '1024', '-g', '2048', '-I', '128', '-O', '^metadata_csum,uninit_bg,^64bit', '-N', '256'] },
  { name: '2k ^metadata_csum ^uninit_bg ^huge_file', args: ['-b', '2048', '-g', '1024', '-O', '^metadata_csum,^64bit,^huge_file', '-N', '256'] },
];

export function modelledInodeBytes(inodeSize: number, extraIsize: number, csum: boolean, exactSize = true): number[] {
  const out: number[] = [];
  // Without an exact size (beyond 2^53), i_size_lo and i_size_high are not modelled byte for byte.
  const add = (from: number, to: number): void => {
    for (let i = from; i < to; i++) if (exactSize || !((i >= 0x04 && i < 0x08) || (i >= 0x6c && i < 0x70))) out.push(i);
  };
  add(0x00, 0x24);
  add(0x28, 0x70);
  add(0x74, csum ? 0x7e : 0x7c);
  if (inodeSize > 128) {
    const end = 128 + extraIsize;
    add(0x80, 0x82);
    if (csum) add(0x82, Math.min(end, 0x84));
    add(0x84, Math.min(end, 0x98));
    if (end >= 0xa0) add(0x9c, 0xa0);
  }
  return out;
}
