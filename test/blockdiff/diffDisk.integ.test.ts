/**
 * diffDisks against the rdump-and-compare oracle (treeOracle.ts) on a generated update:
 * B as a qcow2 overlay on A (incremental, from allocation maps), the same inside a GPT
 * disk (ext4 in partition 2), and two unrelated images (B from a separate mkfs of the
 * updated tree: hashing, full tree walk). Also counts bytes read from the base layer to
 * show the overlay path reads O(change).
 */
import { copyFileSync, mkdirSync, openSync, readFileSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { openChain } from '../../src/diskimage/openChain.js';
import { ChainDevice } from '../../src/diskimage/ChainDevice.js';
import type { BlockDevice, ByteRange, Extent } from '../../src/diskimage/BlockDevice.js';
import { diffDisks, type FsDiff } from '../../src/blockdiff/diffDisk.js';
import type { DiffSide } from '../../src/blockdiff/changedRanges.js';
import { applyScenarioUpdate, buildScenarioTree, growExt4Image, makeOverlay, makeScenarioImage } from '../../fixtures/ext4/diffScenarios.js';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { sh } from '../helpers/run.js';
import { parseStat } from '../fs/ext4/debugfsOracle.js';
import { useTempDir } from '../helpers/tmp.js';
import { diffPaths } from './diffPaths.js';
import { expectedDiff, type ExpectedDiff } from './treeOracle.js';
import { debugfsPathBlocks, expectExactChangedBlocks } from './blockOracle.js';

const tmp = useTempDir('imgdedup-diff-');

/** A device that counts the bytes read through it. */
class CountingDevice implements BlockDevice {
  bytesRead = 0;
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.bytesRead += length;
    return this.inner.read(offset, length);
  }
  allocation(range?: ByteRange): AsyncIterable<Extent> {
    return this.inner.allocation(range);
  }
}


/** A path's bytes as text (the scenario trees have UTF-8 names only). */
const text = (b: Uint8Array): string => Buffer.from(b).toString();

function asExpected(fs: FsDiff): ExpectedDiff {
  return {
    added: fs.added.map((e) => text(e.path)).sort(),
    removed: fs.removed.map((e) => text(e.path)).sort(),
    modified: Object.fromEntries(fs.modified.map((e) => [text(e.path), [...e.changes].sort()])),
  };
}

let A = '';
let B = '';
let expected: ExpectedDiff;

beforeAll(() => {
  const d = tmp();
  const tree = buildScenarioTree(d);
  A = join(d, 'A.raw');
  B = join(d, 'B.raw');
  makeScenarioImage(A, tree, 48);
  copyFileSync(A, B);
  applyScenarioUpdate(B, d);
  sh('qemu-img', ['convert', '-O', 'qcow2', A, join(d, 'A.qcow2')]);
  makeOverlay(B, join(d, 'A.qcow2'), join(d, 'B.qcow2'));
  expected = expectedDiff(A, B, join(d, 'oracle'));
}, 60_000);

