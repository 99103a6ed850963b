/**
 * checkQcow2 against `qemu-img check --output=json` (the oracle): same clean/corrupt
 * verdict, same counts of corruptions and leaks, same image-end-offset, on clean images
 * of many creation options and on images broken byte by byte.
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, openSync, readSync, writeSync, closeSync, statSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkQcow2 } from '../../../src/diskimage/qcow2/checkQcow2.js';
import { qemuImg, qemuIo, qemuMap } from '../../helpers/qemu.js';
import { run } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { expectCheckAgrees, qemuCheckJson } from './qemuOracle.js';

const tmp = useTempDir('imgdedup-check-');

function header(file: string): { l1: number; reftable: number; clusterBits: number; refcountOrder: number } {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(104);
  readSync(fd, b, 0, 104, 0);
  closeSync(fd);
  return {
    clusterBits: b.readUInt32BE(20),
    l1: Number(b.readBigUInt64BE(40)),
    reftable: Number(b.readBigUInt64BE(48)),
    refcountOrder: b.readUInt32BE(4) === 3 ? b.readUInt32BE(96) : 4,
  };
}
function readU64(file: string, offset: number): bigint {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, offset);
  closeSync(fd);
  return b.readBigUInt64BE(0);
}
function writeU64(file: string, offset: number, v: bigint): void {
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  writeSync(fd, b, 0, 8, offset);
  closeSync(fd);
}
function readU16(file: string, offset: number): number {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(2);
  readSync(fd, b, 0, 2, offset);
  closeSync(fd);
  return b.readUInt16BE(0);
}
function writeU16(file: string, offset: number, v: number): void {
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  writeSync(fd, b, 0, 2, offset);
  closeSync(fd);
}

/** Byte offset of the 16-bit refcount of host cluster `k` (refcount_order 4, first refcount block). */
function refcountEntryOffset(file: string, k: number): number {
  const h = header(file);
  const refblock = Number(readU64(file, h.reftable) & 0xfffffffffffffe00n);
  return refblock + 2 * k;
}

/** A small image with data, created with `opts`, written by qemu-io. */
function image(name: string, opts: string[], size = '16M', writes = ['write -P 1 0 200k', 'write -P 2 3M 64k']): string {
  const f = join(tmp(), name);
  qemuImg('create', '-q', '-f', 'qcow2', ...(opts.length ? ['-o', opts.join(',')] : []), f, size);
  if (writes.length) qemuIo(f, writes);
  return f;
}

