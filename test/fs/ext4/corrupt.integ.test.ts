/**
 * One corrupt-input test per validation of the ext4 reader: each test takes a clean image
 * made by mkfs.ext4, breaks one field (located with debugfs/dumpe2fs, not with our reader),
 * and asserts the error code and the device byte offset of the broken structure.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import type { BlockDevice, Extent } from '../../../src/diskimage/BlockDevice.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { superblockChecksum } from '../../../src/fs/ext4/superblock.js';
import { debugfsWrite, makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { parseBlocks, parseDumpExtents } from './debugfsOracle.js';

/** A BlockDevice over bytes in memory. */
class MemoryDevice implements BlockDevice {
  constructor(readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.bytes.slice(offset, offset + length);
  }
  async *allocation(): AsyncGenerator<Extent> {
    yield { offset: 0, length: this.bytes.length, kind: 'data' };
  }
}

const tmp = useTempDir('imgdedup-ext4-corrupt-');

interface Img {
  path: string;
  bytes: Uint8Array;
  bs: number;
}

const imgs: Record<'csum' | 'plain' | 'gdtcsum' | 'blockmap', Img> = {} as never;

/** Where debugfs says inode `ino` sits: device byte offset. */
function inodeOffset(img: Img, spec: string): number {
  const out = sh('debugfs', ['-R', `imap ${spec}`, img.path]);
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(out)!;
  return Number(m[1]!) * img.bs + parseInt(m[2]!, 16);
}

function firstBlock(img: Img, path: string): number {
  return parseBlocks(sh('debugfs', ['-R', `blocks ${path}`, img.path]))[0]!;
}

function gdtOffset(img: Img): number {
  const m = /Group descriptors at (\d+)-/.exec(sh('dumpe2fs', [img.path]))!;
  return Number(m[1]!) * img.bs;
}

/** A copy of the image with `edit` applied. */
function mutate(img: Img, edit: (b: Uint8Array, v: DataView) => void): MemoryDevice {
  const b = img.bytes.slice();
  edit(b, new DataView(b.buffer));
  return new MemoryDevice(b);
}

/** XORs one byte. */
function flip(b: Uint8Array, at: number, mask: number): void {
  b[at] = b[at]! ^ mask;
}

/** Re-seals the superblock checksum after an edit (for faults behind a valid checksum). */
function resealSuperblock(b: Uint8Array, v: DataView): void {
  v.setUint32(1024 + 0x3fc, superblockChecksum(b.subarray(1024, 2048)), true);
}

const open = (dev: BlockDevice, verifyChecksums: 'error' | 'warn' = 'error') => Ext4Fs.open(dev, { file: 'x.img', verifyChecksums });

