/**
 * Round-trip properties of the ext4 encoders on random structures (fast-check, seeded):
 * decode(encode(fields)) gives the fields back, and encode(decode(bytes)) gives the bytes
 * back with the modelled fields scrambled in the starting bytes, for inodes, extent
 * nodes, superblocks, group descriptors and xattr areas and blocks. The decoders verify
 * every checksum the encoders set. Real images and e2fsck: codecs.integ.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { Ext4Context } from '../../../src/fs/ext4/context.js';
import { fsReader } from '../../../src/fs/ext4/context.js';
import { decodeInode, encodeInode, type InodeFields } from '../../../src/fs/ext4/inode.js';
import { decodeExtentNode, encodeExtentNode, extentNodeCapacity, type ExtentNode, type FileExtent } from '../../../src/fs/ext4/extents.js';
import { decodeSuperblock, encodeBackupSuperblock, encodeSuperblock } from '../../../src/fs/ext4/superblock.js';
import { decodeGroupDescriptor, encodeGroupDescriptor, type GroupDescriptor } from '../../../src/fs/ext4/groupDescriptors.js';
import { clearBit, setBit, testBit } from '../../../src/fs/ext4/bitmaps.js';
import {
  decodeAcl,
  encodeAcl,
  decodeInodeXattrs,
  decodeXattrBlock,
  encodeInodeXattrs,
  encodeXattrBlock,
  xattrBlockHash,
  xattrEntryHash,
  xattrsFitInBlock,
  xattrsFitInInode,
  type XattrEntry,
} from '../../../src/fs/ext4/xattr.js';
import { syntheticSuperblock, type SyntheticOptions } from './syntheticSuperblock.js';
import { modelledInodeBytes } from './codecImages.js';

const SEED = 20261126;
const ctx = (): Ext4Context => ({ file: 'fs.img', verifyChecksums: 'error', diagnostics: [] });
const warnCtx = (): Ext4Context => ({ file: 'fs.img', verifyChecksums: 'warn', diagnostics: [] });
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const fsOptions = fc.record({
  blockSize: fc.constantFrom(1024 as const, 4096 as const, 65536 as const),
  inodeSize: fc.constantFrom(128 as const, 256 as const, 512 as const),
  metadataCsum: fc.boolean(),
  gdtCsum: fc.boolean(),
  hugeFile: fc.boolean(),
  is64: fc.boolean(),
});

/** The inode bytes encodeInode writes from its fields (as in codecs.integ.test.ts). */