describe('diffDisks', () => {
  it('the oracle sees every kind of change the scenario makes', () => {
    expect(expected.added).toEqual(expect.arrayContaining(['/etc/new.conf', '/opt/newpkg', '/opt/newpkg/share/README', '/etc/renamed.conf']));
    expect(expected.removed).toEqual(expect.arrayContaining(['/usr/lib/old.so', '/var/cache/oldpkg/sub/b', '/etc/rename-me.conf']));
    expect(expected.modified['/usr/bin/python3']).toEqual(['content', 'mode']);
    expect(expected.modified['/usr/lib/grow.so']).toEqual(['content', 'size']);
    expect(expected.modified['/etc/owner.conf']).toEqual(['gid', 'uid']);
    expect(expected.modified['/etc/xattr.conf']).toEqual(['xattrs']);
    expect(expected.modified['/usr/bin/python']).toEqual(['target']);
    expect(expected.modified['/home/user/silent.dat']).toEqual(['content']);
  });

  it('B as a qcow2 overlay on A: equals the oracle, incrementally', async () => {
    const d = tmp();
    const r = await diffPaths(join(d, 'A.qcow2'), join(d, 'B.qcow2'));
    expect(r.mode).toBe('overlay');
    expect(r.filesystems).toHaveLength(1);
    const fs = r.filesystems[0]!;
    expect(fs.partition).toBeNull();
    expect(fs.stats.mode).toBe('incremental');
    expect(asExpected(fs)).toEqual(expected);
    // The silent data-block write is found only through the ownership scan.
    expect(fs.stats.ownershipScan).toBe(true);
    expect(fs.unattributedBlocks).toEqual([]);
    // Hard links: both paths of libkeep.so report the xattr change.
    expect(fs.modified.filter((m) => m.ino === fs.modified.find((x) => text(x.path) === '/usr/lib/libkeep.so')!.ino).map((m) => text(m.path))).toEqual(['/usr/lib/libkeep.so', '/usr/lib/libkeep.so.1']);
    const grow = fs.modified.find((m) => text(m.path) === '/usr/lib/grow.so')!;
    expect(grow.changedBlocks.reduce((n, [, c]) => n + c, 0)).toBeGreaterThanOrEqual(Math.ceil(90_000 / 4096));
    // Exactly the blocks debugfs and a byte comparison give, for every path.
    expect(expectExactChangedBlocks(fs, A, B, 4096)).toBeGreaterThan(30);
  });

  it('the overlay path reads O(change) from the base', async () => {
    // The same update on a 512 MiB filesystem: the reads must not grow with the disk.
    const d = join(tmp(), 'big');
    mkdirSync(d);
    const tree = buildScenarioTree(d);
    makeScenarioImage(join(d, 'A.raw'), tree, 512);
    copyFileSync(join(d, 'A.raw'), join(d, 'B.raw'));
    applyScenarioUpdate(join(d, 'B.raw'), d);
    sh('qemu-img', ['convert', '-O', 'qcow2', join(d, 'A.raw'), join(d, 'A.qcow2')]);
    makeOverlay(join(d, 'B.raw'), join(d, 'A.qcow2'), join(d, 'B.qcow2'));
    const ca = await openChain(join(d, 'A.qcow2'));
    const cb = await openChain(join(d, 'B.qcow2'));
    try {
      const base = new CountingDevice(ca.layers[0]!);
      const top = cb.layers[0]!;
      const a: DiffSide = { name: 'A', device: new ChainDevice([base]), layers: [{ id: 'base', device: base }] };
      const b: DiffSide = { name: 'B', device: new ChainDevice([top, base]), layers: [{ id: 'top', device: top }, { id: 'base', device: base }] };
      const r = await diffDisks(a, b);
      expect(r.filesystems[0]!.stats.mode).toBe('incremental');
      expect(asExpected(r.filesystems[0]!)).toEqual(expected);
      // What is read is what the overlay stores (64 KiB clusters around ~350 KiB of changed
      // blocks), once to compare it with the base, plus metadata, including the ownership
      // scan the silent write forces; a 512 MiB disk.
      expect(r.bytesCompared).toBeLessThan(2 << 20);
      expect(r.changedBytes).toBeLessThan(r.bytesCompared);
      expect(base.bytesRead).toBeLessThan(2 * r.bytesCompared + (1 << 20));
      expect(base.bytesRead).toBeLessThan(base.size / 100);
    } finally {
      await ca.close();
      await cb.close();
    }
  });

  it('a GPT disk is diffed partition by partition', async () => {
    const d = tmp();
    const disk = (name: string, fsImage: string): string => {
      const p = join(d, name);
      sh('truncate', ['-s', '64M', p]);
      sh('sgdisk', ['-U', '11111111-2222-3333-4444-555555555555', '-n', '1:2048:+8M', '-t', '1:8300', '-n', '2:18432:+48M', '-t', '2:8300', p]);
      sh('dd', [`if=${fsImage}`, `of=${p}`, 'bs=1M', `seek=${18432 / 2048}`, 'conv=notrunc', 'status=none']);
      return p;
    };
    const da = disk('gptA.raw', A);
    const db = disk('gptB.raw', B);
    // Partition 1 holds no filesystem: a change there is reported as a byte range.
    const fd = openSync(db, 'r+');
    writeSync(fd, Buffer.from('partition one changed'), 0, 21, 2048 * 512 + 5000);
    closeSync(fd);
    sh('qemu-img', ['convert', '-O', 'qcow2', da, join(d, 'gptA.qcow2')]);
    makeOverlay(db, join(d, 'gptA.qcow2'), join(d, 'gptB.qcow2'));
    const r = await diffPaths(join(d, 'gptA.qcow2'), join(d, 'gptB.qcow2'));
    expect(r.scheme).toBe('gpt');
    expect(r.filesystems.map((f) => [f.partition, f.fsType])).toEqual([[2, 'ext4']]);
    expect(asExpected(r.filesystems[0]!)).toEqual(expected);
    expectExactChangedBlocks(r.filesystems[0]!, A, B, 4096);
    const p1 = r.raw.find((x) => x.partition === 1)!;
    expect(p1.changedBytes).toBeGreaterThan(0);
    expect(p1.changedRanges.every(([o, l]) => o <= 2048 * 512 + 5000 && o + l >= 2048 * 512 + 5021)).toBe(true);
  });

  it('a partition that moved (same number, another start): its two places compared by content', async () => {
    const d = join(tmp(), 'moved');
    mkdirSync(d, { recursive: true });
    const disk = (name: string, startSector: number, fsImage: string): string => {
      const p = join(d, name);
      sh('truncate', ['-s', '80M', p]);
      sh('sgdisk', ['-U', '11111111-2222-3333-4444-555555555555', '-n', '1:2048:+8M', '-t', '1:8300', '-n', `2:${startSector}:+48M`, '-t', '2:8300', p]);
      sh('dd', [`if=${fsImage}`, `of=${p}`, 'bs=1M', `seek=${startSector / 2048}`, 'conv=notrunc', 'status=none']);
      return p;
    };
    const r = await diffPaths(disk('at9M.raw', 18432, A), disk('at25M.raw', 51200, B));
    const fs = r.filesystems[0]!;
    expect([fs.partition, fs.startBytesA, fs.startBytes]).toEqual([2, 18432 * 512, 51200 * 512]);
    expect(fs.stats.mode).toBe('full');
    expect(asExpected(fs)).toEqual(expected);
    expectExactChangedBlocks(fs, A, B, 4096);
  });

  it('two unrelated images (separate mkfs of the updated tree): same answer by hashing', async () => {
    const d = tmp();
    // The updated tree as files, then a fresh mkfs of it: different inode and block layout.
    const tree = join(d, 'oracle', 'dumpB');
    const C = join(d, 'C.raw');
    makeExt4Image(C, tree, { sizeMiB: 48, args: ['-b', '4096', '-N', '4096'] });
    const exp = expectedDiff(A, C, join(d, 'oracleC'));
    const r = await diffPaths(A, C);
    expect(r.mode).toBe('hash');
    expect(r.filesystems[0]!.stats.mode).toBe('full');
    expect(asExpected(r.filesystems[0]!)).toEqual(exp);
    expect(exp.added).toContain('/opt/newpkg/tool');
    expectExactChangedBlocks(r.filesystems[0]!, A, C, 4096);
  });
});

