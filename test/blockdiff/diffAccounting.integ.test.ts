/**
 * Every changed byte a diff counts is shown somewhere, and the count is the truth:
 * - the top-level changedBytes equals the sum of the listed parts (filesystems and raw
 *   regions), and each filesystem's parts (listed paths, metadata, free, other) add up;
 * - it equals the bytes that differ by a plain byte comparison of the two disks as raw
 *   files (`qemu-img convert -O raw`), with the shorter one read as zeros past its end,
 *   at sector granularity; for a partition that moved, its two places are compared;
 * - it is the same in overlay mode and in hash mode for the same content.
 * Scenarios: a disk grown without writing, grown with resize2fs and a new file, a write
 * to ext4 free space, a write under an unwritten (fallocated) extent, a moved partition,
 * and a plain overlay.
 */
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DiskDiff } from '../../src/blockdiff/diffDisk.js';
import { diffJson, formatDiff } from '../../src/commands/diff.js';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { makeOverlay } from '../../fixtures/ext4/diffScenarios.js';
import { sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { diffPaths } from './diffPaths.js';

const tmp = useTempDir('imgdedup-diffacct-');
const SECTOR = 512;
const MiB = 1 << 20;


/** The image's guest bytes, by qemu-img (the oracle), not by our readers. */
function guestBytes(image: string): Buffer {
  const out = `${image}.oracle.raw`;
  sh('qemu-img', ['convert', '-O', 'raw', image, out]);
  return readFileSync(out);
}

/** Bytes in the sectors where x[xOff..] and y[yOff..] differ over `length` bytes; past either buffer's end it reads as zeros. */
function differingSectorBytes(x: Buffer, xOff: number, y: Buffer, yOff: number, length: number): number {
  const zero = Buffer.alloc(SECTOR);
  const at = (b: Buffer, o: number, n: number): Buffer => {
    const s = b.subarray(Math.min(o, b.length), Math.min(o + n, b.length));
    return s.length === n ? s : Buffer.concat([s, zero.subarray(0, n - s.length)]);
  };
  let n = 0;
  for (let o = 0; o < length; o += SECTOR) {
    const len = Math.min(SECTOR, length - o);
    if (!at(x, xOff + o, len).equals(at(y, yOff + o, len))) n += len;
  }
  return n;
}

/** The invariants every diff must satisfy, whatever its scenario. */
function expectAddsUp(r: DiskDiff): void {
  const fsSum = r.filesystems.reduce((n, f) => n + f.changedBytes, 0);
  const rawSum = r.raw.reduce((n, x) => n + x.changedBytes, 0);
  expect(r.changedBytes).toBe(fsSum + rawSum);
  for (const x of r.raw) expect(x.changedRanges.reduce((n, [, l]) => n + l, 0)).toBe(x.changedBytes);
  for (const f of r.filesystems) {
    const p = f.changedBytesIn;
    expect(p.files + p.metadata + p.free + p.other).toBe(f.changedBytes);
  }
}

/** A small tree to put in the filesystems. */
function tree(dir: string): string {
  const t = join(dir, 'tree');
  mkdirSync(join(t, 'etc'), { recursive: true });
  for (let i = 0; i < 20; i++) writeFileSync(join(t, 'etc', `f${i}.conf`), `setting ${i}\n`.repeat(i * 50 + 1));
  writeFileSync(join(t, 'blob'), Buffer.alloc(300 * 1024, 0x5a));
  return t;
}

describe('diff accounting: totals add up and match a byte comparison', () => {
  it('a disk grown without writing: no change, in hash and in overlay mode (qemu-img compare agrees)', async () => {
    const d = tmp();
    const a = join(d, 'a.raw');
    makeExt4Image(a, tree(d), { sizeMiB: 16, args: [] });
    const g = join(d, 'g.raw');
    copyFileSync(a, g);
    sh('truncate', ['-s', '32M', g]);
    expect(sh('qemu-img', ['compare', a, g])).toMatch(/identical/);
    sh('qemu-img', ['convert', '-O', 'qcow2', a, join(d, 'base.qcow2')]);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(d, 'base.qcow2'), '-F', 'qcow2', join(d, 'g.qcow2')]);
    sh('qemu-img', ['resize', '-q', join(d, 'g.qcow2'), '32M']);
    const hash = await diffPaths(a, g);
    const overlay = await diffPaths(join(d, 'base.qcow2'), join(d, 'g.qcow2'));
    expect([hash.mode, overlay.mode]).toEqual(['hash', 'overlay']);
    for (const r of [hash, overlay]) {
      expect(r.changedBytes).toBe(0);
      expectAddsUp(r);
      expect(r.raw.flatMap((x) => x.changedRanges)).toEqual([]);
    }
  });

  it('a disk grown by resize2fs with a new file: the same total in both modes, equal to a byte comparison', async () => {
    const d = tmp();
    const a = join(d, 'a.raw');
    makeExt4Image(a, tree(d), { sizeMiB: 16, args: [] });
    const g = join(d, 'g.raw');
    copyFileSync(a, g);
    sh('truncate', ['-s', '32M', g]);
    sh('resize2fs', [g]);
    writeFileSync(join(d, 'big'), Buffer.alloc(6 * MiB, 0x61));
    debugfsWrite(g, ['write big /big.bin'], d);
    sh('qemu-img', ['convert', '-O', 'qcow2', a, join(d, 'base.qcow2')]);
    makeOverlay(g, join(d, 'base.qcow2'), join(d, 'g.qcow2'));
    expect(sh('qemu-img', ['compare', g, join(d, 'g.qcow2')])).toMatch(/identical/);
    const expected = differingSectorBytes(readFileSync(a), 0, readFileSync(g), 0, 32 * MiB);
    const hash = await diffPaths(a, g);
    const overlay = await diffPaths(join(d, 'base.qcow2'), join(d, 'g.qcow2'));
    for (const r of [hash, overlay]) {
      expect(r.changedBytes).toBe(expected);
      expectAddsUp(r);
      expect(r.filesystems[0]!.added.map((e) => Buffer.from(e.path).toString())).toEqual(['/big.bin']);
    }
  });

  it('a write to ext4 free space in an overlay: counted, and listed as free blocks (text and JSON)', async () => {
    const d = tmp();
    const a = join(d, 'a.raw');
    makeExt4Image(a, tree(d), { sizeMiB: 32, args: ['-b', '4096'] });
    sh('qemu-img', ['convert', '-O', 'qcow2', a, join(d, 'base.qcow2')]);
    const u = join(d, 'u.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(d, 'base.qcow2'), '-F', 'qcow2', u]);
    const at = 28 * MiB;
    // The oracle: debugfs says these 16 blocks are free.
    expect(sh('debugfs', ['-R', `testb ${at / 4096} 16`, a])).not.toMatch(/marked in use/);
    sh('qemu-io', ['-c', `write -P 7 ${at} 64k`, u]);
    const r = await diffPaths(join(d, 'base.qcow2'), u);
    expect(r.changedBytes).toBe(differingSectorBytes(readFileSync(a), 0, guestBytes(u), 0, 32 * MiB));
    expect(r.changedBytes).toBe(64 * 1024);
    expectAddsUp(r);
    const fs = r.filesystems[0]!;
    expect(fs.changedBytesIn.free).toBe(64 * 1024);
    expect(fs.freeBlocks).toEqual([[at / 4096, 16]]);
    expect(formatDiff(r)).toContain(`~ 65536 bytes changed in free blocks: blocks ${at / 4096}+16`);
    expect(JSON.parse(JSON.stringify(diffJson(r))).filesystems[0]).toMatchObject({ changedBytes: 65536, changedBytesIn: { free: 65536 }, freeBlocks: [[at / 4096, 16]] });
  });

  it('a write under an unwritten extent: no content change, but the block is listed', async () => {
    const d = tmp();
    const a = join(d, 'a.raw');
    makeExt4Image(a, tree(d), { sizeMiB: 16, args: ['-b', '1024'] });
    debugfsWrite(a, ['write /dev/null fa', 'fallocate /fa 0 99', 'sif /fa size 102400'], d);
    const blk = Number(/(\d+)/.exec(sh('debugfs', ['-R', 'bmap /fa 5', a]))![1]);
    expect(sh('debugfs', ['-R', 'stat /fa', a])).toMatch(/\(0-99\[u\]\)/);
    const b = join(d, 'b.raw');
    copyFileSync(a, b);
    const fd = openSync(b, 'r+');
    writeSync(fd, Buffer.alloc(1024, 0xee), 0, 1024, blk * 1024);
    closeSync(fd);
    // The oracle: the file still reads as zeros through debugfs.
    sh('debugfs', ['-R', `dump /fa ${join(d, 'fa.out')}`, b]);
    expect(readFileSync(join(d, 'fa.out')).equals(Buffer.alloc(102400))).toBe(true);
    sh('qemu-img', ['convert', '-O', 'qcow2', a, join(d, 'base.qcow2')]);
    makeOverlay(b, join(d, 'base.qcow2'), join(d, 'b.qcow2'));
    for (const r of [await diffPaths(a, b), await diffPaths(join(d, 'base.qcow2'), join(d, 'b.qcow2'))]) {
      expect(r.changedBytes).toBe(1024);
      expectAddsUp(r);
      const fs = r.filesystems[0]!;
      expect([fs.added, fs.removed, fs.modified]).toEqual([[], [], []]);
      expect(fs.changedBytesIn.other).toBe(1024);
      expect(fs.otherBlocks).toEqual([[blk, 1]]);
      expect(formatDiff(r)).toContain(`blocks ${blk}+1`);
    }
  });

  it('a partition that moved on a larger disk: the space it left is raw ranges, the totals add up', async () => {
    const d = tmp();
    const fsA = join(d, 'p1.ext4');
    makeExt4Image(fsA, tree(d), { sizeMiB: 24, args: [] });
    const fsB = join(d, 'p1b.ext4');
    copyFileSync(fsA, fsB);
    writeFileSync(join(d, 'moved'), 'after the move\n'.repeat(1000));
    debugfsWrite(fsB, ['write moved /moved-file'], d);
    const fat = join(d, 'p2.fat');
    sh('truncate', ['-s', '16M', fat]);
    sh('mkfs.vfat', ['-i', '12345678', fat]);
    const disk = (name: string, sizeMiB: number, p1Sector: number, fsImage: string): string => {
      const p = join(d, name);
      sh('truncate', ['-s', `${sizeMiB}M`, p]);
      sh('sgdisk', ['-U', '11111111-2222-3333-4444-555555555555', '-u', '2:22222222-2222-3333-4444-555555555555', '-u', '1:33333333-2222-3333-4444-555555555555',
        '-n', '2:2048:+16M', '-t', '2:0700', '-n', `1:${p1Sector}:+24M`, '-t', '1:8300', p]);
      sh('dd', [`if=${fat}`, `of=${p}`, 'bs=512', 'seek=2048', 'conv=notrunc', 'status=none']);
      sh('dd', [`if=${fsImage}`, `of=${p}`, 'bs=512', `seek=${p1Sector}`, 'conv=notrunc', 'status=none']);
      return p;
    };
    const d1 = disk('d1.raw', 64, 43008, fsA);
    const d3 = disk('d3.raw', 96, 100352, fsB);
    const r = await diffPaths(d1, d3);
    const fs = r.filesystems.find((f) => f.partition === 1)!;
    expect(fs.added.map((e) => Buffer.from(e.path).toString())).toEqual(['/moved-file']);
    // The oracle: the filesystem's two places compared, and the rest of B with A's same bytes.
    const [x, y] = [readFileSync(d1), readFileSync(d3)];
    const [oldAt, newAt, len] = [43008 * SECTOR, 100352 * SECTOR, 24 * MiB];
    const outside = differingSectorBytes(x, 0, y, 0, newAt) + differingSectorBytes(x, newAt + len, y, newAt + len, y.length - newAt - len);
    expect(r.changedBytes).toBe(differingSectorBytes(x, oldAt, y, newAt, len) + outside);
    expectAddsUp(r);
    expect(fs.changedBytes).toBe(differingSectorBytes(x, oldAt, y, newAt, len));
    expect(r.raw.reduce((n, q) => n + q.changedBytes, 0)).toBe(outside);
    // The space the partition left, now outside partitions in B, is listed.
    const left = differingSectorBytes(x, oldAt, y, oldAt, len);
    expect(left).toBeGreaterThan(0);
    const inLeft = r.raw.flatMap((q) => q.changedRanges).filter(([o]) => o >= oldAt && o < oldAt + len).reduce((n, [, l]) => n + l, 0);
    expect(inLeft).toBe(left);
  });

  describe('partitions renumbered in the table (entries swapped, nothing moved): each filesystem is compared with itself', () => {
    /** Two ext4 partitions holding different files, at 1 MiB and 17 MiB of a 40 MiB disk. */
    const twoFilesystems = (d: string): { fs1: string; fs2: string } => {
      const fs1 = join(d, 'one.ext4');
      const fs2 = join(d, 'two.ext4');
      const t1 = join(d, 't1');
      const t2 = join(d, 't2');
      mkdirSync(t1);
      mkdirSync(t2);
      writeFileSync(join(t1, 'onlyA'), 'first filesystem\n');
      writeFileSync(join(t2, 'onlyB'), 'second filesystem\n');
      makeExt4Image(fs1, t1, { sizeMiB: 16, args: [] });
      makeExt4Image(fs2, t2, { sizeMiB: 16, args: [] });
      return { fs1, fs2 };
    };
    const place = (disk: string, image: string, sector: number): void => {
      sh('dd', [`if=${image}`, `of=${disk}`, 'bs=512', `seek=${sector}`, 'conv=notrunc', 'status=none']);
    };
    const expectSameFilesystems = async (p: string, q: string): Promise<void> => {
      const r = await diffPaths(p, q);
      expect(r.filesystems.flatMap((f) => [...f.added, ...f.removed, ...f.modified])).toEqual([]);
      expect(r.changedBytes).toBe(differingSectorBytes(readFileSync(p), 0, readFileSync(q), 0, 40 * MiB));
      expectAddsUp(r);
      expect(r.warnings.join('\n')).toMatch(/renumbered/);
    };

    it('GPT (sgdisk -r swaps entries 1 and 2; paired by partition GUID)', async () => {
      const d = join(tmp(), 'renumbered-gpt');
      mkdirSync(d);
      const { fs1, fs2 } = twoFilesystems(d);
      const p = join(d, 'p.raw');
      sh('truncate', ['-s', '40M', p]);
      sh('sgdisk', ['-U', '11111111-2222-3333-4444-555555555555', '-u', '1:aaaaaaaa-2222-3333-4444-555555555555', '-u', '2:bbbbbbbb-2222-3333-4444-555555555555',
        '-n', '1:2048:+16M', '-t', '1:8300', '-n', '2:34816:+16M', '-t', '2:8300', p]);
      place(p, fs1, 2048);
      place(p, fs2, 34816);
      const q = join(d, 'q.raw');
      copyFileSync(p, q);
      sh('sgdisk', ['-r', '1:2', q]);
      await expectSameFilesystems(p, q);
    });

    it('MBR (the two primary entries written in the other order; paired by start)', async () => {
      const d = join(tmp(), 'renumbered-mbr');
      mkdirSync(d);
      const { fs1, fs2 } = twoFilesystems(d);
      const mk = (name: string, order: string[]): string => {
        const f = join(d, name);
        sh('truncate', ['-s', '40M', f]);
        sh('sfdisk', ['-q', '--no-reread', f], { input: `label: dos\nlabel-id: 0x1234abcd\n${order.join('\n')}\n` });
        place(f, fs1, 2048);
        place(f, fs2, 34816);
        return f;
      };
      const one = 'start=2048, size=32768, type=83';
      const two = 'start=34816, size=32768, type=83';
      await expectSameFilesystems(mk('p.raw', [one, two]), mk('q.raw', [two, one]));
    });
  });

  it('a plain overlay with files edited: the total equals a byte comparison, mostly in listed files', async () => {
    const d = tmp();
    const a = join(d, 'a.raw');
    makeExt4Image(a, tree(d), { sizeMiB: 16, args: [] });
    const b = join(d, 'b.raw');
    copyFileSync(a, b);
    writeFileSync(join(d, 'new'), Buffer.alloc(200 * 1024, 0x33));
    debugfsWrite(b, ['write new /etc/new.bin', 'rm /etc/f3.conf'], d);
    sh('qemu-img', ['convert', '-O', 'qcow2', a, join(d, 'base.qcow2')]);
    makeOverlay(b, join(d, 'base.qcow2'), join(d, 'b.qcow2'));
    const expected = differingSectorBytes(readFileSync(a), 0, readFileSync(b), 0, 16 * MiB);
    for (const r of [await diffPaths(a, b), await diffPaths(join(d, 'base.qcow2'), join(d, 'b.qcow2'))]) {
      expect(r.changedBytes).toBe(expected);
      expectAddsUp(r);
      expect(r.filesystems[0]!.changedBytesIn.files).toBeGreaterThanOrEqual(200 * 1024);
    }
  });
});
