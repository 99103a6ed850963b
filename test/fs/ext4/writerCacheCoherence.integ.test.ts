/**
 * The reader's faster caches under the writer: inodes the writer spreads keep every field
 * encodeInode needs, a write through a filesystem that borrowed inode-table bytes from
 * another leaves the lender's bytes alone, and a scan's read that started before a write
 * does not put the old bytes back in the cache. Oracles: the image's own bytes (read with
 * node:fs), debugfs stat.
 */
import { mkdirSync, openSync, readSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { CowDevice } from '../../../src/diskimage/cow/CowDevice.js';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { Ext4Writer } from '../../../src/fs/ext4/Ext4Writer.js';
import { encodeInode } from '../../../src/fs/ext4/inode.js';
import { locateInode } from '../../../src/fs/ext4/inodeTable.js';
import { utf8Bytes } from '../../../src/fs/ext4/names.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseStat } from './debugfsOracle.js';
import { debugfsNames, writeImage, WRITER_NOW } from './writerHarness.js';

const tmp = useTempDir('imgdedup-writer-cache-');
let image: string;
/** More files than group 0 has inodes (512), so later groups hold some. */
const FILES = 600;

beforeAll(() => {
  const root = join(tmp(), 'root');
  mkdirSync(join(root, 'many'), { recursive: true });
  for (let i = 0; i < FILES; i++) writeFileSync(join(root, 'many', `f${i}`), `file ${i}\n`);
  image = join(tmp(), 'fs.img');
  sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-g', '2048', '-N', '4096', '-I', '256', '-O', 'metadata_csum', '-E', 'lazy_itable_init=0', '-d', root, image, '16M']);
}, 60_000);

/** The inode's bytes as stored in the image file. */
function storedInode(fs: Ext4Fs, ino: number): Uint8Array {
  const sb = fs.superblock;
  const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
  const out = new Uint8Array(sb.s_inode_size);
  const fd = openSync(image, 'r');
  try {
    readSync(fd, out, 0, out.length, loc.blockNo * sb.blockSize + loc.within);
  } finally {
    closeSync(fd);
  }
  return out;
}

async function inoOf(fs: Ext4Fs, name: string): Promise<number> {
  const ino = await fs.lookup(`/many/${name}`);
  if (ino === undefined) throw new Error(`no /many/${name}`);
  return ino;
}

describe('inodes the writer spreads', () => {
  test('a read inode spread and encoded unchanged gives back its stored bytes; a spread lazy one is refused', async () => {
    const raw = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(raw, { file: image });
      const ino = await inoOf(fs, 'f7');
      const inode = await fs.readInode(ino);
      const spread = { ...inode };
      for (const k of ['atime', 'ctime', 'mtime', 'crtime', 'i_block', 'raw', 'i_blocks_raw', 'hugeFileUnits', 'csumSeed', 'deviceOffset'] as const) expect(spread[k], k).toBeDefined();
      // Encoded from the fields over zeros (not from raw): every byte must come from the fields.
      const fromFields = encodeInode(spread, fs.superblock);
      const stored = storedInode(fs, ino);
      expect(Buffer.from(encodeInode(spread, fs.superblock, { raw: inode.raw }))).toEqual(Buffer.from(stored));
      expect(Buffer.from(fromFields.subarray(0x08, 0x14))).toEqual(Buffer.from(stored.subarray(0x08, 0x14))); // atime, ctime, mtime
      expect(Buffer.from(fromFields.subarray(0x28, 0x64))).toEqual(Buffer.from(stored.subarray(0x28, 0x64))); // i_block
      expect(Buffer.from(fromFields.subarray(0x90, 0x98))).toEqual(Buffer.from(stored.subarray(0x90, 0x98))); // crtime
      // cachedInode hands out a lazy inode (times and i_block on first use): spread, it lacks them.
      await fs.prefetchInodes([ino]);
      const lazy = fs.cachedInode(ino)!;
      await expectImgError(() => encodeInode({ ...lazy, i_mode: lazy.i_mode }, fs.superblock, { raw: lazy.raw }), 'INTERNAL', { field: 'atime' });
    } finally {
      await raw.close();
    }
  });
});

