/**
 * Qcow2Writer against qemu-img: every image we write passes `qemu-img check` with
 * no errors and no leaks, and reads (qemu-img compare) as the bytes we meant.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Writer } from '../../../src/diskimage/qcow2/Qcow2Writer.js';
import { useTempDir } from '../../helpers/tmp.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap } from '../../helpers/qemu.js';

const tmp = useTempDir();

/** Seeded LCG. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

function fillPattern(buf: Uint8Array, seed: number): Uint8Array {
  const r = rng(seed);
  for (let i = 0; i < buf.length; i += 4) buf[i] = (r() * 255 + 1) | 0; // never an all-zero unit
  return buf;
}

interface Op {
  readonly offset: number;
  readonly length: number;
  readonly zero: boolean;
}

/** Random unit-aligned writes (and some zero ranges) in random order, applied to `expected`. */
function plan(size: number, unit: number, count: number, seed: number): Op[] {
  const r = rng(seed);
  const units = Math.floor(size / unit);
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const start = Math.floor(r() * units);
    const n = Math.min(units - start, 1 + Math.floor(r() * 4));
    ops.push({ offset: start * unit, length: n * unit, zero: r() < 0.2 });
  }
  return ops;
}

const MATRIX = [
  { clusterSize: 512, extendedL2: false },
  { clusterSize: 4096, extendedL2: false },
  { clusterSize: 65536, extendedL2: false },
  { clusterSize: 65536, extendedL2: true },
  { clusterSize: 16384, extendedL2: true },
  { clusterSize: 2 * 1024 * 1024, extendedL2: false },
  { clusterSize: 2 * 1024 * 1024, extendedL2: true },
];

describe('Qcow2Writer standalone images', () => {
  it.each(MATRIX)('cluster $clusterSize extendedL2 $extendedL2: check clean, compare equal', async ({ clusterSize, extendedL2 }) => {
    const size = 24 * 1024 * 1024 + (clusterSize <= 4096 ? 0 : 512); // a partial last cluster where clusters are large
    const path = join(tmp(), `s-${clusterSize}-${extendedL2}.qcow2`);
    const w = await Qcow2Writer.create(path, { size, clusterSize, extendedL2 });
    const expected = new Uint8Array(size);
    const ops = plan(size, w.unitSize, clusterSize <= 4096 ? 400 : 60, clusterSize + (extendedL2 ? 1 : 0));
    for (const [i, op] of ops.entries()) {
      if (op.zero) {
        await w.writeZeros(op.offset, op.length);
        expected.fill(0, op.offset, op.offset + op.length);
      } else {
        const data = fillPattern(new Uint8Array(op.length), i + 7);
        await w.write(op.offset, data);
        expected.set(data, op.offset);
      }
    }
    // The partial tail unit.
    const tailStart = Math.floor((size - 1) / w.unitSize) * w.unitSize;
    const tail = fillPattern(new Uint8Array(size - tailStart), 99);
    await w.write(tailStart, tail);
    expected.set(tail, tailStart);
    await w.commit();

    const ref = join(tmp(), `s-${clusterSize}-${extendedL2}.raw`);
    writeFileSync(ref, expected);
    const check = qemuCheck(path);
    expect(check.clean, check.output).toBe(true);
    expect(qemuCompare(path, ref)).toBe(true);
    const info = JSON.parse(qemuImg('info', '--output=json', path)) as { 'cluster-size': number; 'virtual-size': number; 'format-specific': { data: { compat: string; 'extended-l2'?: boolean; 'refcount-bits': number } } };
    expect(info['cluster-size']).toBe(clusterSize);
    expect(info['virtual-size']).toBe(size);
    expect(info['format-specific'].data.compat).toBe('1.1');
    expect(info['format-specific'].data['refcount-bits']).toBe(16);
    expect(Boolean(info['format-specific'].data['extended-l2'])).toBe(extendedL2);
    // qemu-io can keep writing to it: the refcounts we wrote are the ones qemu allocates against.
    qemuIo(path, ['write -P 0x5a 0 64k', `write -P 0x6b ${size - 4096} 4096`], 'qcow2');
    expect(qemuCheck(path).clean).toBe(true);
    const buf = readFileSync(ref);
    buf.fill(0x5a, 0, 65536);
    buf.fill(0x6b, size - 4096);
    writeFileSync(ref, buf);
    expect(qemuCompare(path, ref)).toBe(true);
  });

  it('an empty image (nothing written) is valid', async () => {
    const path = join(tmp(), 'empty.qcow2');
    const w = await Qcow2Writer.create(path, { size: 10 * 1024 * 1024 * 1024, clusterSize: 65536 });
    await w.commit();
    expect(qemuCheck(path).clean).toBe(true);
    expect(qemuMap(path).every((e) => !e.data)).toBe(true);
    for (const size of [0, 512]) {
      const p = join(tmp(), `tiny-${size}.qcow2`);
      const t = await Qcow2Writer.create(p, { size, clusterSize: 2 * 1024 * 1024 });
      if (size > 0) await t.write(0, fillPattern(new Uint8Array(size), 3));
      await t.commit();
      const c = qemuCheck(p);
      expect(c.clean, c.output).toBe(true);
      expect((JSON.parse(qemuImg('info', '--output=json', p)) as { 'virtual-size': number })['virtual-size']).toBe(size);
    }
  });
});

