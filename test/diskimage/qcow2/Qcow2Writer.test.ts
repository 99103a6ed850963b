import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Writer } from '../../../src/diskimage/qcow2/Qcow2Writer.js';
import { Qcow2Image } from '../../../src/diskimage/qcow2/Qcow2Image.js';
import { planRefcounts } from '../../../src/diskimage/qcow2/refcounts.js';
import {
  decodeQcow2Extensions,
  decodeQcow2Header,
  encodeQcow2Extensions,
  encodeQcow2Header,
  type Qcow2Header,
} from '../../../src/diskimage/qcow2/header.js';
import { QCOW2_INCOMPAT_EXTL2, QCOW2_MAGIC } from '../../../src/diskimage/qcow2/constants.js';
import { collect } from '../../../src/diskimage/extents.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const tmp = useTempDir();

/** Deterministic bytes: a seeded LCG, so every run writes the same content. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

describe('Qcow2Writer read back through Qcow2Image', () => {
  it.each([
    { clusterSize: 4096, extendedL2: false },
    { clusterSize: 512, extendedL2: false },
    { clusterSize: 65536, extendedL2: true },
  ])('cluster $clusterSize extendedL2 $extendedL2: scattered writes in any order', async ({ clusterSize, extendedL2 }) => {
    const path = join(tmp(), `rb-${clusterSize}-${extendedL2}.qcow2`);
    const size = 8 * 1024 * 1024 + 1000; // not cluster-aligned: the tail is partial
    const w = await Qcow2Writer.create(path, { size, clusterSize, extendedL2 });
    const unit = w.unitSize;
    expect(unit).toBe(extendedL2 ? clusterSize / 32 : clusterSize);
    const expected = new Uint8Array(size);
    const writes: [number, Uint8Array][] = [
      [5 * 1024 * 1024, pattern(3 * unit, 1)],
      [0, pattern(unit, 2)],
      [unit * 7, pattern(unit, 3)],
      [Math.floor(size / unit) * unit, pattern(size % unit, 4)], // the partial tail
      [unit * 6, pattern(2 * unit, 5)], // overlaps the unit at 7: rewrite
    ];
    for (const [off, data] of writes) {
      await w.write(off, data);
      expected.set(data, off);
    }
    await w.writeZeros(5 * 1024 * 1024 + unit, unit); // zero the middle of an earlier write
    expected.fill(0, 5 * 1024 * 1024 + unit, 5 * 1024 * 1024 + 2 * unit);
    const summary = await w.commit();
    expect(readdirSync(tmp()).filter((n) => n.includes('.tmp-'))).toEqual([]);

    const img = await Qcow2Image.open(path);
    try {
      expect(img.size).toBe(size);
      expect(img.clusterSize).toBe(clusterSize);
      expect(img.extendedL2).toBe(extendedL2);
      expect(img.header.refcount_order).toBe(4);
      expect(img.header.version).toBe(3);
      expect(img.fileSize).toBe(summary.fileSize);
      expect(Buffer.from(await img.read(0, size)).equals(Buffer.from(expected))).toBe(true);
      const extents = await collect(img.allocation());
      // The zeroed unit is a zero extent; nothing outside our writes is stored.
      expect(extents.some((e) => e.kind === 'zero' && e.offset <= 5 * 1024 * 1024 + unit && e.offset + e.length >= 5 * 1024 * 1024 + 2 * unit)).toBe(true);
      const stored = extents.reduce((n, e) => n + e.length, 0);
      expect(stored).toBeLessThanOrEqual(7 * unit + (size % unit || unit) + clusterSize);
    } finally {
      await img.close();
    }
  });

  it('records a backing file and format that Qcow2Image reads back', async () => {
    const path = join(tmp(), 'overlay.qcow2');
    const w = await Qcow2Writer.create(path, { size: 1 << 20, clusterSize: 4096, backing: { name: '../base dir/base.qcow2', format: 'qcow2' } });
    await w.write(4096, pattern(4096, 9));
    await w.commit();
    const img = await Qcow2Image.open(path);
    try {
      expect(img.backing).toMatchObject({ name: '../base dir/base.qcow2', format: 'qcow2' });
      expect(img.details.backingFormat).toBe('qcow2');
    } finally {
      await img.close();
    }
  });

  it('refuses misaligned writes with INTERNAL and unusable options with USAGE', async () => {
    const w = await Qcow2Writer.create(join(tmp(), 'bad.qcow2'), { size: 1 << 20, clusterSize: 4096 });
    await expectImgError(() => w.write(512, new Uint8Array(4096)), 'INTERNAL', { guestOffset: 512 });
    await expectImgError(() => w.write(0, new Uint8Array(100)), 'INTERNAL', { length: 100 });
    await expectImgError(() => w.write(1 << 20, new Uint8Array(4096)), 'INTERNAL');
    await expectImgError(() => w.writeZeros(4096, 2048), 'INTERNAL');
    await w.abort();
    expect(existsSync(join(tmp(), 'bad.qcow2'))).toBe(false);
    await expectImgError(() => Qcow2Writer.create(join(tmp(), 'x.qcow2'), { size: 1 << 20, clusterSize: 4096, extendedL2: true }), 'USAGE');
    await expectImgError(() => Qcow2Writer.create(join(tmp(), 'x.qcow2'), { size: 1 << 20, clusterSize: 3000 }), 'USAGE');
    await expectImgError(() => Qcow2Writer.create(join(tmp(), 'x.qcow2'), { size: 1 << 20, clusterSize: 512, backing: { name: 'b'.repeat(400), format: 'qcow2' } }), 'USAGE');
    expect(readdirSync(tmp()).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('refuses an existing output with OUTPUT_EXISTS unless overwrite', async () => {
    const path = join(tmp(), 'exists.qcow2');
    writeFileSync(path, 'keep me');
    await expectImgError(() => Qcow2Writer.create(path, { size: 4096 }), 'OUTPUT_EXISTS', { file: path });
    const w = await Qcow2Writer.create(path, { size: 4096, overwrite: true });
    await w.commit();
    const img = await Qcow2Image.open(path);
    expect(img.size).toBe(4096);
    await img.close();
  });
});

describe('planRefcounts', () => {
  it('covers the clusters before it plus itself, and no more than needed', () => {
    for (const [base, cs] of [[1, 512], [3, 4096], [255, 512], [256, 512], [100000, 4096], [40000000, 65536]] as const) {
      const p = planRefcounts(base, cs, 4);
      const perBlock = cs / 2;
      expect(p.totalClusters).toBe(base + p.refcountTableClusters + p.refcountBlocks);
      expect(p.refcountBlocks * perBlock).toBeGreaterThanOrEqual(p.totalClusters);
      expect((p.refcountBlocks - 1) * perBlock).toBeLessThan(p.totalClusters);
      expect(p.refcountTableClusters * (cs / 8)).toBeGreaterThanOrEqual(p.refcountBlocks);
    }
  });
});

describe('header encode/decode round trip', () => {
  it('decode(encode(h)) equals h, and extensions decode to what was encoded', () => {
    const h: Qcow2Header = {
      magic: QCOW2_MAGIC, version: 3, backing_file_offset: 136, backing_file_size: 9, cluster_bits: 16, size: 10 * 2 ** 30 + 512,
      crypt_method: 0, l1_size: 20, l1_table_offset: 3 * 65536, refcount_table_offset: 65536, refcount_table_clusters: 1,
      nb_snapshots: 0, snapshots_offset: 0, incompatible_features: QCOW2_INCOMPAT_EXTL2, compatible_features: 0n,
      autoclear_features: 0n, refcount_order: 4, header_length: 112, compression_type: 0,
    };
    const bytes = encodeQcow2Header(h);
    expect(decodeQcow2Header(bytes, 'mem')).toEqual(h);
    expect(encodeQcow2Header(decodeQcow2Header(bytes, 'mem'))).toEqual(bytes);
    const ext = encodeQcow2Extensions({ backingFormat: 'qcow2', featureNames: [{ type: 'incompatible', bit: 4, name: 'extended L2 entries' }] });
    const cluster = new Uint8Array(65536);
    cluster.set(bytes, 0);
    cluster.set(ext, 112);
    cluster.set(new TextEncoder().encode('base.qcow2'.slice(0, 9)), 112 + ext.length);
    const decoded = decodeQcow2Extensions(cluster, { ...h, backing_file_offset: 112 + ext.length }, 'mem');
    expect(decoded.backingFormat).toBe('qcow2');
    expect(decoded.featureNames).toEqual([{ type: 'incompatible', bit: 4, name: 'extended L2 entries' }]);
    expect(decoded.endOffset).toBe(112 + ext.length);
  });
});