describe('the writer and the reader caches', () => {
  test('a write through a filesystem that borrowed inode-table bytes leaves the lender seeing the old inode', async () => {
    const rawA = await RawImage.open(image);
    const rawB = await RawImage.open(image);
    const cow = new CowDevice(rawB);
    try {
      const fsA = await Ext4Fs.open(rawA, { file: image });
      const w = await Ext4Writer.open(cow, { file: image, now: WRITER_NOW });
      const ino = await inoOf(fsA, 'f3');
      const before = await fsA.readInode(ino);
      // Every block unchanged: B's table chunks come from A's cache.
      w.fs.borrowInodeTables(fsA, () => true);
      expect((await w.fs.readInode(ino)).i_mode).toBe(before.i_mode);
      await w.setAttrs(utf8Bytes('/many/f3'), { mode: 0o600, uid: 123, gid: 456 });
      const after = await w.fs.readInode(ino);
      expect([after.i_mode & 0o7777, after.i_uid, after.i_gid]).toEqual([0o600, 123, 456]);
      // A's device was not written: its cached bytes must still be the stored ones.
      const a = await fsA.readInode(ino);
      expect(Buffer.from(a.raw)).toEqual(Buffer.from(storedInode(fsA, ino)));
      expect(a.i_mode).toBe(before.i_mode);
      // After the write B no longer borrows: a neighbour on the same chunk is B's own bytes, patched.
      expect((await w.fs.readInode(ino)).i_uid).toBe(123);
    } finally {
      await cow.close();
      await rawA.close();
      await rawB.close();
    }
  });

  test("a scan's read that started before an inode write does not bring the old inode back into the cache", async () => {
    const raw = await RawImage.open(image);
    const cow = new CowDevice(raw);
    try {
      const fs = await Ext4Fs.open(cow, { file: image });
      const sb = fs.superblock;
      // A file in a later group than the first inode the scan visits: its group's piece is
      // read ahead while the scan visits group 0.
      let target: number | undefined;
      for (let i = FILES - 1; i >= 0 && target === undefined; i--) {
        const ino = await inoOf(fs, `f${i}`);
        if (Math.floor((ino - 1) / sb.s_inodes_per_group) > 0) target = ino;
      }
      expect(target).toBeDefined();
      const t = target!;
      // The new bytes, built from another reader so that this one's cache holds nothing of t.
      const other = await Ext4Fs.open(raw, { file: image });
      const old = await other.readInode(t);
      const next = encodeInode({ ...old, i_mode: (old.i_mode & ~0o7777) | 0o640, i_uid: 777 }, sb, { raw: old.raw });
      const loc = locateInode(sb, (g) => fs.groupDescriptor(g), t);
      let written = false;
      await fs.scanInodes(async () => {
        if (written) return;
        written = true;
        // What the writer does: the device, then the hook.
        await cow.write(loc.blockNo * sb.blockSize + loc.within, next);
        fs.noteInodeWrite(t, next);
      });
      expect(written).toBe(true);
      const seen = await fs.readInode(t);
      expect([seen.i_mode & 0o7777, seen.i_uid]).toEqual([0o640, 777]);
      const cached = fs.cachedInode(t);
      if (cached !== undefined) expect(cached.i_uid).toBe(777);
    } finally {
      await cow.close();
      await raw.close();
    }
  });

  test('setAttrs after a scan and a prefetch: the reader and debugfs agree on the written inode', async () => {
    const out = join(tmp(), 'attrs.img');
    const raw = await RawImage.open(image);
    const cow = new CowDevice(raw);
    let ino: number;
    try {
      const w = await Ext4Writer.open(cow, { file: image, now: WRITER_NOW });
      ino = await inoOf(w.fs, 'f599');
      await w.fs.scanInodes(() => undefined);
      await w.fs.prefetchInodes([ino]);
      await w.setAttrs(utf8Bytes('/many/f599'), { mode: 0o751, uid: 42, gid: 43 });
      const c = w.fs.cachedInode(ino)!;
      expect([c.i_mode & 0o7777, c.i_uid, c.i_gid]).toEqual([0o751, 42, 43]);
      await w.commit();
      const { RawWriter } = await import('../../../src/diskimage/raw/RawWriter.js');
      const writer = await RawWriter.create(out, { size: cow.size, unitSize: 4096 });
      await cow.emitTo(writer);
      await writer.commit();
    } finally {
      await cow.close();
      await raw.close();
    }
    const [text] = debugfsBatch(out, [`stat <${ino}>`]);
    const st = parseStat(text!);
    expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o751, 42, 43]);
    // The file's content (i_block kept through the spread) is intact.
    expect(sh('debugfs', ['-R', `cat /many/f599`, out])).toBe('file 599\n');
  });
});

describe("a large directory's extents, kept by the reader", () => {
  test('entries added (growing its extent tree) and removed between lookups and listings: debugfs lists exactly the expected names, strictly clean', async () => {
    // A directory of 40 one-block extents under an index node (depth 1): its blocks were
    // allocated between other files' data, so no two are adjacent.
    const dir = join(tmp(), 'bigdir');
    mkdirSync(dir);
    const img = join(dir, 'fs.img');
    sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-O', 'metadata_csum,^dir_index', img, '8M']);
    const long = (i: number): string => `${'n'.repeat(200)}${String(i).padStart(3, '0')}`;
    const script = ['mkdir /a', 'mkdir /b'];
    for (let i = 0; i < 160; i++) script.push(`write /etc/hostname /a/${long(i)}`, `write /etc/hostname /b/f${i}`);
    writeFileSync(join(dir, 'script'), script.join('\n') + '\n');
    sh('debugfs', ['-w', '-f', join(dir, 'script'), img]);
    expect(debugfsBatch(img, ['stat /a'])[0]).toMatch(/\(ETB0\)/);

    const want = new Set(Array.from({ length: 160 }, (_, i) => long(i)));
    const out = join(dir, 'out.img');
    const name = (s: string): Uint8Array => utf8Bytes(`/a/${s}`);
    const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: WRITER_NOW };
    await writeImage(img, out, async (w) => {
      for (let i = 0; i < 120; i++) {
        // A lookup before each change lists the directory through the kept extents.
        expect(await w.lookup(name(long(i)))).toBeDefined();
        if (i % 3 === 0) {
          await w.remove(name(long(i)));
          want.delete(long(i));
        } else {
          const added = long(200 + i);
          await w.put(name(added), { kind: 'symlink', target: utf8Bytes('x') }, attrs);
          want.add(added);
          expect(await w.lookup(name(added))).toBeDefined();
        }
      }
      expect((await w.children(utf8Bytes('/a'))).length).toBe(want.size);
    });
    expect(debugfsNames(out, '/a').sort()).toEqual([...want].sort());
    expectStrictFsckClean(out);
  }, 60_000);
});

