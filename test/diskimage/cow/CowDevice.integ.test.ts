/**
 * CowDevice emitted into real image writers, judged by qemu-img: a layer of random
 * writes over a qcow2 (or VMDK) base, emitted as an overlay on that base and as a
 * complete image, passes `qemu-img check` and `qemu-img compare`s equal to a raw
 * model (qemu's own raw of the base with the same writes applied). Emitting an
 * overlay over a 1 TiB base reads only the units the layer touched.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../../helpers/tmp.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap } from '../../helpers/qemu.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import { CowDevice } from '../../../src/diskimage/cow/CowDevice.js';
import { Qcow2Writer } from '../../../src/diskimage/qcow2/Qcow2Writer.js';
import { RawWriter } from '../../../src/diskimage/raw/RawWriter.js';
import { VmdkImageWriter } from '../../../src/diskimage/vmdk/VmdkWriter.js';
import { VmdkImage } from '../../../src/diskimage/vmdk/VmdkImage.js';
import type { BlockDevice, ByteRange, Extent } from '../../../src/diskimage/BlockDevice.js';
import type { ImageWriter } from '../../../src/diskimage/ImageWriter.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';

const tmp = useTempDir('imgdedup-cow-integ-');
const KiB = 1024;
const MiB = 1024 * KiB;
/** Not a multiple of any cluster size: the last unit is partial. */
const SIZE = 8 * MiB + 3 * 512;

type Write = { at: number; data: Uint8Array } | { at: number; zeros: number };

/** Random writes: any alignment, overlapping, a few zero ranges, some near the end. */
function randomWrites(seed: number, size: number, count: number): Write[] {
  const r = mulberry32(seed); // seeded: every run writes the same bytes
  const out: Write[] = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(r() ** 3 * 200 * KiB);
    const at = i % 7 === 6 ? size - len : Math.floor(r() * (size - len));
    if (i % 5 === 4) out.push({ at, zeros: len });
    else {
      const data = new Uint8Array(len);
      for (let j = 0; j < len; j++) data[j] = (r() * 256) | 0;
      out.push({ at, data });
    }
  }
  return out;
}

async function applyToCow(dev: CowDevice, writes: readonly Write[]): Promise<void> {
  for (const w of writes) {
    if ('data' in w) await dev.write(w.at, w.data);
    else await dev.writeZeros(w.at, w.zeros);
  }
}

/** qemu's raw of `image` with `writes` applied, as a file. */
function modelRaw(image: string, writes: readonly Write[], name: string): string {
  const raw = join(tmp(), `${name}.model.raw`);
  qemuImg('convert', '-O', 'raw', image, raw);
  const bytes = readFileSync(raw);
  for (const w of writes) {
    if ('data' in w) bytes.set(w.data, w.at);
    else bytes.fill(0, w.at, w.at + w.zeros);
  }
  writeFileSync(raw, bytes);
  return raw;
}

function makeBase(name: string, format: 'qcow2' | 'vmdk', size = SIZE): string {
  const path = join(tmp(), name);
  qemuImg('create', '-q', '-f', format, path, String(size));
  qemuIo(path, ['write -P 0x11 0 300k', 'write -P 0x22 1M 1M', 'write -P 0x33 5000k 700k', `write -P 0x44 ${size - 64 * KiB} 64k`], format);
  return path;
}

/** Guest ranges the top layer of `image` maps (data or zero), per qemu. */
function topLayerRanges(image: string): ByteRange[] {
  return qemuMap(image)
    .filter((e) => e.depth === 0 && (e.data || e.zero))
    .map((e) => ({ offset: e.start, length: e.length }));
}

function unitsOf(ranges: readonly ByteRange[], unit: number): Set<number> {
  const s = new Set<number>();
  for (const r of ranges) for (let u = Math.floor(r.offset / unit); u * unit < r.offset + r.length; u++) s.add(u);
  return s;
}

function dirtyOf(writes: readonly Write[]): ByteRange[] {
  return writes.map((w) => ({ offset: w.at, length: 'data' in w ? w.data.length : w.zeros }));
}

