/**
 * CowDevice against a plain byte-array model: random sequences of writes (any
 * offset, length and alignment, overlapping, data, zeros, and links to the same bytes of
 * another device) with memory budgets
 * small enough to force the spill file. After each sequence, reads anywhere equal
 * the model, dirtyRanges() is exactly the set of written bytes, and emitting into
 * a writer reproduces the model (as an overlay over the lower content, touching
 * only units with written bytes, or as a complete image).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CowDevice } from '../../../src/diskimage/cow/CowDevice.js';
import { collect } from '../../../src/diskimage/extents.js';
import { BytesDevice, MemoryImageWriter } from '../../helpers/BytesDevice.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { useTempDir } from '../../helpers/tmp.js';

const tmp = useTempDir('imgdedup-cow-');

type Op = { kind: 'write' | 'zeros' | 'zeroData' | 'link' | 'discard'; at: number; len: number; seed: number };

function opData(op: Op, len: number): Uint8Array {
  const d = new Uint8Array(len);
  if (op.kind === 'write') for (let j = 0; j < len; j++) d[j] = (op.seed + j * 31) & 255;
  return d;
}

/** A lower device: pattern bytes inside a few stored ranges, zeros elsewhere. */
function makeLower(size: number, seed: number): BytesDevice {
  const bytes = new Uint8Array(size);
  const stored: { offset: number; length: number }[] = [];
  const step = Math.max(1, Math.floor(size / 5));
  for (let off = (seed % 3) * 97; off < size; off += step) {
    const length = Math.min(size - off, Math.floor(step / 2) + 1);
    stored.push({ offset: off, length });
    for (let i = off; i < off + length; i++) bytes[i] = ((i * 7 + seed) & 255) | 1;
    off += length;
  }
  return new BytesDevice(bytes, stored);
}

/** Ascending maximal runs of true in `mask`. */
function runsOf(mask: Uint8Array): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (let i = 0; i < mask.length; ) {
    if (!mask[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < mask.length && mask[j]) j++;
    out.push({ offset: i, length: j - i });
    i = j;
  }
  return out;
}

const opArb = fc.record({
  kind: fc.constantFrom<Op['kind']>('write', 'write', 'zeros', 'zeroData', 'link', 'discard'),
  at: fc.nat(),
  len: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 5000 })),
  seed: fc.nat(255),
});

interface Scenario {
  size: number;
  lowerSeed: number;
  budget: number;
  unit: number;
  ops: Op[];
  reads: { at: number; len: number }[];
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  size: fc.integer({ min: 1, max: 20000 }),
  lowerSeed: fc.nat(255),
  budget: fc.constantFrom(0, 64, 1000, 8192, 1 << 20),
  unit: fc.constantFrom(512, 1024, 4096),
  ops: fc.array(opArb, { maxLength: 30 }),
  reads: fc.array(fc.record({ at: fc.nat(), len: fc.integer({ min: 0, max: 6000 }) }), { maxLength: 10 }),
});

