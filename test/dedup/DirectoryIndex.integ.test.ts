/**
 * DirectoryIndex resolves paths as Ext4Fs.lookup does, keeping each directory's listing:
 * inode numbers equal debugfs's (`ls -p` of every directory), missing names and paths
 * through a file resolve to nothing, and a second pass over the same paths reads nothing.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import type { BlockDevice } from '../../src/diskimage/BlockDevice.js';
import { RawImage } from '../../src/diskimage/raw/RawImage.js';
import { DirectoryIndex } from '../../src/dedup/DirectoryIndex.js';
import { Ext4Fs } from '../../src/fs/ext4/Ext4Fs.js';
import { sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseLsP } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-dirindex-');
let image: string;
/** Every path of the tree (directories included) with its inode number, per debugfs. */
const oracle = new Map<string, number>();

/** Counts the reads that reach the image. */
class CountingDevice implements BlockDevice {
  reads = 0;
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    return this.inner.read(offset, length);
  }
  allocation(range?: { offset: number; length: number }) {
    return this.inner.allocation(range);
  }
}

beforeAll(() => {
  const root = join(tmp(), 'tree');
  // A large directory (hashed-index blocks), a small one, nesting, a symlink, names with spaces.
  mkdirSync(join(root, 'big'), { recursive: true });
  for (let i = 0; i < 700; i++) writeFileSync(join(root, 'big', `file-${i}-${'x'.repeat(i % 40)}`), `${i}`);
  mkdirSync(join(root, 'small', 'deeper', 'deepest'), { recursive: true });
  writeFileSync(join(root, 'small', 'a file'), 'a');
  writeFileSync(join(root, 'small', 'deeper', 'deepest', 'leaf'), 'leaf');
  symlinkSync('../big', join(root, 'small', 'link'));
  image = join(tmp(), 'fs.img');
  sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-d', root, image, '16M']);
  const dirs = ['/', '/big', '/small', '/small/deeper', '/small/deeper/deepest'];
  const outs = debugfsBatch(image, dirs.map((d) => `ls -p "${d}"`));
  dirs.forEach((d, i) => {
    for (const e of parseLsP(outs[i]!)) {
      if (e.name === '.' || e.name === '..') continue;
      oracle.set(d === '/' ? `/${e.name}` : `${d}/${e.name}`, e.ino);
    }
  });
});

const enc = (s: string) => new TextEncoder().encode(s);

describe('DirectoryIndex', () => {
  test('resolves every path of the tree to the inode debugfs lists, and a second pass reads nothing', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new CountingDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const index = new DirectoryIndex(fs);
      expect(oracle.size).toBeGreaterThan(700);
      for (const [path, ino] of oracle) expect([path, await index.lookup(enc(path))]).toEqual([path, ino]);
      const reads = dev.reads;
      for (const [path, ino] of oracle) expect(await index.lookup(enc(path))).toBe(ino);
      expect(dev.reads).toBe(reads);
    } finally {
      await img.close();
    }
  });

  test('missing names, paths through a file or a symlink, and dot entries resolve as Ext4Fs.lookup does', async () => {
    const img = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(img, { file: image });
      const index = new DirectoryIndex(fs);
      const paths = ['/big/nope', '/small/a file/x', '/small/link/file-1-x', '/small/./deeper/../a file', '/', '/small/deeper/deepest/leaf/', '/small//deeper'];
      for (const p of paths) expect([p, await index.lookup(enc(p))]).toEqual([p, await fs.lookup(enc(p))]);
      expect(await index.lookup(enc('/small/./deeper/../a file'))).toBe(oracle.get('/small/a file'));
      expect(await index.lookup(enc('/small/a file/x'))).toBeUndefined();
    } finally {
      await img.close();
    }
  });

  test('starting over past its entry bound changes no answer', async () => {
    const img = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(img, { file: image });
      const index = new DirectoryIndex(fs, 50);
      const paths = [...oracle.keys()];
      for (let i = 0; i < paths.length; i += 7) {
        // Alternating between directories so that listings are dropped and read again.
        for (const p of [paths[i]!, '/small/deeper/deepest/leaf', paths[paths.length - 1 - i]!]) expect(await index.lookup(enc(p))).toBe(oracle.get(p));
      }
    } finally {
      await img.close();
    }
  });
});