async function emit(dev: CowDevice, writer: ImageWriter): Promise<void> {
  try {
    await dev.emitTo(writer);
    await writer.commit();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Counts what is read from a device. */
class CountingDevice implements BlockDevice {
  bytesRead = 0;
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.bytesRead += length;
    return this.inner.read(offset, length);
  }
  allocation(range?: ByteRange): AsyncIterable<Extent> {
    return this.inner.allocation(range);
  }
}

describe('CowDevice.emitTo', () => {
  it.each([
    { clusterSize: 4096, extendedL2: false },
    { clusterSize: 65536, extendedL2: false },
    { clusterSize: 65536, extendedL2: true },
  ])('a qcow2 overlay ($clusterSize-byte clusters, extended L2 $extendedL2) on the base reads as base + writes, and maps only touched units', async ({ clusterSize, extendedL2 }) => {
    const name = `q${clusterSize}${extendedL2 ? 'x' : ''}`;
    const base = makeBase(`${name}-base.qcow2`, 'qcow2');
    const writes = randomWrites(clusterSize + (extendedL2 ? 1 : 0), SIZE, 40);
    const out = join(tmp(), `${name}-overlay.qcow2`);
    const chain = await openChain(base);
    const dev = new CowDevice(chain.device, { memoryBudgetBytes: 256 * KiB, tempDir: tmp() });
    try {
      await applyToCow(dev, writes);
      expect(dev.spilledBytes).toBeGreaterThan(0);
      await emit(dev, await Qcow2Writer.create(out, { size: SIZE, clusterSize, extendedL2, backing: { name: `${name}-base.qcow2`, format: 'qcow2' } }));
    } finally {
      await dev.close();
      await chain.close();
    }
    expect(qemuCheck(out).clean).toBe(true);
    expect(qemuCompare(out, modelRaw(base, writes, name))).toBe(true);
    const unit = extendedL2 ? clusterSize / 32 : clusterSize;
    const allowed = unitsOf(dirtyOf(writes), unit);
    expect([...unitsOf(topLayerRanges(out), unit)].every((u) => allowed.has(u))).toBe(true);
  });

  it('a VMDK delta on a VMDK base reads as base + writes', async () => {
    const base = makeBase('v-base.vmdk', 'vmdk');
    const writes = randomWrites(7, SIZE, 30);
    const out = join(tmp(), 'v-delta.vmdk');
    const chain = await openChain(base);
    const dev = new CowDevice(chain.device, { memoryBudgetBytes: 64 * KiB, tempDir: tmp() });
    try {
      await applyToCow(dev, writes);
      const top = chain.layers[0];
      if (!(top instanceof VmdkImage)) throw new Error('expected a VMDK base');
      await emit(dev, await VmdkImageWriter.create(out, SIZE, { grainSizeSectors: 16, parent: { fileNameHint: 'v-base.vmdk', cid: top.cid } }));
    } finally {
      await dev.close();
      await chain.close();
    }
    expect(qemuCheck(out, 'vmdk').clean).toBe(true);
    expect(qemuCompare(out, modelRaw(base, writes, 'v'))).toBe(true);
    const allowed = unitsOf(dirtyOf(writes), 8 * KiB);
    expect([...unitsOf(topLayerRanges(out), 8 * KiB)].every((u) => allowed.has(u))).toBe(true);
  });

  it.each(['raw', 'qcow2'] as const)('a complete %s image holds the base and the writes, with no backing', async (format) => {
    const base = makeBase(`c-${format}-base.qcow2`, 'qcow2');
    const writes = randomWrites(99, SIZE, 30);
    const out = join(tmp(), `c-${format}.${format}`);
    const chain = await openChain(base);
    const dev = new CowDevice(chain.device, { memoryBudgetBytes: 128 * KiB, tempDir: tmp() });
    try {
      await applyToCow(dev, writes);
      const writer = format === 'raw' ? await RawWriter.create(out, { size: SIZE, unitSize: 4096 }) : await Qcow2Writer.create(out, { size: SIZE, clusterSize: 4096 });
      await emit(dev, writer);
    } finally {
      await dev.close();
      await chain.close();
    }
    if (format === 'qcow2') {
      expect(qemuCheck(out).clean).toBe(true);
      expect(JSON.parse(qemuImg('info', '--output=json', out))).not.toHaveProperty('backing-filename');
    }
    expect(qemuCompare(out, modelRaw(base, writes, `c-${format}`))).toBe(true);
  });

  it('an overlay over a 1 TiB base costs what the layer holds: lower reads stay within the touched units', async () => {
    const TiB = 1024 * 1024 * MiB;
    const base = join(tmp(), 'big-base.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '1T');
    qemuIo(base, ['write -P 0x55 0 1M', 'write -P 0x66 500G 1M', `write -P 0x77 ${TiB - MiB} 1M`]);
    // Pattern writes, so qemu-io can make the reference overlay.
    const writes = [
      { at: 100, len: 5000, p: 0x81 },
      { at: 500 * 1024 * MiB + 65536 - 10, len: 20, p: 0x82 },
      { at: 700 * 1024 * MiB + 12345, len: 200 * KiB, p: 0x83 },
      { at: TiB - 777, len: 777, p: 0x84 },
    ];
    const out = join(tmp(), 'big-overlay.qcow2');
    const chain = await openChain(base);
    const lower = new CountingDevice(chain.device);
    const dev = new CowDevice(lower, { tempDir: tmp() });
    try {
      for (const w of writes) await dev.write(w.at, new Uint8Array(w.len).fill(w.p));
      lower.bytesRead = 0;
      await emit(dev, await Qcow2Writer.create(out, { size: TiB, clusterSize: 65536, backing: { name: 'big-base.qcow2', format: 'qcow2' } }));
    } finally {
      await dev.close();
      await chain.close();
    }
    const touched = unitsOf(writes.map((w) => ({ offset: w.at, length: w.len })), 65536);
    expect(touched.size).toBe(8); // 1 + 2 + 4 + 1 clusters
    expect(lower.bytesRead).toBeLessThanOrEqual(touched.size * 65536);
    expect(qemuCheck(out).clean).toBe(true);
    const ref = join(tmp(), 'big-ref.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'big-base.qcow2', '-F', 'qcow2', ref);
    qemuIo(ref, writes.map((w) => `write -P ${w.p} ${w.at} ${w.len}`));
    expect(qemuCompare(out, ref)).toBe(true);
  });
});
