/**
 * LsLineWriter (the CLI's text output of ls) writes, byte for byte, the UTF-8 of
 * formatLsEntry's lines, each followed by '\n', across its chunk boundaries: plain and
 * non-ASCII names, sizes at and past the padded cache and the safe-integer range, symlink
 * targets, device numbers, a path longer than a chunk. (formatLsEntry's columns are
 * checked against debugfs by the ls -l CLI test.)
 */
import { describe, expect, test } from 'vitest';
import { LsLineWriter, formatLsEntry, type LsEntry } from '../../src/commands/ls.js';
import { mulberry32 } from '../../fixtures/prng.mjs';

const base: LsEntry = { path: '/d/f', name: 'f', ino: 12, type: 'file', mode: 0o100644, links: 1, uid: 0, gid: 0, size: 0, mtime: 1600000000, mtimeNsec: 0 };

function entries(): LsEntry[] {
  const rnd = mulberry32(8);
  const names = ['a', 'caf\u00e9', 'snow\u2603man', '"quoted \\\\ name"', 'emoji\u{1f600}', 'x'.repeat(255)];
  const sizes = [0, 9, 1023, 1024, 99999, 1e10, 2 ** 53 - 1, 2 ** 53 + 2, 2 ** 64];
  const out: LsEntry[] = [];
  for (let i = 0; i < 6000; i++) {
    const name = `${names[i % names.length]}${i}`;
    const e: LsEntry = {
      ...base,
      path: `/dir${i % 7}/${name}`,
      name,
      ino: 11 + i,
      mode: 0o100000 | Math.floor(rnd() * 0o7777),
      links: 1 + (i % 3),
      uid: i % 5 === 0 ? 100000 : 0,
      size: sizes[i % sizes.length]!,
      mtime: 1600000000 + Math.floor(rnd() * 1e8),
    };
    if (i % 11 === 0) out.push({ ...e, type: 'symlink', mode: 0o120777, target: `../t\u00e9${i}` });
    else if (i % 13 === 0) out.push({ ...e, type: 'chardev', mode: 0o20644, rdev: { major: i % 256, minor: 7 } });
    else if (i % 17 === 0) out.push({ ...e, type: 'dir', mode: 0o40755 });
    else out.push(e);
  }
  // A path longer than a chunk: emitted on its own.
  out.push({ ...base, path: `/${'p/'.repeat(40000)}q`, name: 'q' });
  return out;
}

describe('LsLineWriter', () => {
  test.each([
    ['-l -R', { long: true, recursive: true }],
    ['-l', { long: true }],
    ['-R', { recursive: true }],
  ])('writes formatLsEntry lines byte for byte (%s)', (_label, options) => {
    const all = entries();
    const chunks: Buffer[] = [];
    const w = new LsLineWriter(options, (b) => chunks.push(Buffer.from(b)));
    for (const e of all) w.write(e);
    w.flush();
    expect(chunks.length).toBeGreaterThan(2);
    const want = Buffer.from(all.map((e) => `${formatLsEntry(e, options)}\n`).join(''), 'utf8');
    expect(Buffer.concat(chunks).equals(want)).toBe(true);
  });
});