beforeAll(() => {
  const src = join(tmp(), 'src');
  mkdirSync(join(src, 'dir'), { recursive: true });
  writeFileSync(join(src, 'file'), 'hello\n'.repeat(1000));
  for (let i = 0; i < 300; i++) writeFileSync(join(src, 'dir', `entry-with-a-longish-name-${i}`), '');
  // Every other block written: more extents than the inode holds, so a leaf block.
  const frag = Buffer.alloc(64 * 2048);
  for (let i = 0; i < 64; i++) frag.write(`piece ${i}`, i * 2048);
  writeFileSync(join(src, 'frag'), frag);
  writeFileSync(join(src, 'frag.sh'), '');
  const make = (name: keyof typeof imgs, args: string[], type?: 'ext2'): void => {
    const path = join(tmp(), `${name}.img`);
    makeExt4Image(path, src, { args: ['-b', '1024', ...args], sizeMiB: 8, ...(type ? { type } : {}) });
    // Punch holes into frag so that it has many extents.
    debugfsWrite(path, Array.from({ length: 32 }, (_, i) => `punch /frag ${i * 4 + 1} ${i * 4 + 1}`));
    writeFileSync(join(tmp(), 'big.bin'), 'v'.repeat(600));
    debugfsWrite(path, [`ea_set -f ${join(tmp(), 'big.bin')} /file user.big`]);
    // Index the directories (mkfs -d writes linear ones): /dir becomes an htree.
    spawnSync('e2fsck', ['-fyD', path], { env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    imgs[name] = { path, bytes: new Uint8Array(readFileSync(path)), bs: 1024 };
  };
  make('csum', []);
  make('plain', ['-O', '^metadata_csum,^uninit_bg,^64bit']);
  make('gdtcsum', ['-O', '^metadata_csum,uninit_bg,^64bit']);
  make('blockmap', [], 'ext2');
});

describe('superblock', () => {
  test('opens the clean images', async () => {
    for (const img of Object.values(imgs)) expect((await open(new MemoryDevice(img.bytes))).superblock.blockSize).toBe(1024);
  });
  test('bad magic', async () => {
    await expectImgError(() => open(mutate(imgs.plain, (b) => (b[1024 + 0x38] = 0))), 'CORRUPT_IMAGE', { offset: 1080, deviceOffset: 1080, structure: 'ext4.superblock.s_magic' });
  });
  test('device too small', async () => {
    await expectImgError(() => open(new MemoryDevice(new Uint8Array(1500))), 'TRUNCATED', { deviceOffset: 1024 });
  });
  test('bad superblock checksum: error, or a diagnostic under warn', async () => {
    const dev = mutate(imgs.csum, (b) => flip(b, 1024 + 0x78, 1));
    await expectImgError(() => open(dev), 'BAD_CHECKSUM', { deviceOffset: 1024 + 0x3fc, structure: 'ext4.superblock.s_checksum' });
    const fs = await open(dev, 'warn');
    expect(fs.diagnostics.map((d) => [d.code, d.deviceOffset])).toEqual([['BAD_CHECKSUM', 1024 + 0x3fc]]);
  });
  test.each([
    ['encrypt', 0x60, 0x10000],
    ['compression', 0x60, 0x1],
    ['journal_dev', 0x60, 0x8],
    ['dirdata', 0x60, 0x1000],
    ['bigalloc', 0x64, 0x200],
  ])('unsupported feature %s', async (feature, field, bit) => {
    const dev = mutate(imgs.csum, (b, v) => {
      v.setUint32(1024 + field, v.getUint32(1024 + field, true) | bit, true);
      resealSuperblock(b, v);
    });
    await expectImgError(() => open(dev), 'UNSUPPORTED_FEATURE', { feature, deviceOffset: 1024 + field });
  });
  test.each([
    ['s_log_block_size', 0x18, 4, 7],
    ['s_blocks_per_group', 0x20, 4, 0],
    ['s_inodes_per_group', 0x28, 4, 0],
    ['s_inode_size', 0x58, 2, 200],
    ['s_first_data_block', 0x14, 4, 0],
    ['s_desc_size', 0xfe, 2, 48],
    ['s_rev_level', 0x4c, 4, 2],
    ['s_inodes_count', 0x00, 4, 0xffffff],
  ])('impossible %s', async (field, off, size, value) => {
    const img = field === 's_desc_size' ? imgs.csum : imgs.plain;
    const dev = mutate(img, (b, v) => {
      if (size === 4) v.setUint32(1024 + off, value, true);
      else v.setUint16(1024 + off, value, true);
      if (img === imgs.csum) resealSuperblock(b, v);
    });
    // s_desc_size is only read with 64bit: make the csum image 64bit for it.
    if (field === 's_desc_size') {
      const fs = await open(new MemoryDevice(img.bytes));
      if (fs.superblock.s_desc_size < 64) return;
    }
    await expectImgError(() => open(dev), 'CORRUPT_IMAGE', { deviceOffset: 1024 + off, structure: `ext4.superblock.${field}` });
  });
});

describe('group descriptors and bitmaps', () => {
  test.each(['csum', 'gdtcsum'] as const)('descriptor checksum (%s)', async (name) => {
    const img = imgs[name];
    const gdt = gdtOffset(img);
    await expectImgError(() => open(mutate(img, (b) => flip(b, gdt + 0x0c, 1))), 'BAD_CHECKSUM', { deviceOffset: gdt + 0x1e, structure: 'ext4.group_desc[0].bg_checksum' });
  });
  test('inode table outside the filesystem', async () => {
    const gdt = gdtOffset(imgs.plain);
    await expectImgError(() => open(mutate(imgs.plain, (_b, v) => v.setUint32(gdt + 8, 0x7fffffff, true))), 'CORRUPT_IMAGE', {
      deviceOffset: gdt + 8,
      structure: 'ext4.group_desc[0].bg_inode_table',
    });
  });
  test('block bitmap checksum', async () => {
    const m = /Block bitmap at (\d+)/.exec(sh('dumpe2fs', [imgs.csum.path]))!;
    const at = Number(m[1]!) * 1024;
    const fs = await open(mutate(imgs.csum, (b) => flip(b, at + 100, 0x10)));
    await expectImgError(async () => {
      for await (const r of fs.freeBlockRuns()) void r;
    }, 'BAD_CHECKSUM', { deviceOffset: at, structure: 'ext4.block_bitmap[0]' });
  });
  test('inode bitmap checksum', async () => {
    const m = /Inode bitmap at (\d+)/.exec(sh('dumpe2fs', [imgs.csum.path]))!;
    const at = Number(m[1]!) * 1024;
    const fs = await open(mutate(imgs.csum, (b) => flip(b, at + 100, 0x10)));
    await expectImgError(async () => {
      for await (const r of fs.usedInodes()) void r;
    }, 'BAD_CHECKSUM', { deviceOffset: at, structure: 'ext4.inode_bitmap[0]' });
  });
});

const inoOf = (img: Img, p: string): number => Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', `imap ${p}`, img.path]))![1]!);

describe('inodes and extents', () => {
  test('inode checksum', async () => {
    const at = inodeOffset(imgs.csum, '/file');
    const fs = await open(mutate(imgs.csum, (b) => flip(b, at + 0x10, 1)));
    const ino = Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', 'imap /file', imgs.csum.path]))![1]!);
    await expectImgError(() => fs.readInode(ino), 'BAD_CHECKSUM', { deviceOffset: at + 0x7c });
  });
  test('i_extra_isize beyond the inode', async () => {
    const at = inodeOffset(imgs.plain, '/file');
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(at + 0x80, 200, true)));
    await expectImgError(() => fs.stat(inoOf(imgs.plain, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x80 });
  });
  const drain = async (fs: Ext4Fs, ino: number): Promise<void> => {
    for await (const e of fs.extents(ino)) void e;
  };
  test('extent header magic (root in the inode)', async () => {
    const at = inodeOffset(imgs.plain, '/file');
    const fs = await open(mutate(imgs.plain, (b) => (b[at + 0x28] = 0)));
    await expectImgError(() => drain(fs, inoOf(imgs.plain, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x28, structure: expect.stringContaining('eh_magic') });
  });
  test('extent depth above 5', async () => {
    const at = inodeOffset(imgs.plain, '/file');
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(at + 0x28 + 6, 6, true)));
    await expectImgError(() => drain(fs, inoOf(imgs.plain, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x28 + 6, structure: expect.stringContaining('eh_depth') });
  });
  test('eh_entries above eh_max', async () => {
    const at = inodeOffset(imgs.plain, '/file');
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(at + 0x28 + 2, 5, true)));
    await expectImgError(() => drain(fs, inoOf(imgs.plain, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x28 + 2 });
  });
  test('extent beyond the filesystem', async () => {
    const at = inodeOffset(imgs.plain, '/file');
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint32(at + 0x28 + 12 + 8, 0x7ffffff0, true)));
    await expectImgError(() => drain(fs, inoOf(imgs.plain, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x28 + 12 });
  });
  test.each(['plain', 'csum'] as const)('extent leaf block: wrong depth, bad magic, bad tail checksum (%s)', async (name) => {
    const img = imgs[name];
    const dump = parseDumpExtents(sh('debugfs', ['-R', 'dump_extents /frag', img.path]));
    expect(dump.nodes.length).toBeGreaterThan(0);
    const leaf = dump.nodes[0]! * 1024;
    const ino = inoOf(img, '/frag');
    await expectImgError(async () => drain(await open(mutate(img, (b) => (b[leaf] = 0))), ino), 'CORRUPT_IMAGE', { deviceOffset: leaf });
    if (name === 'csum') {
      const max = new DataView(img.bytes.buffer).getUint16(leaf + 4, true);
      await expectImgError(async () => drain(await open(mutate(img, (b) => flip(b, leaf + 12 + 3, 1))), ino), 'BAD_CHECKSUM', { deviceOffset: leaf + 12 + 12 * max });
    } else {
      await expectImgError(async () => drain(await open(mutate(img, (_b, v) => v.setUint16(leaf + 6, 1, true))), ino), 'CORRUPT_IMAGE', { deviceOffset: leaf + 6 });
    }
  });
  test('block map pointer outside the filesystem (ext2)', async () => {
    const at = inodeOffset(imgs.blockmap, '/file');
    const fs = await open(mutate(imgs.blockmap, (_b, v) => v.setUint32(at + 0x28, 0xfffffff0, true)));
    await expectImgError(() => drain(fs, inoOf(imgs.blockmap, '/file')), 'CORRUPT_IMAGE', { deviceOffset: at + 0x28 });
  });
  test('indirect block pointer outside the filesystem (ext2)', async () => {
    const blocks = parseBlocks(sh('debugfs', ['-R', 'blocks /file', imgs.blockmap.path]));
    // /file has 6 blocks (6000 bytes): no indirect block; frag has 64 KiB -> block 12 is the indirect block.
    expect(blocks.length).toBeGreaterThan(0);
    const fragBlocks = parseBlocks(sh('debugfs', ['-R', 'stat /frag', imgs.blockmap.path]).includes('(IND)') ? '' : '');
    void fragBlocks;
    const at = inodeOffset(imgs.blockmap, '/frag');
    const ind = new DataView(imgs.blockmap.bytes.buffer).getUint32(at + 0x28 + 12 * 4, true);
    expect(ind).toBeGreaterThan(0);
    const fs = await open(mutate(imgs.blockmap, (_b, v) => v.setUint32(ind * 1024 + 8, 0xfffffff0, true)));
    await expectImgError(() => drain(fs, inoOf(imgs.blockmap, '/frag')), 'CORRUPT_IMAGE', { deviceOffset: ind * 1024 + 8 });
  });
});