describe('checkQcow2 on clean images agrees with qemu-img check', () => {
  const cases: [string, string[]][] = [
    ['compat 0.10', ['compat=0.10']],
    ['compat 1.1', ['compat=1.1']],
    ['512 B clusters', ['cluster_size=512']],
    ['4 KiB clusters', ['cluster_size=4096']],
    ['2 MiB clusters', ['cluster_size=2M']],
    ['extended L2', ['extended_l2=on']],
    ['extended L2, 2 MiB clusters', ['extended_l2=on', 'cluster_size=2M']],
    ['lazy refcounts (closed cleanly)', ['lazy_refcounts=on']],
    ['preallocation=metadata', ['preallocation=metadata']],
    ['preallocation=falloc', ['preallocation=falloc']],
    ['preallocation=full', ['preallocation=full']],
    ...[1, 2, 4, 8, 16, 32, 64].map((bits): [string, string[]] => [`refcount_bits=${bits}`, [`refcount_bits=${bits}`, 'cluster_size=4096']]),
  ];
  it.each(cases)('%s', async (_name, opts) => {
    const f = image(`clean-${opts.join('_').replace(/[=,]/g, '-')}.qcow2`, opts, '8M');
    const r = await expectCheckAgrees(f, true);
    expect(r.errors).toEqual([]);
    expect(r.checkedClusters).toBeGreaterThan(0);
  });

  it.each(['zlib', 'zstd'])('compressed (%s) via qemu-img convert -c', async (type) => {
    const src = image(`src-${type}.qcow2`, [], '8M', ['write -P 7 0 1M', 'write -P 0 2M 64k', 'write -P 9 5M 300k']);
    const f = join(tmp(), `compressed-${type}.qcow2`);
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, src, f);
    expect(qemuMap(f).some((e) => e.data)).toBe(true);
    await expectCheckAgrees(f, true);
  });

  it('internal snapshots (shared clusters, refcount 2, copied flags cleared)', async () => {
    const f = image('snap.qcow2', ['cluster_size=4096'], '8M');
    qemuImg('snapshot', '-c', 's1', f);
    qemuIo(f, ['write -P 3 0 16k', 'write -P 4 6M 8k']);
    qemuImg('snapshot', '-c', 's2', f);
    qemuIo(f, ['write -P 5 4k 4k']);
    await expectCheckAgrees(f, true);
  });

  it('a persistent dirty bitmap with data clusters', async () => {
    const f = image('bitmap.qcow2', ['cluster_size=4096'], '64M', []);
    qemuImg('bitmap', '--add', '--granularity', '512', f, 'bm0');
    qemuIo(f, ['write -P 1 0 1M', 'write -P 2 40M 64k']);
    const info = qemuImg('info', f);
    expect(info).toContain('bm0');
    await expectCheckAgrees(f, true);
  });

  it('an overlay with a backing file', async () => {
    const base = image('base.qcow2', [], '8M');
    const f = join(tmp(), 'overlay.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', f);
    qemuIo(f, ['write -P 9 64k 64k']);
    await expectCheckAgrees(f, true);
  });

  it('a dirty image (lazy refcounts, killed): stale refcounts, counted as qemu-img check counts them', async () => {
    const f = image('dirty.qcow2', ['lazy_refcounts=on'], '8M', []);
    run('qemu-io', ['-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', f]);
    const r = await expectCheckAgrees(f, false);
    expect(r.dirty).toBe(true);
    expect(r.errors.length).toBeGreaterThan(0);
    expect(r.errors.every((e) => e.kind === 'stale_refcount')).toBe(true);
  });
});