async function runScenario(s: Scenario): Promise<void> {
  const lower = makeLower(s.size, s.lowerSeed);
  // What 'link' ops point at: another device of the same coordinates, with other bytes.
  const source = makeLower(s.size, s.lowerSeed + 1);
  for (let i = 0; i < s.size; i++) source.bytes[i] = (source.bytes[i]! + 1 + (i % 13)) & 255;
  const model = lower.bytes.slice();
  const written = new Uint8Array(s.size);
  const dev = new CowDevice(lower, { memoryBudgetBytes: s.budget, tempDir: tmp() });
  try {
    for (const op of s.ops) {
      const at = op.at % (s.size + 1);
      const len = Math.min(op.len, s.size - at);
      if (op.kind === 'discard') {
        // Forgotten: the range reads as the lower device again, and the layer holds nothing there.
        await dev.discard(at, len);
        model.set(lower.bytes.subarray(at, at + len), at);
        written.fill(0, at, at + len);
        expect(dev.memoryBytes).toBeLessThanOrEqual(s.budget);
        continue;
      }
      if (op.kind === 'zeros') await dev.writeZeros(at, len);
      else if (op.kind === 'link') await dev.link(at, len, source);
      else await dev.write(at, opData(op, len));
      model.set(op.kind === 'link' ? source.bytes.subarray(at, at + len) : opData(op, len), at);
      written.fill(1, at, at + len);
      expect(dev.memoryBytes).toBeLessThanOrEqual(s.budget);
    }
    expect(Buffer.from(await dev.read(0, s.size)).equals(Buffer.from(model))).toBe(true);
    for (const r of s.reads) {
      const at = r.at % (s.size + 1);
      const got = await dev.read(at, r.len);
      const want = new Uint8Array(r.len);
      want.set(model.subarray(at, Math.min(s.size, at + r.len)));
      expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
    }
    expect(await collect(dev.dirtyRanges())).toEqual(runsOf(written));
    // The layer alone: exactly the written bytes; its zero extents read as zeros.
    const layer = await collect(dev.layerAllocation());
    const covered = new Uint8Array(s.size);
    for (const e of layer) {
      covered.fill(1, e.offset, e.offset + e.length);
      if (e.kind === 'zero') expect(model.subarray(e.offset, e.offset + e.length).every((b) => b === 0)).toBe(true);
    }
    expect(Buffer.from(covered).equals(Buffer.from(written))).toBe(true);
    // The whole stack: every non-zero byte lies in a data extent.
    const data = new Uint8Array(s.size);
    for (const e of await collect(dev.allocation())) if (e.kind === 'data') data.fill(1, e.offset, e.offset + e.length);
    expect(model.every((b, i) => b === 0 || data[i] === 1)).toBe(true);

    // Overlay: over the lower content, only units holding written bytes are touched.
    const overlay = new MemoryImageWriter(s.size, s.unit, true, lower.bytes);
    lower.bytesRead = 0;
    await dev.emitTo(overlay, { chunkBytes: 2 * s.unit });
    expect(Buffer.from(overlay.content).equals(Buffer.from(model))).toBe(true);
    const dirtyUnits = new Set<number>();
    for (let i = 0; i < s.size; i++) if (written[i]) dirtyUnits.add(Math.floor(i / s.unit));
    expect([...overlay.touchedUnits].every((u) => dirtyUnits.has(u))).toBe(true);
    expect(lower.bytesRead).toBeLessThanOrEqual(dirtyUnits.size * s.unit);

    // Complete image: zeros where nothing is stored.
    const full = new MemoryImageWriter(s.size, s.unit, false);
    await dev.emitTo(full);
    expect(Buffer.from(full.content).equals(Buffer.from(model))).toBe(true);
  } finally {
    await dev.close();
  }
}