describe('an overlay that stores clusters with the bytes the base already has', () => {
  it('is no change: no path, no changed byte, no changed block', async () => {
    const d = join(tmp(), 'same-bytes');
    mkdirSync(d, { recursive: true });
    const base = join(tmp(), 'A.qcow2');
    const top = join(d, 'same.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    // 1 MiB of A rewritten with A's own bytes (inode tables, directories and file data of
    // the first groups), and 1 MiB of zeros over free space that reads as zeros in A.
    const a = readFileSync(A);
    writeFileSync(join(d, 'same.bin'), a.subarray(1 << 20, 2 << 20));
    const zerosAt = 44 << 20;
    expect(a.subarray(zerosAt, zerosAt + (1 << 20)).every((x) => x === 0)).toBe(true);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -s ${join(d, 'same.bin')} ${1 << 20} ${1 << 20}`, '-c', `write -P 0 ${zerosAt} ${1 << 20}`, top]);
    // The overlay does store both ranges as data.
    const map = JSON.parse(sh('qemu-img', ['map', '--output=json', top])) as Array<{ start: number; length: number; depth: number; data: boolean }>;
    expect(map.filter((m) => m.depth === 0 && m.data).reduce((n, m) => n + m.length, 0)).toBe(2 << 20);
    const r = await diffPaths(base, top);
    expect(r.mode).toBe('overlay');
    expect(r.bytesCompared).toBe(2 << 20);
    expect(r.changedBytes).toBe(0);
    expect(r.raw).toEqual([]);
    const fs = r.filesystems[0]!;
    expect(asExpected(fs)).toEqual({ added: [], removed: [], modified: {} });
    expect(fs.stats.changedBlockBytes).toBe(0);
  });
});

describe('a filesystem that grew (truncate +64M, resize2fs, then a file written)', () => {
  let G = '';
  let grownExpected: ExpectedDiff;
  const GROWN = '/opt/after-resize.bin';

  beforeAll(() => {
    const d = join(tmp(), 'grown');
    mkdirSync(d, { recursive: true });
    G = join(d, 'G.raw');
    copyFileSync(A, G);
    growExt4Image(G, 64);
    // Larger than the old filesystem's free space, so part of it lands past the old end.
    const payload = Buffer.alloc(44 << 20);
    for (let i = 0; i < payload.length; i += 4096) payload.writeUInt32LE(i, i);
    writeFileSync(join(d, 'payload'), payload);
    debugfsWrite(G, [`write payload ${GROWN}`], d);
    grownExpected = expectedDiff(A, G, join(d, 'oracle'));
  }, 60_000);

  it('the oracle: the added file and nothing else; some of its blocks lie past the old end', () => {
    expect(grownExpected).toEqual({ added: [GROWN], removed: [], modified: {} });
    const oldBlocks = 48 * 256;
    expect(debugfsPathBlocks(G, [GROWN]).get(GROWN)!.some((b) => b >= oldBlocks)).toBe(true);
  });

  it('whole raw disks of different sizes: diffed file by file', async () => {
    const r = await diffPaths(A, G);
    expect(r.mode).toBe('hash');
    expect(r.filesystems).toHaveLength(1);
    expect(r.raw).toEqual([]);
    const fs = r.filesystems[0]!;
    expect(fs.lengthBytesA).toBe(48 << 20);
    expect(fs.lengthBytes).toBe(112 << 20);
    expect(asExpected(fs)).toEqual(grownExpected);
    expectExactChangedBlocks(fs, A, G, 4096);
  });

  it('B as a larger qcow2 overlay on A: diffed file by file', async () => {
    const d = join(tmp(), 'grown');
    makeOverlay(G, join(tmp(), 'A.qcow2'), join(d, 'G.qcow2'));
    const r = await diffPaths(join(tmp(), 'A.qcow2'), join(d, 'G.qcow2'));
    expect(r.mode).toBe('overlay');
    expect(r.filesystems).toHaveLength(1);
    // resize2fs kept every group's metadata in place: followed from the changed blocks.
    expect(r.filesystems[0]!.stats.mode).toBe('incremental');
    expect(asExpected(r.filesystems[0]!)).toEqual(grownExpected);
    expectExactChangedBlocks(r.filesystems[0]!, A, G, 4096);
  });

  it('1 KiB blocks, grown from 6 to 14 block groups: new groups, inodes and blocks, followed incrementally', async () => {
    const d = join(tmp(), 'grown1k');
    mkdirSync(d, { recursive: true });
    const tree = buildScenarioTree(d, { files: 120, seed: 5 });
    const A1 = join(d, 'A1.raw');
    const G1 = join(d, 'G1.raw');
    makeExt4Image(A1, tree, { sizeMiB: 48, args: ['-b', '1024', '-N', '256'] });
    copyFileSync(A1, G1);
    growExt4Image(G1, 64);
    writeFileSync(join(d, 'small'), 'after the resize\n');
    writeFileSync(join(d, 'big'), Buffer.alloc(3 << 20, 0x61));
    // More new files than A has free inodes: the last ones get inodes of the new groups.
    const freeInodes = Number(/Free inodes: +(\d+)/.exec(sh('dumpe2fs', ['-h', A1]))![1]);
    const fill = Array.from({ length: freeInodes + 5 }, (_, i) => `write small /fill/f${i}`);
    debugfsWrite(G1, ['mkdir /fill', ...fill, 'write big /fill/big.bin', 'write small /etc/after.conf', 'rm /etc/hostname'], d);
    const exp = expectedDiff(A1, G1, join(d, 'oracle'));
    expect(exp.added).toHaveLength(freeInodes + 8);
    expect(exp.removed).toEqual(['/etc/hostname']);
    expect(exp.modified).toEqual({});
    const groups = (image: string): number => [...sh('dumpe2fs', [image]).matchAll(/^Group \d+:/gm)].length;
    expect([groups(A1), groups(G1)]).toEqual([6, 14]);
    const inodesA = Number(/Inode count: +(\d+)/.exec(sh('dumpe2fs', ['-h', A1]))![1]);
    expect(parseStat(sh('debugfs', ['-R', 'stat /fill/big.bin', G1])).ino).toBeGreaterThan(inodesA);
    sh('qemu-img', ['convert', '-O', 'qcow2', A1, join(d, 'A1.qcow2')]);
    makeOverlay(G1, join(d, 'A1.qcow2'), join(d, 'G1.qcow2'));
    const r = await diffPaths(join(d, 'A1.qcow2'), join(d, 'G1.qcow2'));
    const fs = r.filesystems[0]!;
    expect(fs.stats.mode).toBe('incremental');
    // The disk grew by 64 MiB; what counts is what was written past the old end (~3.5 MiB:
    // the new groups' metadata and the new files), not the new size.
    expect(r.changedBytes).toBeLessThan(8 << 20);
    expect(asExpected(fs)).toEqual(exp);
    expectExactChangedBlocks(fs, A1, G1, 1024);
    // The same pair hashed and walked in full gives the same answer.
    expect(asExpected((await diffPaths(A1, G1)).filesystems[0]!)).toEqual(exp);
  });

  it('a GPT partition that grew with its disk: diffed file by file', async () => {
    const d = join(tmp(), 'grown');
    const disk = (name: string, sizeMiB: number, partMiB: number, fsImage: string): string => {
      const p = join(d, name);
      sh('truncate', ['-s', `${sizeMiB}M`, p]);
      sh('sgdisk', ['-U', '11111111-2222-3333-4444-555555555555', '-n', '1:2048:+8M', '-t', '1:8300', '-n', `2:18432:+${partMiB}M`, '-t', '2:8300', p]);
      sh('dd', [`if=${fsImage}`, `of=${p}`, 'bs=1M', `seek=${18432 / 2048}`, 'conv=notrunc', 'status=none']);
      return p;
    };
    const da = disk('gptA.raw', 64, 48, A);
    const db = disk('gptG.raw', 128, 112, G);
    const r = await diffPaths(da, db);
    expect(r.scheme).toBe('gpt');
    expect(r.filesystems.map((f) => [f.partition, f.fsType, f.lengthBytesA, f.lengthBytes])).toEqual([[2, 'ext4', 48 << 20, 112 << 20]]);
    expect(asExpected(r.filesystems[0]!)).toEqual(grownExpected);
    expectExactChangedBlocks(r.filesystems[0]!, A, G, 4096);
    // Partition 1 is untouched; only the GPT headers and the space past the old disk changed.
    expect(r.raw.find((x) => x.partition === 1)!.changedBytes).toBe(0);
    expect(r.raw.filter((x) => x.partition !== 1).every((x) => x.partition === null && x.reason === 'outside partitions')).toBe(true);
  });
});
