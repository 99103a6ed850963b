/**
 * The qcow2 reader refuses damaged images with a typed error naming the file, the
 * structure and the byte offset: one test per validation of the tables.
 */
import { describe, expect, test } from 'vitest';
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../../src/diskimage/qcow2/Qcow2Image.js';
import { checkQcow2 } from '../../../src/diskimage/qcow2/checkQcow2.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import { openImage } from '../../../src/diskimage/openImage.js';
import { qemuImg, qemuIo } from '../../helpers/qemu.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const tmp = useTempDir();

/** A 4 MiB image with data in its first two clusters; returns its path and layout. */
function sample(name: string, options = 'cluster_size=65536'): { file: string; l1: number; l2: number; bytes: Buffer } {
  const file = join(tmp(), name);
  qemuImg('create', '-f', 'qcow2', '-o', options, file, '4M');
  qemuIo(file, ['write -P 0x5a 0 128k']);
  const bytes = readFileSync(file);
  const l1 = Number(bytes.readBigUInt64BE(40));
  const l2 = Number(bytes.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  return { file, l1, l2, bytes };
}

async function readAll(file: string): Promise<void> {
  const chain = await openChain(file);
  try {
    for await (const _ of chain.device.allocation());
    await chain.device.read(0, chain.device.size);
  } finally {
    await chain.close();
  }
}

describe('Qcow2Image refuses damaged tables', () => {
  test('a file truncated inside its tables', async () => {
    const s = sample('trunc.qcow2');
    truncateSync(s.file, s.l2 + 100);
    await expectImgError(() => Qcow2Image.open(s.file), 'CORRUPT_IMAGE', { file: s.file, structure: 'qcow2.l1_table[0]', offset: s.l1 });
  });

  test('a file truncated before its data: the L2 entry points past the end', async () => {
    const s = sample('trunc-data.qcow2');
    const firstData = Number(s.bytes.readBigUInt64BE(s.l2) & 0x00fffffffffffe00n);
    // Keep every table but cut the data clusters off (qemu puts data after the L2 table here).
    expect(firstData).toBeGreaterThan(s.l2);
    truncateSync(s.file, firstData);
    await expectImgError(() => readAll(s.file), 'CORRUPT_IMAGE', { file: s.file, structure: 'qcow2.l2_entry', offset: s.l2 });
  });

  test('an L1 table that lies outside the file', async () => {
    const s = sample('l1-out.qcow2');
    s.bytes.writeBigUInt64BE(BigInt(s.bytes.length + 65536), 40);
    writeFileSync(s.file, s.bytes);
    await expectImgError(() => Qcow2Image.open(s.file), 'CORRUPT_IMAGE', { file: s.file, structure: 'qcow2.header.l1_table_offset', offset: 40 });
  });

  test('an L1 table too small for the virtual size', async () => {
    const s = sample('l1-small.qcow2');
    s.bytes.writeBigUInt64BE(BigInt(1) << 40n, 24); // 1 TiB virtual size, L1 still sized for 4 MiB
    writeFileSync(s.file, s.bytes);
    await expectImgError(() => Qcow2Image.open(s.file), 'CORRUPT_IMAGE', { structure: 'qcow2.header.l1_size', offset: 36 });
  });

  test('a misaligned L2 table offset in L1', async () => {
    const s = sample('l1-misaligned.qcow2');
    s.bytes.writeBigUInt64BE(BigInt(s.l2 + 512) | (1n << 63n), s.l1);
    writeFileSync(s.file, s.bytes);
    await expectImgError(() => Qcow2Image.open(s.file), 'CORRUPT_IMAGE', { structure: 'qcow2.l1_table[0]', offset: s.l1 });
  });

  test('a misaligned data cluster offset in L2', async () => {
    const s = sample('l2-misaligned.qcow2');
    const e = s.bytes.readBigUInt64BE(s.l2);
    s.bytes.writeBigUInt64BE(e + 512n, s.l2);
    writeFileSync(s.file, s.bytes);
    await expectImgError(() => readAll(s.file), 'CORRUPT_IMAGE', { structure: 'qcow2.l2_entry', offset: s.l2 });
  });

  test('a subcluster marked both allocated and zero (extended L2)', async () => {
    const s = sample('extl2.qcow2', 'extended_l2=on,cluster_size=65536');
    s.bytes.writeUInt32BE(s.bytes.readUInt32BE(s.l2 + 12), s.l2 + 8); // zero bits := alloc bits
    writeFileSync(s.file, s.bytes);
    await expectImgError(() => readAll(s.file), 'CORRUPT_IMAGE', { structure: 'qcow2.l2_entry', offset: s.l2 + 8 });
  });

  test('a compressed cluster with a non-zero subcluster bitmap (extended L2): the bitmap must be zero', async () => {
    const file = join(tmp(), 'c-bitmap.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=65536', file, '1M');
    qemuIo(file, ['write -c -P 0x41 0 64k']);
    const b = readFileSync(file);
    const l1 = Number(b.readBigUInt64BE(40));
    const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    expect(b.readBigUInt64BE(l2) >> 62n).toBe(1n); // compressed
    b.writeUInt32BE(1 << 3, l2 + 12); // subcluster 3 "allocated"
    writeFileSync(file, b);
    await expectImgError(() => readAll(file), 'CORRUPT_IMAGE', { file, structure: 'qcow2.l2_entry', offset: l2 });
  });

  test('a compressed cluster whose data does not inflate', async () => {
    const src = join(tmp(), 'c-src.qcow2');
    const file = join(tmp(), 'c.qcow2');
    qemuImg('create', '-f', 'qcow2', src, '1M');
    qemuIo(src, ['write -P 0x61 0 64k']);
    qemuImg('convert', '-c', '-O', 'qcow2', src, file);
    const b = readFileSync(file);
    const l1 = Number(b.readBigUInt64BE(40));
    const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const entry = b.readBigUInt64BE(l2);
    const host = Number(entry & ((1n << 54n) - 1n));
    b.fill(0xff, host, host + 16);
    writeFileSync(file, b);
    await expectImgError(() => readAll(file), 'CORRUPT_IMAGE', { file, structure: 'qcow2.compressed_cluster', offset: host });
  });

  test('an intact copy of the same image reads without error (the damage is what fails)', async () => {
    const s = sample('ok.qcow2');
    copyFileSync(s.file, `${s.file}.copy`);
    await readAll(`${s.file}.copy`);
  });
});

describe('the snapshot table offset is checked as qemu checks it, also with no snapshots (found by a new user)', () => {
  const withOffset = (name: string, offset: bigint): string => {
    const s = sample(name);
    const b = Buffer.from(s.bytes);
    b.writeBigUInt64BE(offset, 64);
    writeFileSync(s.file, b);
    return s.file;
  };
  test('not aligned to a cluster: refused, as qemu-img refuses to open it', async () => {
    const file = withOffset('snap-unaligned.qcow2', 0x3f884dn);
    expect(() => qemuImg('check', file)).toThrow();
    await expectImgError(() => Qcow2Image.open(file), 'CORRUPT_IMAGE', { file, structure: 'qcow2.header.snapshots_offset', offset: 64 });
    await expectImgError(() => checkQcow2(file), 'CORRUPT_IMAGE', { file, structure: 'qcow2.header.snapshots_offset' });
  });
  test('aligned but beyond 2^53 with no snapshots: unused, so the image reads as qemu reads it', async () => {
    const file = withOffset('snap-huge.qcow2', 0x4b00000000000000n);
    qemuImg('check', file);
    const raw = join(tmp(), 'snap-huge.raw');
    qemuImg('convert', '-O', 'raw', file, raw);
    const chain = await openChain(file);
    try {
      expect(Buffer.from(await chain.device.read(0, chain.device.size)).equals(readFileSync(raw))).toBe(true);
    } finally {
      await chain.close();
    }
    expect((await checkQcow2(file)).errors).toEqual([]);
  });
});

describe('a qcow2 file cut inside its header is TRUNCATED', () => {
  // qemu-img writes version 3 headers with header_length 112 (compression_type at byte 104),
  // followed by header extensions (the feature name table) up to a few hundred bytes.
  const v3 = () => sample('cut-src-v3.qcow2');
  const v2 = () => sample('cut-src-v2.qcow2', 'compat=0.10');

  test.each([
    ['v3', 2, 'qcow2.header.magic'],
    ['v3', 50, 'qcow2.header.refcount_table_offset'],
    ['v3', 71, 'qcow2.header.snapshots_offset'],
    ['v3', 100, 'qcow2.header.header_length'],
    ['v3', 104, 'qcow2.header.compression_type'],
    ['v3', 108, 'qcow2.header'],
    ['v2', 30, 'qcow2.header.size'],
    ['v2', 70, 'qcow2.header.snapshots_offset'],
  ])('%s cut at %i bytes: %s', async (version, cut, structure) => {
    const s = version === 'v3' ? v3() : v2();
    const file = join(tmp(), `cut-${version}-${cut}.qcow2`);
    writeFileSync(file, s.bytes.subarray(0, cut));
    const e = await expectImgError(() => Qcow2Image.open(file), 'TRUNCATED', { file, structure });
    expect(e.message).not.toMatch(/got 0/);
    // The checker cannot look at a header that is not there either.
    await expectImgError(() => checkQcow2(file), 'TRUNCATED', { file, structure });
    if (cut >= 4) await expectImgError(() => openImage(file), 'TRUNCATED', { file, structure });
  });

  test.each([113, 120, 200, 500])('v3 cut inside the header extensions, at %i bytes', async (cut) => {
    const s = v3();
    expect(s.bytes.readUInt32BE(100)).toBe(112);
    const file = join(tmp(), `cut-ext-${cut}.qcow2`);
    writeFileSync(file, s.bytes.subarray(0, cut));
    await expectImgError(() => Qcow2Image.open(file), 'TRUNCATED', { file });
  });
});
