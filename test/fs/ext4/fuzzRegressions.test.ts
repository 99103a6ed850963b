/**
 * Regressions found by the ext4 mutation fuzzer (test/fuzz/ext4.fuzz.test.ts), each with
 * its failing bytes built here from the spec (ext4 doc, blockmap.rst and directory.rst).
 */
import { describe, expect, it } from 'vitest';
import { crc32c } from '@node-rs/crc32';
import { walkBlockMap } from '../../../src/fs/ext4/blockMap.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { MemoryDevice } from '../../diskimage/partition/MemoryDevice.js';
import { decodeDxRoot } from '../../../src/fs/ext4/directory.js';
import type { Ext4Context } from '../../../src/fs/ext4/context.js';
import type { ExtentWalkEnv, FileExtent } from '../../../src/fs/ext4/extents.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const BS = 1024;
const ctx = (): Ext4Context => ({ file: 'fs.img', verifyChecksums: 'error', diagnostics: [] });

/** An ExtentWalkEnv over `blocks` in-memory 1 KiB blocks, counting reads. */
function memEnv(blocks: Uint8Array, blocksCount: number): ExtentWalkEnv & { reads: number } {
  const env = {
    ctx: ctx(),
    blockSize: BS,
    blocksCount,
    metadataCsum: false,
    reads: 0,
    readBlocks: async (b: number, n: number): Promise<Uint8Array> => {
      env.reads++;
      return blocks.slice(b * BS, (b + n) * BS);
    },
  };
  return env;
}