describe('encodeInode', () => {
  test('random inode bytes: encode(decode(bytes)) gives the bytes (checksum set where metadata_csum)', () => {
    fc.assert(
      fc.property(fsOptions, fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.nat(), fc.integer({ min: 1, max: 1 << 20 }), (o, noise, extraPick, ino) => {
        const { sb } = syntheticSuperblock(o);
        const size = sb.s_inode_size;
        const bytes = noise.slice(0, size);
        // A size of 2^32 blocks or more is refused as damage (checkInodeRecord): i_size_high below the block size.
        const sizeHigh = (bytes[0x6c]! | (bytes[0x6d]! << 8)) % sb.blockSize;
        bytes.set([sizeHigh & 0xff, sizeHigh >> 8, 0, 0], 0x6c);
        if (size > 128) {
          const extra = 4 * (extraPick % ((size - 128) / 4 + 1));
          bytes[0x80] = extra & 0xff;
          bytes[0x81] = extra >> 8;
        }
        // Set the checksum (if any) by one encode, then check the decoder accepts it and a second encode is identical.
        const first = encodeInode(decodeInode(bytes, ino, sb, warnCtx(), 0), sb, { raw: bytes });
        const inode = decodeInode(first, ino, sb, ctx(), 0);
        if (!o.metadataCsum) expect(hex(first)).toBe(hex(bytes));
        const scrambled = first.slice();
        // An i_size above 2^53 decodes inexactly; its bytes can only come from raw.
        const exactSize = Number.isSafeInteger(inode.i_size);
        for (const i of modelledInodeBytes(size, inode.i_extra_isize, o.metadataCsum)) {
          if (exactSize || !((i >= 0x04 && i < 0x08) || (i >= 0x6c && i < 0x70))) scrambled[i] = ~scrambled[i]! & 0xff;
        }
        expect(hex(encodeInode(inode, sb, { raw: scrambled }))).toBe(hex(first));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  const timeArb = (extra: boolean): fc.Arbitrary<{ sec: number; nsec: number }> =>
    fc.record({
      sec: fc.integer({ min: -(2 ** 31), max: extra ? 2 ** 31 - 1 + 3 * 2 ** 32 : 2 ** 31 - 1 }),
      nsec: extra ? fc.integer({ min: 0, max: 999_999_999 }) : fc.constant(0),
    });

  test('random fields: decode(encode(fields)) gives the fields, i_blocks encoded as ext4_inode_blocks_set chooses', () => {
    const opts = fc.record({ blockSize: fc.constantFrom(1024 as const, 4096 as const), metadataCsum: fc.boolean() });
    fc.assert(
      fc.property(
        opts,
        fc.record({
          i_mode: fc.integer({ min: 0, max: 0xffff }),
          i_uid: fc.nat({ max: 0xffffffff }),
          i_gid: fc.nat({ max: 0xffffffff }),
          // Below 2^32 blocks (a larger size is refused as damage).
          i_size: fc.nat({ max: 2 ** 32 * 1024 - 1 }),
          i_links_count: fc.integer({ min: 0, max: 0xffff }),
          blocks: fc.oneof(fc.nat({ max: 2 ** 32 - 1 }), fc.integer({ min: 2 ** 32, max: 2 ** 48 - 1 }), fc.integer({ min: 2 ** 45, max: 2 ** 48 - 1 })),
          i_flags: fc.nat({ max: 0xffffffff }),
          i_generation: fc.nat({ max: 0xffffffff }),
          i_file_acl: fc.nat({ max: 2 ** 48 - 1 }),
          i_dtime: fc.nat({ max: 0xffffffff }),
          i_projid: fc.nat({ max: 0xffffffff }),
          atime: timeArb(true),
          ctime: timeArb(true),
          mtime: timeArb(true),
          crtime: timeArb(true),
          i_block: fc.uint8Array({ minLength: 60, maxLength: 60 }),
        }),
        fc.integer({ min: 1, max: 100000 }),
        (o, f, ino) => {
          const { sb } = syntheticSuperblock({ ...o, inodeSize: 256, hugeFile: true, is64: true });
          const unit = sb.blockSize / 512;
          // Counts from 2^48 on are stored in filesystem blocks, so they are multiples of the unit.
          const i_blocks = f.blocks >= 2 ** 45 ? f.blocks * unit : f.blocks;
          const fields: InodeFields = { ...f, ino, i_blocks, i_extra_isize: 32 };
          const back = decodeInode(encodeInode(fields, sb), ino, sb, ctx(), 0);
          const huge = i_blocks >= 2 ** 48;
          expect(back.hugeFileUnits).toBe(huge);
          expect(back.i_blocks_raw).toBe(huge ? i_blocks / unit : i_blocks);
          const { blocks: _b, ...plain } = f;
          expect({ ...back, raw: undefined, deviceOffset: undefined, csumSeed: undefined, i_block: hex(back.i_block), i_blocks_raw: undefined, hugeFileUnits: undefined }).toEqual({
            ...plain,
            ino,
            i_blocks,
            i_extra_isize: 32,
            i_flags: huge ? (f.i_flags | 0x40000) >>> 0 : (f.i_flags & ~0x40000) >>> 0,
            i_block: hex(f.i_block),
            raw: undefined,
            deviceOffset: undefined,
            csumSeed: undefined,
            i_blocks_raw: undefined,
            hugeFileUnits: undefined,
          });
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('EXT4_HUGE_FILE_FL in i_flags follows the unit i_blocks is stored in (huge_file), whatever the caller left there', () => {
    const { sb } = syntheticSuperblock({ blockSize: 4096, inodeSize: 256, metadataCsum: true, hugeFile: true, is64: true });
    const base = { ...decodeInode(new Uint8Array(256), 12, sb, ctx(), 0), i_extra_isize: 32, i_mode: 0o100644, i_links_count: 1 };
    const stale = decodeInode(encodeInode({ ...base, i_blocks: 80, i_blocks_raw: 80, hugeFileUnits: false, i_flags: 0x80000 | 0x40000 }, sb), 12, sb, ctx(), 0);
    expect([stale.i_blocks, stale.i_flags, stale.hugeFileUnits]).toEqual([80, 0x80000, false]);
    const huge = decodeInode(encodeInode({ ...base, i_blocks: (2 ** 48 - 1) * 8, i_flags: 0x80000 }, sb), 12, sb, ctx(), 0);
    expect([huge.i_blocks, huge.i_blocks_raw, huge.i_flags, huge.hugeFileUnits]).toEqual([(2 ** 48 - 1) * 8, 2 ** 48 - 1, 0xc0000, true]);
  });

  test('an i_blocks the format cannot hold is refused, not truncated', () => {
    const { sb } = syntheticSuperblock({ blockSize: 4096, inodeSize: 256, metadataCsum: false, hugeFile: false, is64: false });
    const base = decodeInode(new Uint8Array(256), 12, sb, ctx(), 0);
    expect(() => encodeInode({ ...base, i_blocks: 2 ** 32 }, sb)).toThrow(expect.objectContaining({ code: 'WRITE_REFUSED' }));
    expect(() => encodeInode({ ...base, i_uid: 2 ** 32 }, sb)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
  });

  test('changing i_extra_isize of an inode with in-body xattrs needs the xattr area, rather than losing the xattrs', () => {
    const { sb } = syntheticSuperblock({ blockSize: 4096, inodeSize: 256, metadataCsum: true, hugeFile: true, is64: true });
    const fields = { ...decodeInode(new Uint8Array(256), 12, sb, ctx(), 0), i_mode: 0o100644, i_links_count: 1, i_extra_isize: 32 };
    const area = encodeInodeXattrs([{ name: Buffer.from('user.a'), value: Buffer.from('b') }], 256 - 160);
    const withXattr = encodeInode({ ...fields, xattrArea: area }, sb);
    const inode = decodeInode(withXattr, 12, sb, ctx(), 0);
    expect(() => encodeInode({ ...inode, i_extra_isize: 28 }, sb, { raw: inode.raw })).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    const moved = encodeInode({ ...inode, i_extra_isize: 28, xattrArea: encodeInodeXattrs(decodeInodeXattrs(inode.raw, 32, ctx(), 12, 0), 256 - 156) }, sb, { raw: inode.raw });
    const back = decodeInode(moved, 12, sb, ctx(), 0);
    expect(decodeInodeXattrs(back.raw, back.i_extra_isize, ctx(), 12, 0).map((x) => Buffer.from(x.value).toString())).toEqual(['b']);
  });

  test('times outside the representable range are clamped as the kernel clamps them; 128-byte inodes keep no nanoseconds', () => {
    const small = syntheticSuperblock({ blockSize: 1024, inodeSize: 128, metadataCsum: false, hugeFile: false, is64: false }).sb;
    const base = decodeInode(new Uint8Array(128), 12, small, ctx(), 0);
    const back = decodeInode(encodeInode({ ...base, mtime: { sec: 2 ** 33, nsec: 5 }, atime: { sec: -(2 ** 40), nsec: 0 } }, small), 12, small, ctx(), 0);
    expect(back.mtime).toEqual({ sec: 2 ** 31 - 1, nsec: 0 });
    expect(back.atime).toEqual({ sec: -(2 ** 31), nsec: 0 });
  });
});

const extentsArb = (max: number, unwrittenOk: boolean): fc.Arbitrary<FileExtent[]> =>
  fc
    .array(fc.record({ gap: fc.nat({ max: 1000 }), len: fc.integer({ min: 1, max: 32768 }), pblk: fc.nat({ max: 2 ** 48 - 32769 }), unwritten: unwrittenOk ? fc.boolean() : fc.constant(false) }), { maxLength: max })
    .map((xs) => {
      let lblk = 0;
      return xs.map((x) => {
        const len = x.unwritten ? Math.min(x.len, 32767) : x.len;
        const e = { lblk: lblk + x.gap, pblk: x.pblk, len, unwritten: x.unwritten };
        lblk = e.lblk + len;
        return e;
      });
    })
    .filter((xs) => xs.every((e) => e.lblk + e.len <= 2 ** 32));

describe('encodeExtentNode', () => {
  const nodeArb = (capacity: number): fc.Arbitrary<ExtentNode> =>
    fc.oneof(
      fc.tuple(extentsArb(capacity, true), fc.nat({ max: 0xffffffff })).map(([extents, gen]) => ({ header: { eh_magic: 0xf30a, eh_entries: extents.length, eh_max: capacity, eh_depth: 0, eh_generation: gen }, indexes: [], extents })),
      fc.tuple(fc.uniqueArray(fc.nat({ max: 0xffffffff }), { maxLength: capacity }), fc.integer({ min: 1, max: 5 }), fc.array(fc.nat({ max: 2 ** 48 - 1 }), { minLength: capacity, maxLength: capacity })).map(([blocks, depth, leaves]) => {
        const sorted = [...blocks].sort((a, b) => a - b);
        return { header: { eh_magic: 0xf30a, eh_entries: sorted.length, eh_max: capacity, eh_depth: depth, eh_generation: 0 }, indexes: sorted.map((b, i) => ({ ei_block: b, ei_leaf: leaves[i]! })), extents: [] };
      }),
    );

  test('roots and block nodes: decode(encode(node)) gives the node; encode(decode(bytes)) gives the bytes; the tail is the crc32c of the node', () => {
    fc.assert(
      fc.property(fc.constantFrom(60, 1024, 2048, 4096), fc.nat({ max: 0xffffffff }), fc.uint8Array({ minLength: 4096, maxLength: 4096 }), (bytesLen, seed, noise) => {
        const capacity = extentNodeCapacity(bytesLen);
        const isRoot = bytesLen === 60;
        fc.assert(
          fc.property(nodeArb(Math.min(capacity, 12)), (n0) => {
            const node = { ...n0, header: { ...n0.header, eh_max: capacity } };
            const tail = isRoot ? {} : { tail: { seed } };
            const bytes = encodeExtentNode(node, capacity, { ...tail, raw: noise.subarray(0, bytesLen) });
            expect(bytes.length).toBe(bytesLen);
            const back = decodeExtentNode(fsReader(ctx(), bytes, 'node', 0), capacity);
            expect(back.header).toEqual({ ...node.header, eh_entries: node.header.eh_depth > 0 ? node.indexes.length : node.extents.length });
            expect(back.extents).toEqual(node.extents);
            expect(back.indexes).toEqual(node.indexes);
            // Bytes past the entries come from raw.
            const used = 12 + 12 * back.header.eh_entries;
            const tailOff = 12 + 12 * capacity;
            expect(hex(bytes.subarray(used, isRoot ? bytesLen : tailOff))).toBe(hex(noise.subarray(used, isRoot ? bytesLen : tailOff)));
            const scrambled = bytes.slice();
            scrambled.fill(0xee, 0, 12);
            // All of each entry but an index's ei_unused, which comes from raw.
            for (let i = 0; i < back.header.eh_entries; i++) scrambled.fill(0xee, 12 + 12 * i, 12 + 12 * i + (back.header.eh_depth > 0 ? 10 : 12));
            expect(hex(encodeExtentNode(back, capacity, { ...tail, raw: scrambled }))).toBe(hex(bytes));
          }),
          { seed, numRuns: 5 },
        );
      }),
      { seed: SEED, numRuns: 60 },
    );
  });

  test('a length the format cannot hold is refused', () => {
    const node = (len: number, unwritten: boolean): ExtentNode => ({ header: { eh_magic: 0xf30a, eh_entries: 1, eh_max: 4, eh_depth: 0, eh_generation: 0 }, indexes: [], extents: [{ lblk: 0, pblk: 100, len, unwritten }] });
    expect(() => encodeExtentNode(node(32768, true), 4)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    expect(() => encodeExtentNode(node(32769, false), 4)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    expect(encodeExtentNode(node(32767, true), 4)[16]! | (encodeExtentNode(node(32767, true), 4)[17]! << 8)).toBe(65535);
  });
});

describe('encodeSuperblock', () => {
  test('random writable fields: decode(encode(sb)) gives them back with a valid checksum; every other byte is kept', () => {
    fc.assert(
      fc.property(
        fsOptions,
        fc.record({
          s_free_blocks_count: fc.nat({ max: 2 ** 32 - 1 }),
          s_free_inodes_count: fc.nat({ max: 1024 }),
          s_mtime: fc.nat({ max: 2 ** 40 - 1 }),
          s_wtime: fc.nat({ max: 2 ** 40 - 1 }),
          s_state: fc.nat({ max: 0xffff }),
          s_errors: fc.nat({ max: 0xffff }),
          s_block_group_nr: fc.nat({ max: 0xffff }),
          s_last_orphan: fc.nat({ max: 0xffffffff }),
          s_flags: fc.nat({ max: 0xffffffff }),
          s_kbytes_written: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        }),
        (o, f) => {
          const { bytes, sb } = syntheticSuperblock(o);
          const out = encodeSuperblock({ ...sb, ...f });
          const back = decodeSuperblock(out, ctx());
          expect({ ...back, raw: undefined, s_checksum: undefined }).toEqual({ ...sb, ...f, raw: undefined, s_checksum: undefined });
          const touched = new Set<number>();
          for (const [off, len] of [[0x0c, 8], [0x2c, 8], [0x3a, 4], [0x5a, 2], [0xe8, 4], [0x158, 4], [0x160, 4], [0x178, 8], [0x274, 2], [0x3fc, 4]] as const) for (let i = off; i < off + len; i++) touched.add(i);
          const untouched = (b: Uint8Array): number[] => [...b].filter((_, i) => !touched.has(i));
          expect(untouched(out)).toEqual(untouched(bytes));
          expect(hex(encodeSuperblock(back))).toBe(hex(out));
          const backup = decodeSuperblock(encodeBackupSuperblock(back, 3), ctx());
          expect(backup.s_block_group_nr).toBe(3);
        },
      ),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('s_wtime, s_mtime and s_mkfs_time include their _hi bytes (times after 2106)', () => {
    const { bytes } = syntheticSuperblock({ blockSize: 4096, inodeSize: 256, metadataCsum: false, hugeFile: true, is64: true });
    bytes[0x274] = 1;
    bytes[0x275] = 2;
    bytes[0x276] = 3;
    const sb = decodeSuperblock(bytes, ctx());
    expect([sb.s_wtime, sb.s_mtime, sb.s_mkfs_time]).toEqual([2 ** 32, 2 * 2 ** 32, 3 * 2 ** 32]);
  });
});

describe('encodeGroupDescriptor', () => {
  test('random descriptors (32 and 64 bytes, crc16, crc32c or none): decode(encode(gd)) gives them back; encode(decode(bytes)) gives the bytes', () => {
    const optsArb = fc.record({ blockSize: fc.constantFrom(1024 as const, 4096 as const), inodeSize: fc.constant(256 as const), metadataCsum: fc.boolean(), gdtCsum: fc.boolean(), hugeFile: fc.constant(true), is64: fc.boolean() });
    fc.assert(
      fc.property(optsArb, fc.nat({ max: 3 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.array(fc.nat({ max: 0xffffffff }), { minLength: 12, maxLength: 12 }), (o: SyntheticOptions, group, noise, r) => {
        const { sb } = syntheticSuperblock(o);
        const big = sb.descSize >= 64;
        const m16 = big ? 2 ** 32 : 2 ** 16;
        const itableBlocks = Math.ceil((sb.s_inodes_per_group * sb.s_inode_size) / sb.blockSize);
        const blk = (x: number): number => sb.s_first_data_block + (x % (sb.s_blocks_count - sb.s_first_data_block - itableBlocks));
        const gd: GroupDescriptor = {
          bg_block_bitmap: blk(r[0]!),
          bg_inode_bitmap: blk(r[1]!),
          bg_inode_table: blk(r[2]!),
          bg_free_blocks_count: r[3]! % m16,
          bg_free_inodes_count: r[4]! % m16,
          bg_used_dirs_count: r[5]! % m16,
          bg_flags: r[6]! & 0xffff,
          bg_exclude_bitmap: big ? r[7]! * 7 : r[7]!,
          bg_block_bitmap_csum: r[8]! % m16,
          bg_inode_bitmap_csum: r[9]! % m16,
          bg_itable_unused: r[10]! % m16,
          bg_checksum: r[11]! & 0xffff,
          raw: noise.subarray(0, sb.descSize),
        };
        const bytes = encodeGroupDescriptor(gd, group, sb);
        const back = decodeGroupDescriptor(bytes, group, sb, ctx(), 0);
        const checksummed = (o.metadataCsum || o.gdtCsum) === true;
        expect({ ...back, raw: undefined, bg_checksum: checksummed ? 0 : back.bg_checksum }).toEqual({ ...gd, raw: undefined, bg_checksum: checksummed ? 0 : gd.bg_checksum });
        const scrambled = bytes.slice();
        scrambled.fill(0x77, 0, big ? 0x3c : 0x20);
        expect(hex(encodeGroupDescriptor({ ...back, raw: scrambled }, group, sb))).toBe(hex(bytes));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('a value a 32-byte descriptor cannot hold is refused', () => {
    const { sb } = syntheticSuperblock({ blockSize: 4096, inodeSize: 256, metadataCsum: false, hugeFile: true, is64: false });
    const gd = { bg_block_bitmap: 10, bg_inode_bitmap: 11, bg_inode_table: 12, bg_free_blocks_count: 65536, bg_free_inodes_count: 0, bg_used_dirs_count: 0, bg_flags: 0, bg_exclude_bitmap: 0, bg_block_bitmap_csum: 0, bg_inode_bitmap_csum: 0, bg_itable_unused: 0, bg_checksum: 0 };
    expect(() => encodeGroupDescriptor(gd, 0, sb)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
  });
});

describe('bitmap bits', () => {
  test('setBit and clearBit change exactly one bit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.nat({ max: 127 }), (b0, i) => {
        const b = b0.slice();
        setBit(b, i);
        expect(testBit(b, i)).toBe(true);
        clearBit(b, i);
        expect(testBit(b, i)).toBe(false);
        for (let j = 0; j < 128; j++) if (j !== i) expect(testBit(b, j)).toBe(testBit(b0, j));
      }),
      { seed: SEED, numRuns: 200 },
    );
  });
});

const PREFIXES = ['user.', 'trusted.', 'security.', 'system.', 'system.posix_acl_access', 'system.posix_acl_default', 'unknownprefix.'];
const xattrsArb = fc
  .uniqueArray(
    fc.record({
      prefix: fc.constantFrom(...PREFIXES),
      suffix: fc.uint8Array({ minLength: 1, maxLength: 24 }).map((s) => s.map((c) => (c === 0 ? 1 : c))),
      value: fc.uint8Array({ maxLength: 120 }),
      zeroHash: fc.boolean(),
    }),
    { maxLength: 8, selector: (x) => x.prefix + Buffer.from(x.prefix.startsWith('system.posix') ? [] : x.suffix).toString('hex') },
  )
  .map((xs) =>
    xs.map((x): XattrEntry => {
      const suffix = x.prefix.startsWith('system.posix') ? new Uint8Array(0) : x.suffix;
      const name = new Uint8Array([...Buffer.from(x.prefix), ...suffix]);
      return { name, value: x.value, ...(x.zeroHash ? { e_hash: 0 } : {}) };
    }),
  );

describe('xattr encoders', () => {
  test('inode body: decode(encode(entries)) gives them in order; encode(decode(area)) gives the area; fits agrees with encode', () => {
    fc.assert(
      fc.property(xattrsArb, fc.constantFrom(96, 224, 480), (entries, areaSize) => {
        if (!xattrsFitInInode(entries, areaSize)) {
          expect(() => encodeInodeXattrs(entries, areaSize)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
          return;
        }
        const area = encodeInodeXattrs(entries, areaSize);
        const raw = new Uint8Array(128 + 32 + areaSize);
        raw.set(area, 160);
        const back = decodeInodeXattrs(raw, 32, ctx(), 12, 0);
        expect(back.map((x) => [hex(x.name), hex(x.value)])).toEqual(entries.map((e) => [hex(e.name), hex(e.value)]));
        back.forEach((x, i) => expect(x.e_hash === 0).toBe(entries[i]!.e_hash === 0 || x.e_hash === 0));
        expect(hex(encodeInodeXattrs(back, areaSize))).toBe(hex(area));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('block: sorted entries, checksum verified by the decoder, hashes as ext4_xattr_hash_entry/rehash; encode(decode(block)) gives the block', () => {
    fc.assert(
      fc.property(xattrsArb, fc.constantFrom(1024, 4096), fc.nat({ max: 0xffffffff }), fc.integer({ min: 1, max: 2 ** 40 }), fc.boolean(), fc.integer({ min: 1, max: 1024 }), (entries, blockSize, seed, blockNo, csum, refcount) => {
        const opts = { refcount, blockNo, seed, metadataCsum: csum, blockSize };
        if (!xattrsFitInBlock(entries, blockSize)) {
          expect(() => encodeXattrBlock(entries, opts)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
          return;
        }
        const block = encodeXattrBlock(entries, opts);
        const { header, xattrs } = decodeXattrBlock(block, blockNo, ctx(), { metadataCsum: csum, csumSeed: seed });
        expect(header.h_refcount).toBe(refcount);
        const key = (name: Uint8Array, value: Uint8Array): string => `${hex(name)}=${hex(value)}`;
        expect(xattrs.map((x) => key(x.name, x.value)).sort()).toEqual(entries.map((e) => key(e.name, e.value)).sort());
        // Sorted by (index, name length, name), every hash computed (none kept at 0 in a block).
        for (let i = 1; i < xattrs.length; i++) {
          const [a, b] = [xattrs[i - 1]!, xattrs[i]!];
          expect(a.nameIndex < b.nameIndex || (a.nameIndex === b.nameIndex && a.name.length <= b.name.length)).toBe(true);
        }
        expect(header.h_hash).toBe(xattrBlockHash(xattrs.map((x) => x.e_hash!)));
        expect(hex(encodeXattrBlock(xattrs, opts))).toBe(hex(block));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('a layout brought by the entries (values in any order, as the kernel places them) is kept; an invalid one is replaced by a valid one', () => {
    fc.assert(
      fc.property(xattrsArb, fc.func(fc.integer()), fc.boolean(), (entries, rank, overlap) => {
        const areaSize = 480;
        if (entries.length < 2 || !xattrsFitInInode(entries, areaSize)) return;
        // Values placed from the end in a shuffled order; offsets count from the first entry (area byte 4).
        const order = entries.map((_, i) => i).sort((a, b) => rank(a) - rank(b) || a - b);
        const offs: number[] = new Array(entries.length).fill(0);
        let end = areaSize;
        for (const i of order) {
          if (entries[i]!.value.length === 0) continue;
          end -= (entries[i]!.value.length + 3) & ~3;
          offs[i] = end - 4;
        }
        const nonEmpty = order.filter((i) => entries[i]!.value.length > 0);
        if (overlap && nonEmpty.length >= 2) offs[nonEmpty[1]!] = offs[nonEmpty[0]!]!;
        const given = entries.map((e, i) => ({ ...e, e_value_offs: offs[i]! }));
        const area = encodeInodeXattrs(given, areaSize);
        const raw = new Uint8Array(160 + areaSize);
        raw.set(area, 160);
        const back = decodeInodeXattrs(raw, 32, ctx(), 12, 0);
        expect(back.map((x) => [hex(x.name), hex(x.value)])).toEqual(entries.map((e) => [hex(e.name), hex(e.value)]));
        const collides = overlap && nonEmpty.length >= 2;
        if (!collides) expect(back.map((x) => (x.value.length > 0 ? x.e_value_offs : 0))).toEqual(offs);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('ACLs: decodeAcl(encodeAcl(entries)) gives the entries; encodeAcl(decodeAcl(bytes)) gives the bytes', () => {
    const tags = ['user_obj', 'user', 'group_obj', 'group', 'mask', 'other'] as const;
    fc.assert(
      fc.property(fc.array(fc.record({ tag: fc.constantFrom(...tags), perm: fc.nat({ max: 7 }), id: fc.nat({ max: 0xffffffff }) }), { maxLength: 10 }), (xs) => {
        const entries = xs.map((x) => (x.tag === 'user' || x.tag === 'group' ? x : { tag: x.tag, perm: x.perm }));
        const bytes = encodeAcl(entries);
        const back = decodeAcl(bytes, ctx(), 'acl', 0);
        expect(back).toEqual(entries);
        expect(hex(encodeAcl(back))).toBe(hex(bytes));
      }),
      { seed: SEED, numRuns: 200 },
    );
  });

  test('entry hash: name bytes unsigned, then the value as zero-padded little-endian words', () => {
    // Worked by hand: h = rotl5(0) ^ 0x61 = 0x61; then rotl16(0x61) ^ 0x00000062 = 0x00610062.
    expect(xattrEntryHash(Buffer.from('a'), Buffer.from('b'))).toBe(0x00610062);
    // A byte >= 0x80 is not sign-extended (the kernel's unsigned ext4_xattr_hash_entry).
    expect(xattrEntryHash(new Uint8Array([0xc3]), new Uint8Array(0))).toBe(0xc3);
    expect(xattrBlockHash([1, 2])).toBe(0x00010002);
    expect(xattrBlockHash([1, 0, 2])).toBe(0);
  });
});
