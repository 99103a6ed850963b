/**
 * dxHash against e2fsprogs: `debugfs dx_hash -h VERSION -s SEED NAME` for seeded random
 * names (any byte but NUL, '/' and newline, so non-UTF-8 and high bytes that the signed
 * and unsigned variants read differently), names of 1..255 bytes across the 16- and
 * 32-byte block boundaries of tea and half_md4, and the default and random seeds.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { dxHash, effectiveHashVersion } from '../../../src/fs/ext4/dxHash.js';

/** mulberry32: a small seeded generator. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomName(next: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    let b: number;
    do b = Math.floor(next() * 256);
    while (b === 0 || b === 0x2f || b === 0x0a || b === 0x0d);
    out[i] = b;
  }
  return out;
}

/** The seed words as debugfs's -s takes them: a UUID whose bytes are the words little-endian. */
function seedUuid(seed: readonly number[]): string {
  const b = Buffer.alloc(16);
  seed.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

interface Case {
  readonly name: Uint8Array;
  readonly version: number;
  readonly seed: readonly number[];
}

/** One debugfs process for all cases; names quoted for debugfs's parser ('"' doubled), bytes passed through as latin1. */
function debugfsHashes(cases: readonly Case[]): Array<{ hash: number; minorHash: number }> {
  const script = cases
    .map((c) => `dx_hash -h ${c.version} -s ${seedUuid(c.seed)} -- "${Buffer.from(c.name).toString('latin1').replace(/"/g, '""')}"`)
    .join('\n');
  const r = spawnSync('debugfs', ['-f', '-'], { input: Buffer.from(script + '\n', 'latin1'), maxBuffer: 1 << 30 });
  const out = r.stdout.toString('latin1');
  const hashes = [...out.matchAll(/ is 0x([0-9a-f]+) \(minor 0x([0-9a-f]+)\)\n/g)].map((m) => ({ hash: parseInt(m[1]!, 16), minorHash: parseInt(m[2]!, 16) }));
  expect(hashes.length, out.slice(0, 2000)).toBe(cases.length);
  return hashes;
}

describe('dxHash equals debugfs dx_hash', () => {
  it('legacy, half_md4 and tea, signed and unsigned, default and random seeds, on thousands of names', () => {
    const next = rng(0x5eed);
    const zero = [0, 0, 0, 0];
    const seeds = [zero, [1, 2, 3, 4], [0xdeadbeef, 0x01234567, 0x89abcdef, 0xfedcba98]];
    const names: Uint8Array[] = [];
    for (let len = 1; len <= 70; len++) names.push(randomName(next, len));
    names.push(randomName(next, 255), randomName(next, 254), randomName(next, 253));
    const high = new Uint8Array(255).fill(0x80);
    names.push(new Uint8Array(255).fill(0xff), high, Buffer.from('hello'), Buffer.from('.'), Buffer.from('..'));
    for (let i = 0; i < 1200; i++) names.push(randomName(next, 1 + Math.floor(next() ** 2 * 255)));
    const cases: Case[] = [];
    names.forEach((name, i) => {
      for (let version = 0; version < 6; version++) cases.push({ name, version, seed: seeds[(i + version) % seeds.length]! });
    });
    const expected = debugfsHashes(cases);
    const actual = cases.map((c) => dxHash(c.name, c.version, c.seed));
    let mismatches = 0;
    cases.forEach((c, i) => {
      if (actual[i]!.hash !== expected[i]!.hash || actual[i]!.minorHash !== expected[i]!.minorHash) {
        if (mismatches++ < 5) expect({ name: Buffer.from(c.name).toString('hex'), version: c.version, ...actual[i] }).toEqual({ name: Buffer.from(c.name).toString('hex'), version: c.version, ...expected[i] });
      }
    });
    expect(mismatches).toBe(0);
    // The signed and unsigned variants must really differ on high bytes, or the test proves nothing about them.
    expect(dxHash(high, 0, zero).hash).not.toBe(dxHash(high, 3, zero).hash);
  });

  it('maps a root hash_version to its unsigned variant only when the filesystem says so', () => {
    expect([0, 1, 2].map((v) => effectiveHashVersion(v, true))).toEqual([3, 4, 5]);
    expect([0, 1, 2].map((v) => effectiveHashVersion(v, false))).toEqual([0, 1, 2]);
  });

  it('refuses siphash (casefolded directories) with WRITE_REFUSED', () => {
    expect(() => dxHash(Buffer.from('a'), 6, [0, 0, 0, 0])).toThrow(expect.objectContaining({ code: 'WRITE_REFUSED' }));
  });
});
