/** The block -> owner table, built in code: lookups, merging of continuing runs, overlaps, free runs. */
import { expect, test } from 'vitest';
import { OwnershipBuilder } from '../../../src/fs/ext4/ownership.js';

test('ownerOf finds the run, offsets lblk, reports free and leaked blocks; continuing runs merge', () => {
  const b = new OwnershipBuilder();
  b.add(100, 10, { kind: 'data', ino: 12, lblk: 0 });
  b.add(110, 5, { kind: 'data', ino: 12, lblk: 10 }); // continues the previous run
  b.add(0, 1, { kind: 'superblock', group: 0 });
  b.add(200, 1, { kind: 'extent node', ino: 12 });
  const own = b.build([[300, 50]], 1000);
  expect(own.runCount).toBe(3);
  expect(own.ownerOf(113)).toEqual({ kind: 'data', ino: 12, lblk: 13 });
  expect(own.ownerOf(0)).toEqual({ kind: 'superblock', group: 0 });
  expect(own.ownerOf(200)).toEqual({ kind: 'extent node', ino: 12 });
  expect(own.ownerOf(320)).toBe('free');
  expect(own.ownerOf(500)).toBeUndefined();
  expect(own.overlappingBlocks).toBe(0);
  expect([...own.runs()].map((r) => [r.start, r.length])).toEqual([[0, 1], [100, 15], [200, 1]]);
});

test('overlapping claims are counted', () => {
  const b = new OwnershipBuilder();
  b.add(10, 10, { kind: 'data', ino: 12, lblk: 0 });
  b.add(15, 10, { kind: 'data', ino: 13, lblk: 0 });
  expect(b.build([], 100).overlappingBlocks).toBe(5);
});

test('stays compact: a million runs cost about 30 bytes each', () => {
  const b = new OwnershipBuilder();
  for (let i = 0; i < 1_000_000; i++) b.add(i * 3, 2, { kind: 'data', ino: 12 + (i % 7), lblk: i * 2 });
  const own = b.build([], 3_000_000);
  expect(own.runCount).toBe(1_000_000);
  expect(own.ownerOf(3 * 777_777 + 1)).toEqual({ kind: 'data', ino: 12 + (777_777 % 7), lblk: 777_777 * 2 + 1 });
});

test.each([
  ['small block numbers (packed numeric sort)', 0],
  ['block numbers near 2^52 (comparator sort)', 2 ** 52],
])('runs come out by start, claims of one start in the order they were added: %s', (_label, base) => {
  const b = new OwnershipBuilder();
  b.add(base + 50, 1, { kind: 'data', ino: 20, lblk: 0 });
  b.add(base + 10, 1, { kind: 'data', ino: 21, lblk: 0 });
  b.add(base + 50, 1, { kind: 'directory', ino: 22, lblk: 0 });
  b.add(base + 30, 2, { kind: 'extent node', ino: 23 });
  const own = b.build([], base + 100);
  expect([...own.runs()].map((r) => [r.start - base, r.ino])).toEqual([
    [10, 21],
    [30, 23],
    [50, 20],
    [50, 22],
  ]);
  expect(own.overlappingBlocks).toBe(1);
});