describe('directories', () => {
  const drainDir = async (fs: Ext4Fs, ino: number): Promise<void> => {
    for await (const e of fs.readdir(ino)) void e;
  };
  test('rec_len past the block end', async () => {
    const blk = firstBlock(imgs.plain, '/') * 1024;
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(blk + 4, 2000, true)));
    await expectImgError(() => drainDir(fs, 2), 'CORRUPT_IMAGE', { deviceOffset: blk + 4, structure: expect.stringContaining('rec_len') });
  });
  test('rec_len not a multiple of 4', async () => {
    const blk = firstBlock(imgs.plain, '/') * 1024;
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(blk + 4, 13, true)));
    await expectImgError(() => drainDir(fs, 2), 'CORRUPT_IMAGE', { deviceOffset: blk + 4 });
  });
  test('name_len beyond rec_len', async () => {
    const blk = firstBlock(imgs.plain, '/') * 1024;
    const fs = await open(mutate(imgs.plain, (b) => (b[blk + 6] = 100)));
    await expectImgError(() => drainDir(fs, 2), 'CORRUPT_IMAGE', { deviceOffset: blk + 6 });
  });
  test('inode number beyond s_inodes_count', async () => {
    const blk = firstBlock(imgs.plain, '/') * 1024;
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint32(blk, 0x7fffffff, true)));
    await expectImgError(() => drainDir(fs, 2), 'CORRUPT_IMAGE', { deviceOffset: blk });
  });
  test('leaf block checksum tail', async () => {
    const blk = firstBlock(imgs.csum, '/') * 1024;
    const fs = await open(mutate(imgs.csum, (b) => flip(b, blk + 12 + 8, 1)));
    await expectImgError(() => drainDir(fs, 2), 'BAD_CHECKSUM', { deviceOffset: blk + 1024 - 4 });
  });
  test.each(['plain', 'csum'] as const)('htree root: info_length, levels, count, and dx checksum (%s)', async (name) => {
    const img = imgs[name];
    const dirIno = Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', 'imap /dir', img.path]))![1]!);
    expect(sh('debugfs', ['-R', 'htree /dir', img.path])).toContain('Root node dump');
    const root = firstBlock(img, '/dir') * 1024;
    await expectImgError(async () => drainDir(await open(mutate(img, (b) => (b[root + 0x1d] = 9))), dirIno), 'CORRUPT_IMAGE', { deviceOffset: root + 0x1d });
    if (name === 'plain') {
      await expectImgError(async () => drainDir(await open(mutate(img, (b) => (b[root + 0x1e] = 5))), dirIno), 'CORRUPT_IMAGE', { deviceOffset: root + 0x1e });
      await expectImgError(async () => drainDir(await open(mutate(img, (_b, v) => v.setUint16(root + 0x22, 0, true))), dirIno), 'CORRUPT_IMAGE', { deviceOffset: root + 0x22 });
      await expectImgError(async () => drainDir(await open(mutate(img, (_b, v) => v.setUint32(root + 0x24, 99999, true))), dirIno), 'CORRUPT_IMAGE', { deviceOffset: root + 0x24 });
    } else {
      const limit = new DataView(img.bytes.buffer).getUint16(root + 0x20, true);
      await expectImgError(async () => drainDir(await open(mutate(img, (b) => flip(b, root + 0x28 + 2, 1))), dirIno), 'BAD_CHECKSUM', { deviceOffset: root + 0x20 + limit * 8 + 4 });
    }
  });
});