describe('checkQcow2 on broken images agrees with qemu-img check', () => {
  function dataHost(f: string): number {
    const e = qemuMap(f).find((m) => m.data && m.offset !== undefined);
    return e!.offset!;
  }
  function firstL2Entry(f: string): number {
    const h = header(f);
    const l2 = Number(readU64(f, h.l1) & 0x00fffffffffffe00n);
    return l2;
  }

  it('a data cluster refcount decremented to 0', async () => {
    const f = copy(image('b-src1.qcow2', []), 'b-refdec.qcow2');
    const k = dataHost(f) / 65536;
    const at = refcountEntryOffset(f, k);
    writeU16(f, at, readU16(f, at) - 1);
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'referenced_free', offset: k * 65536 }));
  });

  it('a refcount incremented (a leak, not a corruption)', async () => {
    const f = copy(image('b-src2.qcow2', []), 'b-refinc.qcow2');
    const k = dataHost(f) / 65536;
    const at = refcountEntryOffset(f, k);
    writeU16(f, at, readU16(f, at) + 1);
    const r = await expectCheckAgrees(f, false);
    expect(r.leaks).toBeGreaterThan(0);
  });

  it('an L2 entry pointing at the L1 table (overlapping metadata)', async () => {
    const f = copy(image('b-src3.qcow2', []), 'b-l2-at-l1.qcow2');
    const h = header(f);
    const l2 = firstL2Entry(f);
    writeU64(f, l2, (1n << 63n) | BigInt(h.l1));
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'overlap', offset: l2 }));
  });

  it('a leaked cluster appended with refcount 1', async () => {
    const f = copy(image('b-src4.qcow2', []), 'b-leak.qcow2');
    const size = statSync(f).size;
    expect(size % 65536).toBe(0);
    appendFileSync(f, Buffer.alloc(65536, 0xab));
    writeU16(f, refcountEntryOffset(f, size / 65536), 1);
    const r = await expectCheckAgrees(f, false);
    expect(r.leaks).toBe(1);
    expect(r.corruptions).toBe(0);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'leak', offset: size }));
    expect(r.imageEndOffset).toBe(size + 65536);
  });

  it('an L2 entry pointing outside the file', async () => {
    const f = copy(image('b-src5.qcow2', []), 'b-outside.qcow2');
    const l2 = firstL2Entry(f);
    writeU64(f, l2, (1n << 63n) | (1n << 40n));
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'outside_file', offset: l2 }));
  });

  it('a misaligned L2 entry', async () => {
    const f = copy(image('b-src6.qcow2', []), 'b-misaligned.qcow2');
    const l2 = firstL2Entry(f);
    writeU64(f, l2, readU64(f, l2) + 512n);
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'misaligned', offset: l2 }));
  });

  it('a misaligned refcount block and an L2 entry with reserved bits', async () => {
    const f = copy(image('b-src7.qcow2', []), 'b-reserved.qcow2');
    const l2 = firstL2Entry(f);
    writeU64(f, l2, readU64(f, l2) | 0x2n);
    const h = header(f);
    writeU64(f, h.reftable, readU64(f, h.reftable) + 1024n);
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'reserved_bits', offset: l2 }));
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'misaligned', offset: h.reftable }));
  });

  it('a snapshot-shared cluster whose refcount lost the snapshot reference', async () => {
    const src = image('b-src8.qcow2', [], '8M');
    qemuImg('snapshot', '-c', 's1', src);
    const f = copy(src, 'b-snapref.qcow2');
    const k = dataHost(f) / 65536;
    const at = refcountEntryOffset(f, k);
    expect(readU16(f, at)).toBe(2);
    writeU16(f, at, 1);
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'refcount_mismatch', offset: k * 65536 }));
  });

  it.each([
    ['allocation', 12],
    ['zero', 8],
  ])('a compressed cluster with a non-zero subcluster %s bitmap (extended L2)', async (_half, at) => {
    const f = image(`b-comp-bitmap-${at}.qcow2`, ['extended_l2=on', 'cluster_size=65536'], '1M', ['write -c -P 0x41 0 64k']);
    const l2 = firstL2Entry(f);
    expect(readU64(f, l2) >> 62n).toBe(1n); // compressed
    writeU64(f, l2 + 8, at === 12 ? 1n : 1n << 63n); // bit 0 of one half of the bitmap
    const r = await expectCheckAgrees(f, false);
    expect(r.errors).toContainEqual(expect.objectContaining({ kind: 'invalid_entry', offset: l2 }));
  });

  it('a truncated image (tables referencing past the end)', async () => {
    const f = copy(image('b-src9.qcow2', [], '16M', ['write -P 1 0 64k', 'write -P 2 8M 1M']), 'b-trunc.qcow2');
    run('truncate', ['-s', String(statSync(f).size - 5 * 65536), f]);
    await expectCheckAgrees(f, false);
  });

  it('refuses what qemu refuses to open: misaligned L1 table offset (CORRUPT_IMAGE at byte 40)', async () => {
    const f = copy(image('b-src10.qcow2', []), 'b-l1mis.qcow2');
    writeU64(f, 40, BigInt(header(f).l1 + 512));
    expect(run('qemu-img', ['check', f]).status).not.toBe(0);
    await expectImgError(() => checkQcow2(f), 'CORRUPT_IMAGE', { structure: 'qcow2.header.l1_table_offset', offset: 40 });
  });
});

function copy(src: string, name: string): string {
  const f = join(tmp(), name);
  copyFileSync(src, f);
  return f;
}

describe('an image qemu marked corrupt', () => {
  it('is checked (qemu-img check can read it too), and reported as not usable until repaired', async () => {
    const f = image('corrupt-bit.qcow2', []);
    writeU64(f, 72, readU64(f, 72) | 2n);
    const q = qemuCheckJson(f);
    const r = await checkQcow2(f);
    // The structures themselves are sound, as qemu-img check finds them.
    expect(q.status).toBe(0);
    expect([r.corruptions, r.leaks]).toEqual([q.corruptions, q.leaks]);
    expect(r.imageEndOffset).toBe(q.imageEnd);
    // But the readers refuse it, so the check is not clean.
    expect(r.clean).toBe(false);
    expect(r.errors).toEqual([expect.objectContaining({ kind: 'marked_corrupt', offset: 72 })]);
  });
});