describe('Qcow2Writer overlays', () => {
  it.each([
    { clusterSize: 4096, extendedL2: false },
    { clusterSize: 65536, extendedL2: true },
  ])('cluster $clusterSize extendedL2 $extendedL2: records backing, holds only what we wrote', async ({ clusterSize, extendedL2 }) => {
    const dir = tmp();
    const size = 8 * 1024 * 1024;
    const base = join(dir, `base-${clusterSize}.qcow2`);
    qemuImg('create', '-q', '-f', 'qcow2', base, String(size));
    qemuIo(base, ['write -P 0x11 0 8M'], 'qcow2');
    const name = `ov-${clusterSize}-${extendedL2}.qcow2`;
    const path = join(dir, name);
    const w = await Qcow2Writer.create(path, { size, clusterSize, extendedL2, backing: { name: `base-${clusterSize}.qcow2`, format: 'qcow2' } });
    const unit = w.unitSize;
    // Scattered units, written out of order, and a zero range over backing data.
    const writes = [7, 3, 100, 101, 40].map((k) => k * unit);
    const expected = Buffer.alloc(size, 0x11);
    for (const off of writes) {
      const data = fillPattern(new Uint8Array(unit), off);
      await w.write(off, data);
      expected.set(data, off);
    }
    await w.writeZeros(200 * unit, 3 * unit);
    expected.fill(0, 200 * unit, 203 * unit);
    await w.commit();

    const check = qemuCheck(path);
    expect(check.clean, check.output).toBe(true);
    const ref = join(dir, `${name}.raw`);
    writeFileSync(ref, expected);
    expect(qemuCompare(path, ref)).toBe(true);
    const info = JSON.parse(qemuImg('info', '--output=json', path)) as Record<string, unknown>;
    expect(info['backing-filename']).toBe(`base-${clusterSize}.qcow2`);
    expect(info['backing-filename-format']).toBe('qcow2');
    // Depth 0 (this overlay) exactly where we wrote; everything else comes from the base.
    const top = qemuMap(path).filter((e) => e.depth === 0);
    const covered = new Set<number>();
    for (const e of top) for (let o = e.start; o < e.start + e.length; o += unit) covered.add(o);
    const want = new Set<number>([...writes, 200 * unit, 201 * unit, 202 * unit]);
    expect([...covered].sort((a, b) => a - b)).toEqual([...want].sort((a, b) => a - b));
    expect(top.filter((e) => e.data).reduce((n, e) => n + e.length, 0)).toBe(writes.length * unit);
  });
});
