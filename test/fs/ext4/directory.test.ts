/**
 * Directory block encoders beside their decoders: decode(encode(x)) == x and
 * encode(decode(bytes)) == bytes on random blocks (fast-check); checksums that the
 * decoders verify (a flipped byte is BAD_CHECKSUM); rec_len of 64 KiB blocks.
 * Real blocks (mkfs.ext4 / e2fsck -D) are round-tripped in directory.integ.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeDirBlock,
  decodeDirBlockRecords,
  decodeDxNode,
  decodeDxRoot,
  dirRecLen,
  dxLimit,
  encodeDirBlock,
  encodeDxNode,
  encodeDxRoot,
  recLenFromDisk,
  recLenToDisk,
  DX_NODE_ENTRIES_AT,
  DX_ROOT_ENTRIES_AT,
  type DirRecordInput,
} from '../../../src/fs/ext4/directory.js';
import { expectImgError } from '../../helpers/expectImgError.js';

/** Byte equality without vitest's element-by-element diff (slow on 64 KiB blocks). */
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;
const show = (r: DirRecordInput) => `${r.ino}:${Buffer.from(r.name).toString('hex')}:${r.fileType}:${r.recLen}`;
const ctx = () => ({ file: 'dir.img', verifyChecksums: 'error' as const, diagnostics: [] });
const INODES = 1 << 20;

const fmtArb = fc.record({ filetype: fc.boolean(), metadataCsum: fc.boolean(), csumSeed: fc.nat({ max: 0xffffffff }) });
const blockSizeArb = fc.oneof({ arbitrary: fc.constantFrom(1024, 2048, 4096), weight: 9 }, { arbitrary: fc.constant(65536), weight: 1 });
const nameArb = fc.uint8Array({ minLength: 1, maxLength: 255 });

/** Records that fit a block: slack (in 4-byte steps) after some, a deleted record possibly first. */
const blockArb = fc
  .tuple(fmtArb, blockSizeArb, fc.array(fc.record({ ino: fc.integer({ min: 1, max: INODES }), name: nameArb, fileType: fc.integer({ min: 0, max: 7 }), slack: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 })) }), { maxLength: 40 }), fc.boolean())
  .map(([fmt, blockSize, raw, firstDeleted]) => {
    const end = blockSize - (fmt.metadataCsum ? 12 : 0);
    const records: DirRecordInput[] = [];
    let used = 0;
    raw.forEach((r, i) => {
      const recLen = dirRecLen(r.name.length) + r.slack * 4;
      if (used + recLen > end) return;
      used += recLen;
      records.push({ ino: i === 0 && firstDeleted ? 0 : r.ino, name: r.name, fileType: fmt.filetype ? r.fileType : 0, recLen });
    });
    return { fmt, blockSize, records };
  });

const opts = (fmt: { filetype: boolean; metadataCsum: boolean; csumSeed: number }) => ({ filetype: fmt.filetype, metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, inodesCount: INODES });

describe('encodeDirBlock', () => {
  it('round-trips: decode(encode(records)) == records (last rec_len to the end or tail) and encode(decode(bytes)) == bytes', () => {
    fc.assert(
      fc.property(blockArb, ({ fmt, blockSize, records }) => {
        const bytes = encodeDirBlock(records, fmt, blockSize);
        expect(bytes.length).toBe(blockSize);
        const back = decodeDirBlockRecords(bytes, ctx(), 'dir', 0, opts(fmt), blockSize);
        const end = blockSize - (fmt.metadataCsum ? 12 : 0);
        const expected = records.length === 0 ? [{ ino: 0, name: new Uint8Array(0), fileType: 0, recLen: end }] : records.map((r, i) => (i === records.length - 1 ? { ...r, recLen: end - records.slice(0, -1).reduce((s, x) => s + x.recLen!, 0) } : r));
        expect(back.map(show)).toEqual(expected.map(show));
        expect(sameBytes(encodeDirBlock(back, fmt, blockSize), bytes)).toBe(true);
        // The reader's view: the used entries only.
        expect(decodeDirBlock(bytes, ctx(), 'dir', 0, opts(fmt), blockSize).map((e) => e.ino)).toEqual(records.filter((r) => r.ino !== 0).map((r) => r.ino));
      }),
      { seed: 9001, numRuns: 300 },
    );
  });

  it('packs records without rec_len at their smallest size', () => {
    const fmt = { filetype: true, metadataCsum: false, csumSeed: 0 };
    const recs = [{ ino: 2, name: Buffer.from('a'), fileType: 2 }, { ino: 3, name: Buffer.from('hello'), fileType: 1 }, { ino: 4, name: Buffer.from('x'.repeat(8)), fileType: 1 }];
    const back = decodeDirBlockRecords(encodeDirBlock(recs, fmt, 1024), ctx(), 'dir', 0, opts(fmt), 1024);
    expect(back.map((r) => r.recLen)).toEqual([12, 16, 1024 - 28]);
  });

  it('writes a tail whose checksum the decoder verifies (a changed name byte is BAD_CHECKSUM at det_checksum)', async () => {
    const fmt = { filetype: true, metadataCsum: true, csumSeed: 0x12345678 };
    const bytes = encodeDirBlock([{ ino: 11, name: Buffer.from('lost+found'), fileType: 2 }], fmt, 4096);
    expect([...bytes.subarray(4096 - 12, 4096 - 4)]).toEqual([0, 0, 0, 0, 12, 0, 0, 0xde]);
    bytes[9] = bytes[9]! ^ 1;
    await expectImgError(() => decodeDirBlock(bytes, ctx(), 'dir', 8192, opts(fmt), 4096), 'BAD_CHECKSUM', { structure: 'dir.det_checksum', offset: 8192 + 4096 - 4 });
  });

  it('refuses records that do not fit as an internal error', async () => {
    const fmt = { filetype: true, metadataCsum: false, csumSeed: 0 };
    const big = Array.from({ length: 5 }, (_, i) => ({ ino: i + 1, name: new Uint8Array(255).fill(65 + i), fileType: 1 }));
    await expectImgError(() => encodeDirBlock(big, fmt, 1024), 'INTERNAL');
  });
});