describe('xattrs and refusal flags', () => {
  const xblock = (img: Img): number => Number(/File ACL: (\d+)/.exec(sh('debugfs', ['-R', 'stat /file', img.path]))![1]!);
  test('xattr block magic', async () => {
    const at = xblock(imgs.plain) * 1024;
    const fs = await open(mutate(imgs.plain, (b) => (b[at + 3] = 0)));
    const ino = Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', 'imap /file', imgs.plain.path]))![1]!);
    await expectImgError(() => fs.xattrs(ino), 'CORRUPT_IMAGE', { deviceOffset: at, structure: expect.stringContaining('h_magic') });
  });
  test('xattr value outside the block', async () => {
    const at = xblock(imgs.plain) * 1024;
    const fs = await open(mutate(imgs.plain, (_b, v) => v.setUint16(at + 32 + 2, 1020, true)));
    const ino = Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', 'imap /file', imgs.plain.path]))![1]!);
    await expectImgError(() => fs.xattrs(ino), 'CORRUPT_IMAGE', { deviceOffset: at + 32 + 2 });
  });
  test('xattr block checksum', async () => {
    const at = xblock(imgs.csum) * 1024;
    const fs = await open(mutate(imgs.csum, (b) => flip(b, at + 1023, 1)));
    const ino = Number(/Inode (\d+)/.exec(sh('debugfs', ['-R', 'imap /file', imgs.csum.path]))![1]!);
    await expectImgError(() => fs.xattrs(ino), 'BAD_CHECKSUM', { deviceOffset: at + 16 });
  });
  test('writeRefusal: an entry in the orphan file (orphan_file feature)', async () => {
    const path = join(tmp(), 'orphan.img');
    makeExt4Image(path, undefined, { args: ['-b', '1024', '-O', 'orphan_file'], sizeMiB: 8 });
    const bytes = new Uint8Array(readFileSync(path));
    const img: Img = { path, bytes, bs: 1024 };
    const orphanIno = Number(/Orphan file inode: +(\d+)/.exec(sh('dumpe2fs', ['-h', path]))![1]!);
    const first = parseBlocks(sh('debugfs', ['-R', `blocks <${orphanIno}>`, path]))[0]!;
    expect(await (await open(new MemoryDevice(bytes))).writeRefusal()).toBeUndefined();
    const r = await (await open(mutate(img, (_b, v) => v.setUint32(first * 1024, 12, true)))).writeRefusal();
    expect(r).toEqual({ code: 'DIRTY_FILESYSTEM', state: 'orphans', reason: '1 orphan inodes in the orphan file' });
  });
  test('writeRefusal: needs_recovery, errors state, not clean, orphans', async () => {
    expect(await (await open(new MemoryDevice(imgs.csum.bytes))).writeRefusal()).toBeUndefined();
    const cases: Array<[string, (v: DataView) => void]> = [
      ['needs_recovery', (v) => v.setUint32(1024 + 0x60, v.getUint32(1024 + 0x60, true) | 0x4, true)],
      ['errors', (v) => v.setUint16(1024 + 0x3a, 3, true)],
      ['not cleanly unmounted', (v) => v.setUint16(1024 + 0x3a, 0, true)],
      ['s_last_orphan', (v) => v.setUint32(1024 + 0xe8, 12, true)],
    ];
    for (const [what, edit] of cases) {
      const fs = await open(mutate(imgs.csum, (b, v) => {
        edit(v);
        resealSuperblock(b, v);
      }));
      const r = await fs.writeRefusal();
      expect(r?.code, what).toBe('DIRTY_FILESYSTEM');
    }
  });
});
