/**
 * WriteBackDevice against a plain byte array that takes every write at once: any sequence
 * of writes (small ones gathered into units, large ones straight through over cached units,
 * writes past a unit's end, the short unit at the device's end) reads back the same bytes
 * before and after flush, the device below holds them all after flush, and it received
 * each small write's unit once rather than once per write.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { ByteRange, Extent, WritableDevice } from '../../../src/diskimage/BlockDevice.js';
import { WriteBackDevice } from '../../../src/diskimage/cow/WriteBackDevice.js';

/** A device in a byte array, counting the writes it gets. */
class ArrayDevice implements WritableDevice {
  readonly bytes: Uint8Array;
  writes = 0;
  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) this.bytes[i] = (i * 7 + 3) & 0xff;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.bytes.slice(offset, offset + length);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset < 0 || offset + data.length > this.size) throw new Error(`write ${offset}+${data.length} outside ${this.size}`);
    this.writes++;
    this.bytes.set(data, offset);
  }
  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    yield { offset: range?.offset ?? 0, length: range?.length ?? this.size, kind: 'data' };
  }
  /** A discarded range reads as what lies below: here 0xee. */
  async discard(offset: number, length: number): Promise<void> {
    this.bytes.fill(0xee, offset, offset + length);
  }
}

const SIZE = 64 * 1024 + 1000; // the last 4 KiB unit is short
const UNIT = 4096;

const writeArb = fc.record({
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 3 * UNIT }), fc.constant(UNIT)),
  seed: fc.integer({ min: 0, max: 255 }),
});

describe('WriteBackDevice', () => {
  test('reads and the flushed device equal the writes applied in order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(writeArb, { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 20 }), async (writes, maxUnits) => {
        const lower = new ArrayDevice(SIZE);
        const model = lower.bytes.slice();
        const wb = new WriteBackDevice(lower, { unit: UNIT, maxBytes: maxUnits * UNIT });
        for (const w of writes) {
          const length = Math.min(w.length, SIZE - w.offset);
          const data = new Uint8Array(length).map((_, i) => (w.seed + i * 13) & 0xff);
          await wb.write(w.offset, data);
          model.set(data, w.offset);
          // A read across the written range and its neighbours sees every write so far.
          const from = Math.max(0, w.offset - UNIT);
          const to = Math.min(SIZE, w.offset + length + UNIT);
          expect(Buffer.from(await wb.read(from, to - from)).equals(Buffer.from(model.subarray(from, to)))).toBe(true);
        }
        expect(wb.heldBytes).toBeLessThanOrEqual((maxUnits + 3) * UNIT);
        expect(Buffer.from(await wb.read(0, SIZE)).equals(Buffer.from(model))).toBe(true);
        await wb.flush();
        expect(wb.heldBytes).toBe(0);
        expect(Buffer.from(lower.bytes).equals(Buffer.from(model))).toBe(true);
      }),
      { numRuns: 150, seed: 7 },
    );
  });

  test('a discard forgets what is held for its range, also in part of a unit, and reads as the device below does', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(writeArb, fc.boolean()), { minLength: 1, maxLength: 60 }), async (ops) => {
        const lower = new ArrayDevice(SIZE);
        const model = lower.bytes.slice();
        const wb = new WriteBackDevice(lower, { unit: UNIT, maxBytes: 8 * UNIT });
        for (const [w, discard] of ops) {
          const length = Math.min(w.length, SIZE - w.offset);
          if (discard) {
            await wb.discard(w.offset, length);
            model.fill(0xee, w.offset, w.offset + length);
          } else {
            const data = new Uint8Array(length).map((_, i) => (w.seed + i * 13) & 0xff);
            await wb.write(w.offset, data);
            model.set(data, w.offset);
          }
        }
        expect(Buffer.from(await wb.read(0, SIZE)).equals(Buffer.from(model))).toBe(true);
        await wb.flush();
        expect(Buffer.from(lower.bytes).equals(Buffer.from(model))).toBe(true);
      }),
      { numRuns: 150, seed: 11 },
    );
  });

  test('a hundred small writes into one unit reach the device as one write', async () => {
    const lower = new ArrayDevice(SIZE);
    const wb = new WriteBackDevice(lower, { unit: UNIT });
    for (let i = 0; i < 100; i++) await wb.write(UNIT + i * 16, new Uint8Array(16).fill(i));
    expect(lower.writes).toBe(0);
    await wb.flush();
    expect(lower.writes).toBe(1);
    for (let i = 0; i < 100; i++) expect(lower.bytes[UNIT + i * 16]).toBe(i);
  });

  test('allocation flushes first, so the map it gives covers what was written', async () => {
    const lower = new ArrayDevice(SIZE);
    const wb = new WriteBackDevice(lower, { unit: UNIT });
    await wb.write(10, new Uint8Array([1, 2, 3]));
    for await (const _ of wb.allocation()) void _;
    expect([...lower.bytes.subarray(10, 13)]).toEqual([1, 2, 3]);
  });
});
