/**
 * Ext4Fs.listings: a walk a directory at a time, the entries' stat fields read in place
 * from batched inode-table reads. Oracles: debugfs (ls -p for the tree, stat for the
 * fields), e2fsck (the looped image is corrupt), and byte offsets found with debugfs imap
 * for the checksum cases.
 */
import { closeSync, copyFileSync, mkdirSync, openSync, readSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs, type DirListing } from '../../../src/fs/ext4/Ext4Fs.js';
import { compareBytes } from '../../../src/fs/ext4/names.js';
import { debugfsWrite, makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { expectImgError } from '../../helpers/expectImgError.js';
import { run, sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseLsP, parseStat } from './debugfsOracle.js';

const tmp = useTempDir('imgdedup-listings-');
let image: string;

/** Names as debugfs prints them (UTF-8). */
const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

beforeAll(() => {
  // A tree with a large (htree) directory, nested directories, odd names (UTF-8 beyond
  // ASCII, a space, quotes), a symlink and an empty directory.
  const src = join(tmp(), 'src');
  const rnd = mulberry32(7);
  mkdirSync(join(src, 'big'), { recursive: true });
  for (let i = 0; i < 400; i++) writeFileSync(join(src, 'big', `file-${i}`), 'x'.repeat(Math.floor(rnd() * 3000)));
  mkdirSync(join(src, 'a/b/c'), { recursive: true });
  writeFileSync(join(src, 'a/b/c/deep'), 'deep');
  writeFileSync(join(src, 'a/one'), '1');
  mkdirSync(join(src, 'empty'));
  writeFileSync(join(src, 'café'), 'odd');
  writeFileSync(join(src, 'with space "q"'), 'q');
  symlinkSync('a/one', join(src, 'link'));
  image = join(tmp(), 'fs.raw');
  makeExt4Image(image, src, { args: ['-b', '1024', '-N', '2048'], sizeMiB: 16 });
});

async function open(path: string, verifyChecksums: 'error' | 'warn' = 'error'): Promise<{ fs: Ext4Fs; close: () => Promise<void> }> {
  const raw = await RawImage.open(path);
  return { fs: await Ext4Fs.open(raw, { file: path, verifyChecksums }), close: () => raw.close() };
}

/** Every path below the root with its inode, from debugfs ls -p (directories recursed). */
function debugfsTree(img: string): Map<string, number> {
  const out = new Map<string, number>();
  const visit = (dir: string): void => {
    for (const e of parseLsP(debugfsBatch(img, [`ls -p "${dir}"`])[0]!)) {
      if (e.name === '.' || e.name === '..') continue;
      const p = `${dir === '/' ? '' : dir}/${e.name}`;
      out.set(p, e.ino);
      if ((e.mode & 0o170000) === 0o040000) visit(p);
    }
  };
  visit('/');
  return out;
}

async function collect(fs: Ext4Fs, options: Parameters<Ext4Fs['listings']>[0]): Promise<DirListing[]> {
  const out: DirListing[] = [];
  for await (const l of fs.listings(options)) out.push(l);
  return out;
}

describe('Ext4Fs.listings', () => {
  test('lists every entry below the root once, at its path, as debugfs does; stat columns equal debugfs stat', async () => {
    const { fs, close } = await open(image);
    try {
      const listings = await collect(fs, { stat: true });
      const got = new Map<string, number>();
      const stats: Array<{ path: string; i: number; l: DirListing }> = [];
      for (const l of listings) {
        expect(l.hasStat).toBe(true);
        for (let i = 0; i < l.count; i++) {
          const path = `${l.path.length === 0 ? '' : text(l.path)}/${text(l.name(i))}`;
          expect(got.has(path), path).toBe(false);
          got.set(path, l.ino[i]!);
          stats.push({ path, i, l });
        }
      }
      expect(got).toEqual(debugfsTree(image));
      // One debugfs run for every entry's stat.
      const st = debugfsBatch(image, stats.map((s) => `stat <${s.l.ino[s.i]}>`)).map(parseStat);
      stats.forEach(({ i, l }, k) => {
        const d = st[k]!;
        // debugfs prints the permission bits as Mode and the file type as Type.
        const type = ({ 0o100000: 'regular', 0o040000: 'directory', 0o120000: 'symlink' } as Record<number, string>)[l.mode[i]! & 0o170000];
        expect([type, l.mode[i]! & 0o7777, l.links[i], l.uid[i], l.gid[i], l.size[i], l.mtimeSec[i], l.mtimeNsec[i]]).toEqual([d.type, d.mode, d.links, d.uid, d.gid, d.size, d.mtime.sec, d.mtime.nsec]);
      });
      // The symlink's decoded inode is kept (its target is read from it).
      const link = listings[0]!;
      const li = [...Array(link.count).keys()].find((i) => text(link.name(i)) === 'link')!;
      expect(text(await fs.readlinkOf(link.inodes.get(li)!))).toBe('a/one');
    } finally {
      await close();
    }
  });

  test('directories come in pre-order, each after the entry it belongs to; sorted: by name bytes; not recursive: the start alone', async () => {
    const { fs, close } = await open(image);
    try {
      const sorted = await collect(fs, { stat: true, sorted: true });
      // Each listing is its parent's entry at parentIndex, and its place (the indices from
      // the root) comes after the one before it: a depth-first pre-order of directories.
      const placeOf = (l: DirListing): number[] => (l.parent === undefined ? [] : [...placeOf(l.parent), l.parentIndex]);
      const before = (a: number[], b: number[]): boolean => {
        for (let k = 0; k < Math.min(a.length, b.length); k++) if (a[k] !== b[k]) return a[k]! < b[k]!;
        return a.length < b.length;
      };
      const places = sorted.map(placeOf);
      for (let k = 1; k < places.length; k++) expect(before(places[k - 1]!, places[k]!), `${places[k - 1]} < ${places[k]}`).toBe(true);
      for (const l of sorted) {
        if (l.parent !== undefined) {
          expect(l.parent.ino[l.parentIndex]).toBe(l.dirIno);
          expect(text(l.path).endsWith(`/${text(l.parent.name(l.parentIndex))}`)).toBe(true);
        }
        for (let i = 1; i < l.count; i++) expect(compareBytes(l.name(i - 1), l.name(i))).toBeLessThan(0);
      }
      // Directory order (unsorted): the same entries per directory, as the directory holds them.
      const plain = await collect(fs, {});
      expect(plain.map((l) => text(l.path)).sort()).toEqual(sorted.map((l) => text(l.path)).sort());
      const big = plain.find((l) => text(l.path) === '/big')!;
      const names = debugfsBatch(image, ['ls -p /big'])[0]!;
      expect([...Array(big.count).keys()].map((i) => text(big.name(i)))).toEqual(parseLsP(names).map((e) => e.name).filter((n) => n !== '.' && n !== '..'));
      expect(big.hasStat).toBe(false);
      const one = await collect(fs, { start: big.dirIno, startPath: big.path, recursive: false, sorted: true });
      expect(one.map((l) => [l.dirIno, l.count])).toEqual([[big.dirIno, 400]]);
    } finally {
      await close();
    }
  });

  test('an inode whose checksum does not match: BAD_CHECKSUM at its i_checksum, or one warning under "warn", as readInode', async () => {
    const bad = join(tmp(), 'badcsum.raw');
    copyFileSync(image, bad);
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(sh('debugfs', ['-R', 'imap /a/b/c/deep', bad]))!;
    const at = Number(m[1]) * 1024 + parseInt(m[2]!, 16);
    const fd = openSync(bad, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at + 0x10);
    writeSync(fd, Buffer.from([b[0]! ^ 1]), 0, 1, at + 0x10);
    closeSync(fd);
    expect(run('e2fsck', ['-fn', bad]).status).toBe(4);
    let { fs, close } = await open(bad);
    try {
      await expectImgError(() => collect(fs, { stat: true }), 'BAD_CHECKSUM', { deviceOffset: at + 0x7c });
      // Without stat the inode is not read.
      await collect(fs, {});
    } finally {
      await close();
    }
    ({ fs, close } = await open(bad, 'warn'));
    try {
      await collect(fs, { stat: true, sorted: true });
      expect(fs.diagnostics.map((d) => [d.code, d.deviceOffset])).toEqual([['BAD_CHECKSUM', at + 0x7c]]);
    } finally {
      await close();
    }
  });

  test('a directory hard-linked into itself is listed once; the link is reported, not descended into', async () => {
    const looped = join(tmp(), 'loop.raw');
    copyFileSync(image, looped);
    debugfsWrite(looped, ['ln /a /a/b/up']);
    expect(run('e2fsck', ['-fn', looped]).status).toBe(4);
    const { fs, close } = await open(looped);
    try {
      const revisits: string[] = [];
      const listings = await collect(fs, { stat: true, sorted: true, onRevisit: (p, ino, first) => revisits.push(`${text(p)} ${ino} ${text(first)}`) });
      const aIno = Number(/Inode: (\d+)/.exec(debugfsBatch(looped, ['stat /a'])[0]!)![1]);
      expect(revisits).toEqual([`/a/b/up ${aIno} /a`]);
      expect(listings.filter((l) => l.dirIno === aIno).map((l) => text(l.path))).toEqual(['/a']);
      expect(listings.map((l) => text(l.path))).toEqual(['', '/a', '/a/b', '/a/b/c', '/big', '/empty', '/lost+found']);
    } finally {
      await close();
    }
  });
});