describe('CowDevice', () => {
  it('reads, dirty ranges and emitted images equal a byte-array model for random writes (spilling)', async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, runScenario), { seed: 20261126, numRuns: 150 });
  });

  it('the same on tiny devices, where writes collide byte by byte', async () => {
    const tiny = fc.record({
      size: fc.integer({ min: 1, max: 300 }),
      lowerSeed: fc.nat(255),
      budget: fc.constantFrom(0, 16, 100),
      unit: fc.constant(512),
      ops: fc.array(fc.record({ kind: opArb.map((o) => o.kind), at: fc.nat(), len: fc.integer({ min: 0, max: 50 }), seed: fc.nat(255) }), { maxLength: 60 }),
      reads: fc.array(fc.record({ at: fc.nat(), len: fc.integer({ min: 0, max: 300 }) }), { maxLength: 10 }),
    });
    await fc.assert(fc.asyncProperty(tiny, runScenario), { seed: 1126, numRuns: 300 });
  });

  it('stays right with thousands of scattered writes (many leaves in the piece list)', async () => {
    const size = 1 << 20;
    const lower = makeLower(size, 9);
    const model = lower.bytes.slice();
    const dev = new CowDevice(lower, { memoryBudgetBytes: 100000, tempDir: tmp() });
    let x = 7;
    for (let i = 0; i < 4000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const at = x % (size - 300);
      const len = 1 + (x >>> 24);
      const d = new Uint8Array(len).fill((i % 250) + 1);
      if (i % 9 === 0) {
        await dev.writeZeros(at, len);
        d.fill(0);
      } else await dev.write(at, d);
      model.set(d, at);
    }
    expect(Buffer.from(await dev.read(0, size)).equals(Buffer.from(model))).toBe(true);
    await dev.close();
  });

  it('allocation() is the stack (the layer at depth 0 over the lower device one deeper); layerAllocation() the layer alone', async () => {
    const lower = new BytesDevice(new Uint8Array(10000).fill(1, 2000, 6000), [{ offset: 2000, length: 4000 }]);
    const dev = new CowDevice(lower);
    await dev.write(1000, new Uint8Array(2000).fill(2));
    await dev.writeZeros(5000, 500);
    expect(await collect(dev.allocation())).toEqual([
      { offset: 1000, length: 2000, kind: 'data', depth: 0 },
      { offset: 3000, length: 2000, kind: 'data', depth: 1 },
      { offset: 5000, length: 500, kind: 'zero', depth: 0 },
      { offset: 5500, length: 500, kind: 'data', depth: 1 },
    ]);
    expect(await collect(dev.allocation({ offset: 2500, length: 1000 }))).toEqual([
      { offset: 2500, length: 500, kind: 'data', depth: 0 },
      { offset: 3000, length: 500, kind: 'data', depth: 1 },
    ]);
    expect(await collect(dev.layerAllocation())).toEqual([
      { offset: 1000, length: 2000, kind: 'data' },
      { offset: 5000, length: 500, kind: 'zero' },
    ]);
    await dev.close();
  });

  it('keeps memory within the budget and spills the rest to a file that is never visible', async () => {
    const lower = makeLower(1 << 20, 5);
    const dir = join(tmp(), 'spill');
    (await import('node:fs')).mkdirSync(dir);
    const dev = new CowDevice(lower, { memoryBudgetBytes: 10000, tempDir: dir });
    const model = lower.bytes.slice();
    for (let i = 0; i < 50; i++) {
      const at = (i * 20011) % (1 << 19);
      const d = new Uint8Array(3000 + i).fill(i + 1);
      await dev.write(at, d);
      model.set(d, at);
      expect(dev.memoryBytes).toBeLessThanOrEqual(10000);
    }
    expect(dev.spilledBytes).toBeGreaterThan(0);
    expect(readdirSync(dir)).toEqual([]); // unlinked as soon as created
    expect(Buffer.from(await dev.read(0, 1 << 20)).equals(Buffer.from(model))).toBe(true);
    await dev.close();
    await expectImgError(() => dev.read(0, 1), 'INTERNAL');
    await dev.close(); // idempotent
  });

  it('frees the memory of overwritten data', async () => {
    const dev = new CowDevice(makeLower(1 << 20, 1), { memoryBudgetBytes: 2 << 20 });
    await dev.write(0, new Uint8Array(600000).fill(1));
    await dev.write(0, new Uint8Array(599000).fill(2)); // leaves 1000 bytes of the first write
    expect(dev.memoryBytes).toBe(599000 + 1000);
    await dev.writeZeros(0, 1 << 20);
    expect(dev.memoryBytes).toBe(0);
    expect(await collect(dev.layerAllocation())).toEqual([{ offset: 0, length: 1 << 20, kind: 'zero' }]);
    await dev.close();
  });

  it('applies operations in the order they were called, even when not awaited', async () => {
    const lower = makeLower(4096, 2);
    const dev = new CowDevice(lower, { memoryBudgetBytes: 0, tempDir: tmp() }); // every write spills (asynchronous file I/O)
    const before = dev.read(100, 10);
    const w1 = dev.write(100, new Uint8Array(10).fill(7));
    const mid = dev.read(100, 10);
    const w2 = dev.writeZeros(105, 5);
    const after = dev.read(100, 10);
    await Promise.all([w1, w2]);
    expect([...(await before)]).toEqual([...lower.bytes.subarray(100, 110)]);
    expect([...(await mid)]).toEqual(Array(10).fill(7));
    expect([...(await after)]).toEqual([7, 7, 7, 7, 7, 0, 0, 0, 0, 0]);
    await dev.close();
  });

  it('emits only when the writer matches: overlay skips units that equal the lower device on request', async () => {
    const lower = makeLower(8192, 3);
    const dev = new CowDevice(lower);
    await dev.write(0, lower.bytes.subarray(0, 1024)); // rewrites identical bytes
    await dev.write(5000, new Uint8Array([1, 2, 3]));
    const w = new MemoryImageWriter(8192, 1024, true, lower.bytes);
    const stats = await dev.emitTo(w, { skipUnchanged: true });
    expect(stats).toMatchObject({ mode: 'overlay', unchangedUnits: 1, unitsWritten: 1 });
    expect([...w.touchedUnits]).toEqual([4]);
    await expectImgError(() => dev.emitTo(new MemoryImageWriter(4096, 512, true)), 'INTERNAL');
    await dev.close();
  });

  it('refuses writes outside the device; a spill directory that cannot be used is IO, and the device is unusable after it', async () => {
    const dev = new CowDevice(makeLower(4096, 0), { memoryBudgetBytes: 0, tempDir: join(tmp(), 'missing') });
    await expectImgError(() => dev.write(4000, new Uint8Array(100)), 'INTERNAL', { guestOffset: 4000, length: 100 });
    await expectImgError(() => dev.writeZeros(-1, 2), 'INTERNAL');
    await expectImgError(() => dev.write(0, new Uint8Array(10).fill(1)), 'IO', { file: expect.stringContaining('missing') });
    // A failed write may have left half its bytes in the spill file: the device refuses further use.
    await expectImgError(() => dev.read(0, 10), 'IO');
    await expectImgError(() => collect(dev.dirtyRanges()), 'IO');
    await dev.close();
  });
});

