/**
 * The encoders against real images: every inode, group descriptor, superblock, extent
 * node and xattr area/block of images made by mkfs.ext4 -d and debugfs re-encodes to the
 * bytes on disk (with the modelled fields scrambled in the starting bytes, so the fields
 * alone carry them), across block sizes, inode sizes and checksum kinds. Then each
 * writer-facing encoder changes a structure in an image and the strict e2fsck oracle
 * holds, with debugfs showing the change.
 */
import { closeSync, copyFileSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { encodeInode } from '../../../src/fs/ext4/inode.js';
import { decodeExtentNode, encodeExtentNode, extentNodeCapacity } from '../../../src/fs/ext4/extents.js';
import { fsReader } from '../../../src/fs/ext4/context.js';
import { decodeSuperblock, encodeBackupSuperblock, encodeSuperblock } from '../../../src/fs/ext4/superblock.js';
import { encodeGroupDescriptor, groupFirstBlock, groupHasSuper, hasGroupChecksums } from '../../../src/fs/ext4/groupDescriptors.js';
import { decodeAcl, decodeInodeXattrs, decodeXattrBlock, encodeAcl, encodeInodeXattrs, encodeXattrBlock, type Xattr } from '../../../src/fs/ext4/xattr.js';
import { blockBitmapChecksum, inodeBitmapChecksum, setBit } from '../../../src/fs/ext4/bitmaps.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { run, sh } from '../../helpers/run.js';
import { debugfsWrite } from '../../../fixtures/ext4/ext4Fixtures.js';
import { debugfsBatch, parseDumpExtents, parseStat } from './debugfsOracle.js';
import { buildCodecTree, CODEC_VARIANTS, eachInode, extentBlockNodes, loadImage, makeCodecImage, usedInodes } from './codecImages.js';

const tmp = useTempDir('imgdedup-codecs-');
const images: Record<string, string> = {};

beforeAll(() => {
  const tree = buildCodecTree(tmp());
  CODEC_VARIANTS.forEach((v, i) => {
    const image = join(tmp(), `v${i}.img`);
    makeCodecImage(image, tree, v.args, tmp());
    images[v.name] = image;
  });
}, 120_000);

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Offsets of the bytes encodeInode models (all but osd1, obso_faddr, l_i_reserved, i_version_hi and the xattr area). */
function modelledInodeBytes(inodeSize: number, extraIsize: number, csum: boolean): number[] {
  const out: number[] = [];
  const add = (from: number, to: number): void => {
    for (let i = from; i < to; i++) out.push(i);
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

/** Overwrites the header and the modelled bytes of each entry (all but an index's ei_unused). */
function scrambleEntries(b: Uint8Array, entries: number, depth: number): void {
  b.fill(0xa5, 0, 12);
  for (let i = 0; i < entries; i++) b.fill(0xa5, 12 + i * 12, 12 + i * 12 + (depth > 0 ? 10 : 12));
}

describe.each(CODEC_VARIANTS.map((v) => v.name))('%s', (name) => {
  test('every inode re-encodes to its bytes from its decoded fields', () => {
    const img = loadImage(images[name]!);
    let n = 0;
    let nonZero = 0;
    for (const { inode, bytes } of eachInode(img)) {
      const scrambled = bytes.slice();
      // Whether an all-zero inode has a checksum at all (unused: none; reserved: one) is kept from the starting bytes.
      const zero = bytes.every((b, i) => b === 0 || i === 0x7c || i === 0x7d || i === 0x82 || i === 0x83);
      for (const i of modelledInodeBytes(img.sb.s_inode_size, inode.i_extra_isize, img.metadataCsum && !zero)) scrambled[i] = (i * 37 + 11) & 0xff;
      const out = encodeInode(inode, img.sb, { raw: scrambled });
      expect(Buffer.from(out).toString('hex'), `inode ${inode.ino}`).toBe(Buffer.from(bytes).toString('hex'));
      n++;
      if (bytes.some((b) => b !== 0)) nonZero++;
    }
    expect(n).toBe(img.sb.s_inodes_count);
    expect(nonZero).toBeGreaterThan(15);
  });

  test('the superblock re-encodes to its bytes; backups equal what mkfs wrote but for the free counts', () => {
    const img = loadImage(images[name]!);
    const bytes = img.bytes.subarray(1024, 2048);
    const scrambled = bytes.slice();
    // The fields encodeSuperblock writes, and the checksum.
    const written: Array<[number, number]> = [[0x0c, 8], [0x2c, 8], [0x3a, 4], [0x5a, 14], [0xe8, 4], [0x160, 4], [0x178, 8], [0x274, 2]];
    if (img.sb.s_feature_incompat & 0x80) written.push([0x158, 4]);
    if (img.metadataCsum) written.push([0x3fc, 4]);
    for (const [off, len] of written) scrambled.fill(0x5c, off, off + len);
    expect(Buffer.from(encodeSuperblock({ ...img.sb, raw: scrambled })).toString('hex')).toBe(Buffer.from(bytes).toString('hex'));
    let backups = 0;
    for (let g = 1; g < img.sb.groupCount; g++) {
      if (!groupHasSuper(img.sb, g)) continue;
      const at = groupFirstBlock(img.sb, g) * img.sb.blockSize;
      const onDisk = img.bytes.subarray(at, at + 1024);
      const backupSb = decodeSuperblock(onDisk, img.ctx);
      // mkfs wrote the backups before the tree: their free counts are mkfs's, everything else is the primary's.
      const mine = encodeBackupSuperblock({ ...img.sb, s_free_blocks_count: backupSb.s_free_blocks_count, s_free_inodes_count: backupSb.s_free_inodes_count, s_wtime: backupSb.s_wtime, s_kbytes_written: backupSb.s_kbytes_written, s_mtime: backupSb.s_mtime, s_state: backupSb.s_state }, g);
      expect(Buffer.from(mine).toString('hex'), `backup in group ${g}`).toBe(Buffer.from(onDisk).toString('hex'));
      backups++;
    }
    expect(backups).toBeGreaterThan(0);
  });

  test('every group descriptor re-encodes to its bytes; bitmap checksums equal the stored ones', () => {
    const img = loadImage(images[name]!);
    const { sb } = img;
    let checked = 0;
    img.groups.forEach(({ gd, offset }, g) => {
      const bytes = img.bytes.subarray(offset, offset + sb.descSize);
      const scrambled = bytes.slice();
      scrambled.fill(0x3c, 0, 0x20);
      if (sb.descSize >= 64) scrambled.fill(0x3c, 0x20, 0x3c);
      expect(Buffer.from(encodeGroupDescriptor({ ...gd, raw: scrambled }, g, sb)).toString('hex'), `group ${g}`).toBe(Buffer.from(bytes).toString('hex'));
      if (img.metadataCsum) {
        const bb = img.bytes.subarray(gd.bg_block_bitmap * sb.blockSize, (gd.bg_block_bitmap + 1) * sb.blockSize);
        const ib = img.bytes.subarray(gd.bg_inode_bitmap * sb.blockSize, (gd.bg_inode_bitmap + 1) * sb.blockSize);
        // An uninitialised bitmap (BLOCK_UNINIT, INODE_UNINIT) is not on disk and has no checksum.
        if (!(gd.bg_flags & 2)) expect(blockBitmapChecksum(sb, bb), `block bitmap ${g}`).toBe(gd.bg_block_bitmap_csum);
        if (!(gd.bg_flags & 1)) expect(inodeBitmapChecksum(sb, ib), `inode bitmap ${g}`).toBe(gd.bg_inode_bitmap_csum);
        checked++;
      }
    });
    expect(checked).toBe(img.metadataCsum ? sb.groupCount : 0);
  });

  test('every in-inode xattr area and xattr block re-encodes to its bytes', () => {
    const img = loadImage(images[name]!);
    const { sb } = img;
    let areas = 0;
    let blocks = 0;
    let acls = 0;
    const checkAcls = (xs: readonly Xattr[]): void => {
      for (const x of xs.filter((x) => x.nameIndex === 2 || x.nameIndex === 3)) {
        expect(hex(encodeAcl(decodeAcl(x.value, img.ctx, 'acl', 0)))).toBe(hex(x.value));
        acls++;
      }
    };
    for (const { inode } of usedInodes(img)) {
      const xs = decodeInodeXattrs(inode.raw, inode.i_extra_isize, img.ctx, inode.ino, inode.deviceOffset);
      checkAcls(xs);
      if (xs.length > 0) {
        const start = 128 + inode.i_extra_isize;
        expect(Buffer.from(encodeInodeXattrs(xs, sb.s_inode_size - start)).toString('hex'), `inode ${inode.ino}`).toBe(Buffer.from(inode.raw.subarray(start)).toString('hex'));
        areas++;
      }
      if (inode.i_file_acl !== 0) {
        const bytes = img.bytes.subarray(inode.i_file_acl * sb.blockSize, (inode.i_file_acl + 1) * sb.blockSize);
        const { header, xattrs } = decodeXattrBlock(bytes, inode.i_file_acl, img.ctx, { metadataCsum: img.metadataCsum, csumSeed: sb.csumSeed });
        checkAcls(xattrs);
        const out = encodeXattrBlock(xattrs, { refcount: header.h_refcount, blockNo: inode.i_file_acl, seed: sb.csumSeed, metadataCsum: img.metadataCsum, blockSize: sb.blockSize, zeroBlockHash: header.h_hash === 0 });
        expect(Buffer.from(out).toString('hex'), `xattr block ${inode.i_file_acl}`).toBe(Buffer.from(bytes).toString('hex'));
        blocks++;
      }
    }
    expect(areas).toBeGreaterThan(sb.s_inode_size > 128 ? 2 : -1);
    expect(blocks).toBeGreaterThan(0);
    expect(acls).toBe(1);
  });

  test('every extent node (root and block) re-encodes to its bytes', async () => {
    const img = loadImage(images[name]!);
    let roots = 0;
    for (const { inode } of usedInodes(img)) {
      if (!(inode.i_flags & 0x80000)) continue;
      const node = decodeExtentNode(fsReader(img.ctx, inode.i_block, 'root', 0), 4);
      // libext2fs leaves stale entries past eh_entries (after a split): those come from raw.
      const scrambled = inode.i_block.slice();
      scrambleEntries(scrambled, node.header.eh_entries, node.header.eh_depth);
      const out = encodeExtentNode(node, 4, { raw: scrambled });
      expect(Buffer.from(out).toString('hex'), `root of ${inode.ino}`).toBe(Buffer.from(inode.i_block).toString('hex'));
      roots++;
    }
    expect(roots).toBeGreaterThan(5);
    const nodes = await extentBlockNodes(img);
    const bs = img.sb.blockSize;
    for (const { inode, pblk } of nodes) {
      const bytes = img.bytes.subarray(pblk * bs, (pblk + 1) * bs);
      const node = decodeExtentNode(fsReader(img.ctx, bytes, 'node', pblk * bs), extentNodeCapacity(bs));
      const scrambled = bytes.slice();
      scrambleEntries(scrambled, node.header.eh_entries, node.header.eh_depth);
      if (img.metadataCsum) scrambled.fill(0xa5, 12 + node.header.eh_max * 12, 12 + node.header.eh_max * 12 + 4);
      const out = encodeExtentNode(node, extentNodeCapacity(bs), { raw: scrambled, ...(img.metadataCsum ? { tail: { seed: inode.csumSeed } } : {}) });
      expect(Buffer.from(out).equals(Buffer.from(bytes)), `extent block ${pblk}`).toBe(true);
    }
    if (bs === 1024) expect(nodes.length).toBeGreaterThan(5);
  });
});

/** Writes `data` into the image file at byte `offset`. */
function writeAt(image: string, offset: number, data: Uint8Array): void {
  const fd = openSync(image, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** The inode number of `path`, by debugfs. */
function inodeOf(image: string, path: string): number {
  return parseStat(debugfsBatch(image, [`stat ${path}`])[0]!).ino;
}

describe.each(CODEC_VARIANTS.map((v, i) => [v.name, i] as const))('writing with the encoders keeps e2fsck strictly clean: %s', (name, i) => {
  const copy = (tag: string): string => {
    const out = join(tmp(), `v${i}-${tag}.img`);
    copyFileSync(images[name]!, out);
    return out;
  };

  test('encodeInode: new mode, 32-bit uid and gid, times past 2038 with nanoseconds', () => {
    const image = copy('inode');
    const ino = inodeOf(image, '/f5000');
    const img = loadImage(image);
    const x = [...usedInodes(img)].find((u) => u.inode.ino === ino)!;
    const mtime = { sec: 2 ** 32 + 5, nsec: 123_456_789 };
    const out = encodeInode({ ...x.inode, i_mode: 0o100640, i_uid: 1_234_567, i_gid: 7_654_321, mtime, atime: { sec: 1_700_000_000, nsec: 5 } }, img.sb, { raw: x.inode.raw });
    writeAt(image, x.offset, out);
    expectStrictFsckClean(image);
    const st = parseStat(debugfsBatch(image, ['stat /f5000'])[0]!);
    expect(st.mode & 0o7777).toBe(0o640);
    expect([st.uid, st.gid]).toEqual([1_234_567, 7_654_321]);
    if (img.sb.s_inode_size > 128) {
      expect(st.mtime).toEqual(mtime);
      expect(st.atime).toEqual({ sec: 1_700_000_000, nsec: 5 });
    } else {
      // No extra time fields in a 128-byte inode: clamped to 2^31 - 1 as the kernel clamps, no nanoseconds.
      expect(st.mtime).toEqual({ sec: 2 ** 31 - 1, nsec: 0 });
    }
  });

  test('encodeInode: an i_blocks in filesystem blocks (huge_file + EXT4_HUGE_FILE_FL) round-trips, and re-encoded canonically in sectors', () => {
    const image = copy('huge');
    const before = loadImage(image);
    if (!(before.sb.s_feature_ro_compat & 0x8)) return; // no huge_file: the flag means nothing
    const ino = inodeOf(image, '/f70000');
    const sectors = [...usedInodes(before)].find((u) => u.inode.ino === ino)!.inode.i_blocks;
    const unit = before.sb.blockSize / 512;
    // debugfs writes the kernel's other valid form: the flag and the count in filesystem blocks.
    debugfsWrite(image, [`sif <${ino}> flags 0xc0000`, `sif <${ino}> blocks ${sectors / unit}`]);
    expectStrictFsckClean(image);
    const img = loadImage(image);
    const x = [...usedInodes(img)].find((u) => u.inode.ino === ino)!;
    expect([x.inode.i_blocks, x.inode.i_blocks_raw, x.inode.hugeFileUnits]).toEqual([sectors, sectors / unit, true]);
    expect(hex(encodeInode(x.inode, img.sb, { raw: x.inode.raw }))).toBe(hex(x.bytes));
    // Without the on-disk form, the encoder picks ext4_inode_blocks_set's: sectors, flag cleared.
    writeAt(image, x.offset, encodeInode({ ...x.inode, i_blocks_raw: undefined, hugeFileUnits: undefined }, img.sb, { raw: x.inode.raw }));
    expectStrictFsckClean(image);
    const st = parseStat(debugfsBatch(image, [`stat <${ino}>`])[0]!);
    expect([st.flags, st.blockcount]).toEqual([0x80000, sectors]);
  });

  test('encodeXattrBlock and encodeInodeXattrs: one more xattr in a block and in the inode body', () => {
    const image = copy('xattr');
    const img = loadImage(image);
    const { sb } = img;
    const f100 = [...usedInodes(img)].find((u) => u.inode.ino === inodeOf(image, '/f100'))!.inode;
    const blockNo = f100.i_file_acl;
    const bytes = img.bytes.subarray(blockNo * sb.blockSize, (blockNo + 1) * sb.blockSize);
    const { header, xattrs } = decodeXattrBlock(bytes, blockNo, img.ctx, { metadataCsum: img.metadataCsum, csumSeed: sb.csumSeed });
    // A non-ASCII name: its hash must be the kernel's (unsigned bytes).
    const added = { name: Buffer.from('user.ädded'), value: Buffer.from('a value of 21 bytes.!') };
    writeAt(image, blockNo * sb.blockSize, encodeXattrBlock([added, ...xattrs], { refcount: header.h_refcount, blockNo, seed: sb.csumSeed, metadataCsum: img.metadataCsum, blockSize: sb.blockSize }));
    const f1 = [...usedInodes(img)].find((u) => u.inode.ino === inodeOf(image, '/sub'))!;
    if (sb.s_inode_size > 128) {
      const inBody = decodeInodeXattrs(f1.inode.raw, f1.inode.i_extra_isize, img.ctx, f1.inode.ino, f1.offset);
      expect(inBody.length).toBe(1);
      const area = encodeInodeXattrs([...inBody, { name: Buffer.from('security.test'), value: Buffer.from('xyz') }], sb.s_inode_size - 128 - f1.inode.i_extra_isize);
      writeAt(image, f1.offset, encodeInode({ ...f1.inode, xattrArea: area }, sb, { raw: f1.inode.raw }));
    }
    expectStrictFsckClean(image);
    const [got, list] = debugfsBatch(image, ['ea_get /f100 user.ädded', 'ea_list /sub']);
    expect(got).toContain('(21) = "a value of 21 bytes.!"');
    if (sb.s_inode_size > 128) expect(list).toContain('security.test (3) = "xyz"');
  });

  test('encodeExtentNode: every node re-encoded from its fields, one extent made unwritten', async () => {
    const image = copy('extents');
    const img = loadImage(image);
    const { sb } = img;
    const fragIno = inodeOf(image, '/fragmented');
    const before = parseDumpExtents(debugfsBatch(image, ['dump_extents /fragmented'])[0]!);
    const nodes = await extentBlockNodes(img);
    const cap = extentNodeCapacity(sb.blockSize);
    let flipped = false;
    for (const { inode, pblk } of nodes) {
      const node = decodeExtentNode(fsReader(img.ctx, img.bytes.subarray(pblk * sb.blockSize, (pblk + 1) * sb.blockSize), 'node', 0), cap);
      let extents = node.extents;
      if (inode.ino === fragIno && !flipped && extents.length > 0) {
        extents = [{ ...extents[0]!, unwritten: true }, ...extents.slice(1)];
        flipped = true;
      }
      const out = encodeExtentNode({ ...node, extents, raw: undefined }, cap, { size: sb.blockSize, ...(img.metadataCsum ? { tail: { seed: inode.csumSeed } } : {}) });
      writeAt(image, pblk * sb.blockSize, out);
    }
    for (const { inode, offset } of usedInodes(img)) {
      if (!(inode.i_flags & 0x80000)) continue;
      const root = decodeExtentNode(fsReader(img.ctx, inode.i_block, 'root', 0), 4);
      let extents = root.extents;
      if (inode.ino === fragIno && !flipped) {
        extents = [{ ...extents[0]!, unwritten: true }, ...extents.slice(1)];
        flipped = true;
      }
      const i_block = encodeExtentNode({ ...root, extents, raw: undefined }, 4);
      writeAt(image, offset, encodeInode({ ...inode, i_block }, sb, { raw: inode.raw }));
    }
    expect(flipped).toBe(true);
    expectStrictFsckClean(image);
    const after = parseDumpExtents(debugfsBatch(image, ['dump_extents /fragmented'])[0]!);
    expect(after.nodes).toEqual(before.nodes);
    expect(after.leaves).toEqual(before.leaves.map((l, k) => (k === 0 ? { ...l, unwritten: true } : l)));
  });

  test('encodeSuperblock, encodeBackupSuperblock, encodeGroupDescriptor, inodeBitmapChecksum: new times, backups rewritten, an INODE_UNINIT group initialised', () => {
    const image = copy('super');
    const img = loadImage(image);
    const { sb } = img;
    const sb2 = { ...sb, s_wtime: 1_650_000_000, s_mtime: 1_640_000_000, s_kbytes_written: 123_456 };
    writeAt(image, 1024, encodeSuperblock(sb2));
    const backups: number[] = [];
    for (let g = 1; g < sb.groupCount; g++) {
      if (!groupHasSuper(sb, g)) continue;
      writeAt(image, groupFirstBlock(sb, g) * sb.blockSize, encodeBackupSuperblock(sb2, g));
      backups.push(groupFirstBlock(sb, g));
    }
    // A group whose inode bitmap was never written: write it (all free, padding bits set) and clear INODE_UNINIT.
    const g = img.groups.findIndex(({ gd }) => (gd.bg_flags & 1) !== 0);
    if (g >= 0) {
      const { gd, offset } = img.groups[g]!;
      const bitmap = new Uint8Array(sb.blockSize);
      for (let b = sb.s_inodes_per_group; b < sb.blockSize * 8; b++) setBit(bitmap, b);
      writeAt(image, gd.bg_inode_bitmap * sb.blockSize, bitmap);
      const gd2 = { ...gd, bg_flags: gd.bg_flags & ~1, bg_inode_bitmap_csum: img.metadataCsum ? inodeBitmapChecksum(sb, bitmap) : gd.bg_inode_bitmap_csum };
      writeAt(image, offset, encodeGroupDescriptor(gd2, g, sb));
    }
    expect(g >= 0).toBe(hasGroupChecksums(sb));
    expectStrictFsckClean(image);
    const header = sh('dumpe2fs', ['-h', image], { env: { TZ: 'UTC' } });
    expect(header).toMatch(/Last write time:\s+Fri Apr 15 05:20:00 2022/);
    expect(header).toMatch(/Lifetime writes:\s+121 MB/);
    // Each backup, read by dumpe2fs as the superblock (its checksum verified), says what the primary says.
    expect(backups.length).toBeGreaterThan(0);
    const withoutChecksum = (t: string): string => t.split('\n').filter((l) => !/^Checksum:/.test(l)).join('\n');
    for (const b of backups) {
      const r = run('dumpe2fs', ['-o', `superblock=${b}`, '-o', `blocksize=${sb.blockSize}`, '-h', image], { env: { TZ: 'UTC' } });
      expect(r.stderr, `backup at ${b}`).not.toMatch(/does not match|bad|invalid/i);
      expect(withoutChecksum(r.stdout), `backup at ${b}`).toBe(withoutChecksum(header));
    }
  });
});
