/** DirListing's columns: entries added as names in place, then ordered by name bytes as compareBytes orders them. */
import { describe, expect, test } from 'vitest';
import { DirListing } from '../../../src/fs/ext4/dirListing.js';
import { compareBytes } from '../../../src/fs/ext4/names.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';

function listingOf(names: Uint8Array[]): DirListing {
  const l = new DirListing(2, new Uint8Array(0), undefined, -1, 4);
  // Names arrive at an offset within a larger buffer, as in a directory block.
  names.forEach((name, i) => {
    const block = new Uint8Array(name.length + 7);
    block.set(name, 7);
    l.add(1000 + i, i % 3, block, 7, name.length);
  });
  return l;
}

describe('DirListing', () => {
  test('keeps every entry added, growing past its first capacity', () => {
    const names = Array.from({ length: 300 }, (_, i) => new TextEncoder().encode(`entry-${i}`));
    const l = listingOf(names);
    expect(l.count).toBe(300);
    names.forEach((name, i) => {
      expect(Array.from(l.name(i))).toEqual(Array.from(name));
      expect([l.ino[i], l.fileType[i]]).toEqual([1000 + i, i % 3]);
    });
  });

  test('sortByName orders by name bytes (a reference stable sort by compareBytes), entries keeping their numbers and types', () => {
    const rnd = mulberry32(11);
    const alphabet = [0x00, 0x01, 0x2e, 0x41, 0x61, 0x62, 0x7f, 0x80, 0xe9, 0xff];
    for (let round = 0; round < 40; round++) {
      // Short names from a small alphabet: shared 4-byte prefixes, prefixes of each other,
      // NUL bytes (corrupt, but ordered all the same), high bytes and duplicates.
      const names = Array.from({ length: 1 + Math.floor(rnd() * 200) }, () =>
        Uint8Array.from({ length: 1 + Math.floor(rnd() * 7) }, () => alphabet[Math.floor(rnd() * alphabet.length)]!),
      );
      const l = listingOf(names);
      l.sortByName();
      const expected = names.map((name, i) => ({ name, i })).sort((a, b) => compareBytes(a.name, b.name) || a.i - b.i);
      expect(l.count).toBe(names.length);
      expected.forEach((e, k) => {
        expect(Array.from(l.name(k))).toEqual(Array.from(e.name));
        expect([l.ino[k], l.fileType[k]]).toEqual([1000 + e.i, e.i % 3]);
      });
    }
  });
});