describe('CowDevice with large writes past its budget (spilled copies reused)', () => {
  it('keeps every write as given even when the caller reuses its buffer at once, and readInto equals the model', async () => {
    const size = 8 << 20;
    const lower = makeLower(size, 3);
    const model = lower.bytes.slice();
    const budget = 1 << 20;
    const dev = new CowDevice(lower, { memoryBudgetBytes: budget, tempDir: tmp() });
    // One Buffer the caller refills for every write without waiting (the copy is taken at the call).
    const scratch = Buffer.alloc(1536 << 10);
    let x = 11;
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 120; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      // Lengths around the power-of-two sizes: 64 KiB .. 1.5 MiB, odd offsets.
      const len = (64 << 10) + (x % (1472 << 10));
      const at = (x >>> 3) % (size - len);
      const d = scratch.subarray(0, len);
      d.fill((i % 251) + 1);
      d[0] = i & 255;
      pending.push(dev.write(at, d));
      model.set(d, at);
      scratch.fill(0xee); // reused at once
      expect(dev.memoryBytes).toBeLessThanOrEqual(budget);
    }
    await Promise.all(pending);
    expect(dev.spilledBytes).toBeGreaterThan(0);
    const all = new Uint8Array(size);
    await dev.readInto(all, 0);
    expect(Buffer.from(all).equals(Buffer.from(model))).toBe(true);
    // Pieces at odd places through readInto and read.
    for (const [at, len] of [[1, 100_000], [size - 70_000, 70_000], [3 << 20, 2 << 20]] as const) {
      const part = new Uint8Array(len).fill(0xaa);
      await dev.readInto(part, at);
      expect(Buffer.from(part).equals(Buffer.from(model.subarray(at, at + len)))).toBe(true);
      expect(Buffer.from(await dev.read(at, len)).equals(Buffer.from(model.subarray(at, at + len)))).toBe(true);
    }
    await dev.close();
  });
});
