/**
 * Ext4Fs.readOfInto, the reused-buffer read a merge compares files with: at any offset and
 * buffer size it fills the buffer's first n bytes with the file's bytes (the files mkfs.ext4
 * -d copied in; holes as zeros, also over a buffer's stale bytes), returns n (what the file
 * has there), and leaves the rest of the buffer alone; readOf, which shares its path,
 * gives the same. (debugfs cat prints an inline file's whole 60-byte area, not its size.)
 */
import { openSync, closeSync, writeSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

const tmp = useTempDir('imgdedup-readofinto-');
let image: string;
let root: string;
const files = ['/sparse', '/small', '/empty', '/multi'];

beforeAll(() => {
  root = join(tmp(), 'tree');
  mkdirSync(root);
  // Data, a hole, data, a hole, data.
  const fd = openSync(join(root, 'sparse'), 'w');
  writeSync(fd, Buffer.alloc(10_000, 0x41), 0, 10_000, 5);
  writeSync(fd, Buffer.alloc(7_000, 0x42), 0, 7_000, 200_000);
  writeSync(fd, Buffer.alloc(3, 0x43), 0, 3, 399_997);
  closeSync(fd);
  writeFileSync(join(root, 'small'), 'tiny content');
  writeFileSync(join(root, 'empty'), '');
  const multi = Buffer.alloc(300_000);
  for (let i = 0; i < multi.length; i++) multi[i] = (i * 13 + (i >> 9)) & 255;
  writeFileSync(join(root, 'multi'), multi);
  image = join(tmp(), 'fs.img');
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', 'inline_data', '-d', root, image, '16M']);
});


describe('Ext4Fs.readOfInto', () => {
  test('fills the buffer with the file bytes, at any offset and size, and nothing past them', async () => {
    const img = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(img, { file: image });
      for (const path of files) {
        const want = readFileSync(join(root, path));
        const inode = await fs.readInode((await fs.lookup(path))!);
        expect(inode.i_size).toBe(want.length);
        for (const size of [1, 4095, 4096, 65_536, 1 << 20]) {
          const buf = new Uint8Array(size);
          for (let off = 0; off < want.length + size; off += Math.max(size, 3_001)) {
            buf.fill(0x5a); // stale bytes from an earlier read
            const n = await fs.readOfInto(inode, off, buf);
            const expected = want.subarray(Math.min(off, want.length), Math.min(off + size, want.length));
            expect([path, size, off, n]).toEqual([path, size, off, expected.length]);
            expect(Buffer.from(buf.subarray(0, n)).equals(expected)).toBe(true);
            expect(buf.subarray(n).every((b) => b === 0x5a)).toBe(true);
            expect(Buffer.from(await fs.readOf(inode, off, size)).equals(expected)).toBe(true);
          }
        }
      }
    } finally {
      await img.close();
    }
  });
});