describe('rec_len on disk', () => {
  it('stores a 64 KiB record as 65535 and reads back every length', () => {
    expect(recLenToDisk(65536, 65536)).toBe(65535);
    for (const len of [8, 12, 1024, 65532, 65536]) expect(recLenFromDisk(recLenToDisk(len, 65536), 65536)).toBe(len);
    expect(recLenToDisk(4084, 4096)).toBe(4084);
  });
});

const hashesArb = (n: number) => fc.array(fc.nat({ max: 0xffffffff }), { minLength: n - 1, maxLength: n - 1 }).map((h) => [0, ...h.sort((a, b) => a - b)]);

const dxArb = fc.tuple(fmtArb, blockSizeArb, fc.integer({ min: 1, max: 5000 }), fc.double({ min: 0, max: 1, noNaN: true })).chain(([fmt, blockSize, dirBlocks, fill]) => {
  const rootLimit = dxLimit(blockSize, DX_ROOT_ENTRIES_AT, fmt.metadataCsum);
  const count = Math.max(1, Math.round(fill * rootLimit));
  return fc.record({
    fmt: fc.constant(fmt),
    blockSize: fc.constant(blockSize),
    dirBlocks: fc.constant(dirBlocks),
    hashes: hashesArb(count),
    blocks: fc.array(fc.nat({ max: dirBlocks - 1 }), { minLength: count, maxLength: count }),
    info: fc.record({ hash_version: fc.integer({ min: 0, max: 2 }), info_length: fc.constant(8), indirect_levels: fc.integer({ min: 0, max: 1 }) }),
    dot: fc.integer({ min: 1, max: INODES }),
    dotdot: fc.integer({ min: 1, max: INODES }),
  });
});

const dxOpts = (fmt: { metadataCsum: boolean; csumSeed: number }, dirBlocks: number) => ({ metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, largedir: false, dirBlocks });

describe('encodeDxRoot / encodeDxNode', () => {
  it('round-trip through decodeDxRoot and decodeDxNode, checksums included', () => {
    fc.assert(
      fc.property(dxArb, ({ fmt, blockSize, dirBlocks, hashes, blocks, info, dot, dotdot }) => {
        const ft = fmt.filetype ? 2 : 0;
        const root = { info, node: { hashes, blocks }, dot: { ino: dot, name: Buffer.from('.'), fileType: ft }, dotdot: { ino: dotdot, name: Buffer.from('..'), fileType: ft } };
        const bytes = encodeDxRoot(root, fmt, blockSize);
        const back = decodeDxRoot(bytes, ctx(), 'root', 0, blockSize, dxOpts(fmt, dirBlocks));
        expect(back.info).toEqual(info);
        expect(back.node).toEqual({ limit: dxLimit(blockSize, DX_ROOT_ENTRIES_AT, fmt.metadataCsum), count: blocks.length, hashes, blocks });
        expect([back.dot.ino, back.dotdot.ino, back.dot.fileType, back.dotdot.fileType]).toEqual([dot, dotdot, ft, ft]);
        expect(sameBytes(encodeDxRoot(back, fmt, blockSize), bytes)).toBe(true);
        // A linear reader sees '.' and '..' only.
        expect(decodeDirBlock(bytes, ctx(), 'root', 0, { ...opts(fmt), metadataCsum: false }, blockSize).map((e) => e.ino)).toEqual([dot, dotdot]);

        const node = encodeDxNode({ hashes, blocks }, fmt, blockSize);
        const nodeBack = decodeDxNode(node, ctx(), 'node', 0, blockSize, dxOpts(fmt, dirBlocks));
        expect(nodeBack).toEqual({ limit: dxLimit(blockSize, DX_NODE_ENTRIES_AT, fmt.metadataCsum), count: blocks.length, hashes, blocks });
        expect(sameBytes(encodeDxNode(nodeBack, fmt, blockSize), node)).toBe(true);
        expect(decodeDirBlock(node, ctx(), 'node', 0, { ...opts(fmt), metadataCsum: false }, blockSize)).toEqual([]);
      }),
      { seed: 9002, numRuns: 200 },
    );
  });

  it('checksum covers the count entries and the tail: a changed entry is BAD_CHECKSUM at dt_checksum', async () => {
    const fmt = { filetype: true, metadataCsum: true, csumSeed: 0xcafe };
    const node = encodeDxNode({ hashes: [0, 0x100, 0x200], blocks: [1, 2, 3] }, fmt, 1024);
    const limit = dxLimit(1024, 8, true);
    expect(limit).toBe(126);
    node[20] = node[20]! ^ 1;
    await expectImgError(() => decodeDxNode(node, ctx(), 'node', 0, 1024, dxOpts(fmt, 10)), 'BAD_CHECKSUM', { structure: 'node.dt_checksum', offset: 8 + limit * 8 + 4 });
    // Bytes past `count` (stale entries) are outside the checksum, as in the kernel.
    const clean = encodeDxNode({ hashes: [0, 0x100, 0x200], blocks: [1, 2, 3] }, fmt, 1024);
    clean[8 + 3 * 8] = 0x55;
    expect(decodeDxNode(clean, ctx(), 'node', 0, 1024, dxOpts(fmt, 10)).count).toBe(3);
  });
});