async function collect(it: AsyncIterable<FileExtent>): Promise<FileExtent[]> {
  const out: FileExtent[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('block maps (found as a hang: 16M runs from one self-referencing indirect block)', () => {
  it('an indirect block named twice (a triple-indirect block full of its own number) is CORRUPT_IMAGE, after few reads', async () => {
    const disk = new Uint8Array(64 * BS);
    const dv = new DataView(disk.buffer);
    for (let i = 0; i < BS / 4; i++) dv.setUint32(30 * BS + i * 4, 30, true);
    const iBlock = new Uint8Array(60);
    new DataView(iBlock.buffer).setUint32(14 * 4, 30, true); // i_block[EXT4_TIND_BLOCK]
    const env = memEnv(disk, 64);
    // i_blocks as a corrupt inode may carry it: far more than the filesystem has.
    await expectImgError(() => collect(walkBlockMap(env, 12, iBlock, 5000, 2 ** 40)), 'CORRUPT_IMAGE', {
      file: 'fs.img',
      structure: 'ext4.inode[12].block_map',
      offset: 30 * BS,
      actual: 30,
    });
    expect(env.reads).toBeLessThanOrEqual(2);
  });

  it('a map naming more blocks than the filesystem has is CORRUPT_IMAGE even when i_blocks allows it', async () => {
    const disk = new Uint8Array(64 * BS);
    const dv = new DataView(disk.buffer);
    // One indirect block whose 256 pointers all name data block 20: 257 blocks in a 64-block filesystem.
    for (let i = 0; i < BS / 4; i++) dv.setUint32(10 * BS + i * 4, 20, true);
    const iBlock = new Uint8Array(60);
    new DataView(iBlock.buffer).setUint32(12 * 4, 10, true); // i_block[EXT4_IND_BLOCK]
    await expectImgError(() => collect(walkBlockMap(memEnv(disk, 64), 12, iBlock, 5000, 2 ** 40)), 'CORRUPT_IMAGE', {
      structure: 'ext4.inode[12].block_map',
      offset: 10 * BS + 63 * 4,
      expected: '<= 64',
    });
  });

  it('a legitimate map with indirect and double-indirect blocks still reads', async () => {
    const disk = new Uint8Array(1024 * BS);
    const dv = new DataView(disk.buffer);
    const iBlock = new Uint8Array(60);
    const ib = new DataView(iBlock.buffer);
    for (let i = 0; i < 12; i++) ib.setUint32(i * 4, 100 + i, true);
    ib.setUint32(12 * 4, 200, true);
    for (let i = 0; i < 256; i++) dv.setUint32(200 * BS + i * 4, 300 + i, true);
    ib.setUint32(13 * 4, 600, true);
    dv.setUint32(600 * BS, 601, true);
    dv.setUint32(601 * BS, 700, true);
    dv.setUint32(601 * BS + 4, 701, true);
    const runs = await collect(walkBlockMap(memEnv(disk, 1024), 12, iBlock, 0, 12 + 1 + 256 + 2 + 2));
    expect(runs).toEqual([
      { lblk: 0, pblk: 100, len: 12, unwritten: false },
      { lblk: 12, pblk: 300, len: 256, unwritten: false },
      { lblk: 268, pblk: 700, len: 2, unwritten: false },
    ]);
  });
});

describe('htree checksums (found as false BAD_CHECKSUM on every e2fsck-clean metadata_csum htree)', () => {
  /** The kernel's crc32c (no final inversion) chained from `seed`. */
  const raw = (seed: number, d: Uint8Array): number => ~crc32c(d, ~seed >>> 0) >>> 0;
  const u32 = (v: number): Uint8Array => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return b;
  };

  /** A 4 KiB dx_root with `count` entries and a dx_tail whose dt_reserved is `reserved`. */
  function dxRoot(count: number, reserved: number, seed: number): Uint8Array {
    const bs = 4096;
    const b = new Uint8Array(bs);
    const v = new DataView(b.buffer);
    v.setUint32(0, 12, true); // '.' inode
    v.setUint16(4, 12, true);
    b[6] = 1;
    b[7] = 2;
    b[8] = 0x2e;
    v.setUint32(12, 2, true); // '..'
    v.setUint16(16, bs - 12, true);
    b[18] = 2;
    b[19] = 2;
    b[20] = 0x2e;
    b[21] = 0x2e;
    b[0x1d] = 8; // info_length
    b[0x1c] = 1; // half_md4
    const limit = (bs - 0x20 - 8) / 8;
    v.setUint16(0x20, limit, true);
    v.setUint16(0x22, count, true);
    for (let i = 0; i < count; i++) {
      if (i > 0) v.setUint32(0x20 + i * 8, i * 0x10000000, true);
      v.setUint32(0x24 + i * 8, i + 1, true);
    }
    const tail = 0x20 + limit * 8;
    v.setUint32(tail, reserved, true);
    // Kernel ext4_dx_csum: crc32c(inode seed, block up to the last used entry), then the whole
    // 8-byte dx_tail with dt_checksum as zero.
    const csum = raw(raw(raw(seed, b.subarray(0, 0x20 + count * 8)), b.subarray(tail, tail + 4)), new Uint8Array(4));
    v.setUint32(tail + 4, csum, true);
    return b;
  }

  const seed = raw(raw(0x12345678, u32(12)), u32(0));
  const opts = { metadataCsum: true, inodeCsumSeed: seed, largedir: false, dirBlocks: 8 };

  it('accepts the checksum the kernel and e2fsprogs write', () => {
    const r = decodeDxRoot(dxRoot(5, 0, seed), ctx(), 'ext4.dx_root[12]', 4096 * 10, 4096, opts);
    expect(r.node.blocks).toEqual([1, 2, 3, 4, 5]);
  });

  it('rejects a changed dt_checksum or dt_reserved with BAD_CHECKSUM at the checksum', async () => {
    const good = dxRoot(3, 0, seed);
    const tail = 0x20 + ((4096 - 0x20 - 8) / 8) * 8;
    for (const at of [tail, tail + 4]) {
      const bad = good.slice();
      bad[at] = bad[at]! ^ 1;
      await expectImgError(() => decodeDxRoot(bad, ctx(), 'ext4.dx_root[12]', 4096 * 10, 4096, opts), 'BAD_CHECKSUM', {
        structure: 'ext4.dx_root[12].dt_checksum',
        offset: 4096 * 10 + tail + 4,
      });
    }
  });
});

describe('the block count against the device (found as 500 MiB for 2M group descriptors; 2^40 blocks ran out of memory)', () => {
  /** A 64 KiB device holding a minimal ext4 (ext4 doc, super.rst/group_descr.rst): 4 KiB blocks, 64bit, one group. */
  function tinyFs(blocksLo: number, blocksHi: number): Uint8Array {
    const d = new Uint8Array(16 * 4096);
    const v = new DataView(d.buffer, 1024);
    v.setUint32(0x00, 16, true); // s_inodes_count
    v.setUint32(0x04, blocksLo, true); // s_blocks_count_lo
    v.setUint32(0x14, 0, true); // s_first_data_block
    v.setUint32(0x18, 2, true); // s_log_block_size: 4 KiB
    v.setUint32(0x20, 32768, true); // s_blocks_per_group
    v.setUint32(0x24, 32768, true); // s_clusters_per_group
    v.setUint32(0x28, 16, true); // s_inodes_per_group
    v.setUint16(0x38, 0xef53, true); // s_magic
    v.setUint16(0x3a, 1, true); // s_state: clean
    v.setUint32(0x4c, 1, true); // s_rev_level: dynamic
    v.setUint32(0x54, 11, true); // s_first_ino
    v.setUint16(0x58, 256, true); // s_inode_size
    v.setUint32(0x60, 0x2 | 0x10 | 0x80, true); // filetype, meta_bg, 64bit
    v.setUint16(0xfe, 64, true); // s_desc_size
    v.setUint32(0x150, blocksHi, true); // s_blocks_count_hi
    const g = new DataView(d.buffer, 4096);
    g.setUint32(0x00, 2, true); // bg_block_bitmap
    g.setUint32(0x04, 3, true); // bg_inode_bitmap
    g.setUint32(0x08, 4, true); // bg_inode_table
    return d;
  }

  it('a filesystem that fits its device opens', async () => {
    const fs = await Ext4Fs.open(new MemoryDevice(tinyFs(16, 0)), { file: 'fs.img' });
    expect(fs.superblock.groupCount).toBe(1);
  });

  it.each([
    [17, 0],
    [0, 0x100],
  ])('s_blocks_count lo=%i hi=%i beyond the device is TRUNCATED at the field, before any descriptor is read', async (lo, hi) => {
    const dev = new MemoryDevice(tinyFs(lo, hi));
    let reads = 0;
    const counting = { size: dev.size, allocation: dev.allocation.bind(dev), read: (o: number, l: number) => (reads++, dev.read(o, l)) };
    await expectImgError(() => Ext4Fs.open(counting, { file: 'fs.img' }), 'TRUNCATED', {
      file: 'fs.img',
      structure: 'ext4.superblock.s_blocks_count',
      offset: 1028,
      deviceOffset: 1028,
      expected: '<= 16 blocks',
      actual: lo + hi * 2 ** 32,
    });
    expect(reads).toBe(1);
  });
});
