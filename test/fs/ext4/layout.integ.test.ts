/**
 * Ext4Layout against dumpe2fs, on small filesystems made by mke2fs -d across the layouts
 * that place group metadata differently: 1 KiB and 4 KiB blocks, flex_bg on and off,
 * 64bit, metadata_csum, uninit_bg, no group checksums (ext2), meta_bg, sparse_super2,
 * resize_inode. Small groups (-g) give many groups, some BLOCK_UNINIT and INODE_UNINIT;
 * files deleted with debugfs leave holes in the bitmaps. Oracles: dumpe2fs (group layout,
 * flags, free blocks and free inodes per group), and for synthesised bitmaps the bitmaps
 * e2fsprogs itself writes when tune2fs turns uninit_bg off.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import type { BlockDevice, Extent } from '../../../src/diskimage/BlockDevice.js';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { BlockRuns } from '../../../src/fs/BlockRuns.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import type { GroupMetaKind } from '../../../src/fs/ext4/layout.js';
import { debugfsWrite, makeExt4Image, seeded } from '../../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

interface Variant {
  readonly name: string;
  readonly args: readonly string[];
  readonly type?: 'ext2' | 'ext4';
  readonly sizeMiB: number;
  /** Expect groups with BLOCK_UNINIT (the bitmaps that are synthesised). */
  readonly blockUninit?: boolean;
}

const VARIANTS: readonly Variant[] = [
  { name: '1k flex_bg metadata_csum 64bit resize_inode', args: ['-b', '1024', '-g', '1024', '-N', '2048'], sizeMiB: 16, blockUninit: true },
  { name: '4k flex_bg metadata_csum 64bit', args: ['-b', '4096', '-g', '1024', '-N', '2048'], sizeMiB: 48, blockUninit: true },
  { name: '1k ^flex_bg metadata_csum', args: ['-b', '1024', '-g', '1024', '-N', '2048', '-O', '^flex_bg'], sizeMiB: 16, blockUninit: true },
  { name: '4k ^flex_bg ^64bit', args: ['-b', '4096', '-g', '1024', '-N', '2048', '-O', '^flex_bg,^64bit'], sizeMiB: 48, blockUninit: true },
  { name: '1k uninit_bg ^metadata_csum ^64bit', args: ['-b', '1024', '-g', '1024', '-N', '2048', '-O', '^metadata_csum,^64bit,uninit_bg'], sizeMiB: 16, blockUninit: true },
  { name: '1k meta_bg ^resize_inode 64bit', args: ['-b', '1024', '-g', '1024', '-N', '4096', '-O', 'meta_bg,^resize_inode,64bit'], sizeMiB: 40, blockUninit: true },
  { name: '1k sparse_super2', args: ['-b', '1024', '-g', '1024', '-N', '2048', '-O', 'sparse_super2'], sizeMiB: 16 },
  { name: '2k ^sparse_super ^flex_bg ^resize_inode', args: ['-b', '2048', '-g', '1024', '-N', '2048', '-O', '^sparse_super,^flex_bg,^resize_inode'], sizeMiB: 24 },
  { name: 'ext2 1k (no group checksums)', type: 'ext2', args: ['-b', '1024', '-g', '1024', '-N', '2048'], sizeMiB: 16 },
];

const tmp = useTempDir('imgdedup-layout-');

/** A small tree: 60 small files in two directories and two files of a few hundred KiB, seeded. */
function buildTree(dir: string): void {
  const rnd = seeded(9);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
  mkdirSync(join(dir, 'a'), { recursive: true });
  mkdirSync(join(dir, 'b'));
  for (let i = 0; i < 60; i++) writeFileSync(join(dir, i % 2 ? 'a' : 'b', `f${i}`), bytes(1 + Math.floor(rnd() * 9000)));
  writeFileSync(join(dir, 'big1'), bytes(700_000));
  writeFileSync(join(dir, 'big2'), bytes(300_000));
}

/** A list like "1-5, 9, 12-14" as runs. */
function parseList(text: string): BlockRuns {
  const runs: Array<[number, number]> = [];
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    runs.push([a!, (b ?? a!) - a! + 1]);
  }
  return new BlockRuns(runs);
}

interface DumpGroup {
  readonly group: number;
  readonly first: number;
  readonly last: number;
  readonly flags: readonly string[];
  readonly meta: ReadonlyArray<{ kind: GroupMetaKind; start: number; count: number }>;
  readonly freeBlocks: BlockRuns;
  readonly freeInodes: BlockRuns;
}

/** dumpe2fs's per-group section: range, flags, where its metadata sits, free blocks and inodes. */
function dumpGroups(image: string): DumpGroup[] {
  const text = sh('dumpe2fs', [image]);
  const out: DumpGroup[] = [];
  for (const m of text.matchAll(/^Group (\d+): \(Blocks (\d+)-(\d+)\)[^[\n]*(?:\[([^\]]*)\])?\n((?: {2}[^\n]*\n)+)/gm)) {
    const body = m[5]!;
    const meta: Array<{ kind: GroupMetaKind; start: number; count: number }> = [];
    const grab = (re: RegExp, kind: GroupMetaKind): void => {
      const x = re.exec(body);
      if (x) meta.push({ kind, start: Number(x[1]), count: x[2] !== undefined ? Number(x[2]) - Number(x[1]) + 1 : 1 });
    };
    grab(/superblock at (\d+)/, 'superblock');
    grab(/Group descriptors? at (\d+)(?:-(\d+))?/, 'group descriptors');
    grab(/Reserved GDT blocks at (\d+)-(\d+)/, 'reserved GDT');
    grab(/Block bitmap at (\d+)/, 'block bitmap');
    grab(/Inode bitmap at (\d+)/, 'inode bitmap');
    grab(/Inode table at (\d+)-(\d+)/, 'inode table');
    out.push({
      group: Number(m[1]),
      first: Number(m[2]),
      last: Number(m[3]),
      flags: (m[4] ?? '').split(',').map((s) => s.trim()).filter(Boolean),
      meta,
      freeBlocks: parseList(/Free blocks: ([^\n]*)/.exec(body)![1]!),
      freeInodes: parseList(/Free inodes: ([^\n]*)/.exec(body)![1]!),
    });
  }
  return out;
}

/** Clear bits among the first `n` of a bitmap, offset by `base`. */
function clearBits(bitmap: Uint8Array, n: number, base: number): BlockRuns {
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) if (!(bitmap[i >>> 3]! & (1 << (i & 7)))) runs.push([base + i, 1]);
  return new BlockRuns(runs);
}

/** A device that counts the reads of each byte offset. */
class CountingDevice implements BlockDevice {
  readonly reads = new Map<number, number>();
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.set(offset, (this.reads.get(offset) ?? 0) + 1);
    return this.inner.read(offset, length);
  }
  allocation(): AsyncIterable<Extent> {
    return this.inner.allocation();
  }
}

let tree = '';
beforeAll(() => {
  tree = join(tmp(), 'tree');
  buildTree(tree);
});

describe.each(VARIANTS)('$name', (v) => {
  let image = '';
  let groups: DumpGroup[] = [];

  beforeAll(() => {
    image = join(tmp(), `${v.name.replace(/\W+/g, '_')}.img`);
    makeExt4Image(image, tree, { args: [...v.args], sizeMiB: v.sizeMiB, ...(v.type ? { type: v.type } : {}) });
    // Holes in the bitmaps: every third small file deleted, and a big one.
    debugfsWrite(image, [...Array.from({ length: 20 }, (_, k) => `rm /${(3 * k) % 2 ? 'a' : 'b'}/f${3 * k}`), 'rm /big2']);
    expectStrictFsckClean(image);
    groups = dumpGroups(image);
  });

  test('group geometry, flags and metadata runs equal dumpe2fs', async () => {
    const dev = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(dev, { file: image });
      const layout = fs.layout;
      expect(groups.length).toBe(layout.groupCount);
      expect(groups.length).toBeGreaterThan(8);
      let blockUninit = 0;
      const dumped: Array<[number, number]> = [];
      for (const d of groups) {
        const geo = layout.group(d.group);
        expect([geo.firstBlock, geo.firstBlock + geo.blockCount - 1], `group ${d.group} blocks`).toEqual([d.first, d.last]);
        expect(geo.blockUninit, `group ${d.group} BLOCK_UNINIT`).toBe(d.flags.includes('BLOCK_UNINIT'));
        expect(geo.inodeUninit, `group ${d.group} INODE_UNINIT`).toBe(d.flags.includes('INODE_UNINIT'));
        if (geo.blockUninit) blockUninit++;
        const ours = layout.metaRunsOf(d.group).map((r) => `${r.kind} ${r.start}+${r.count}`);
        expect(ours.sort(), `group ${d.group} metadata`).toEqual(d.meta.map((r) => `${r.kind} ${r.start}+${r.count}`).sort());
        for (const r of d.meta) {
          dumped.push([r.start, r.count]);
          expect(layout.metaRunAt(r.start + r.count - 1), `block ${r.start + r.count - 1}`).toMatchObject({ kind: r.kind, group: d.group });
        }
        expect(layout.groupOfBlock(d.first)).toBe(d.group);
        expect(layout.groupOfBlock(d.last)).toBe(d.group);
        expect(layout.groupOfInode(geo.firstIno + geo.inodeCount - 1)).toBe(d.group);
      }
      if (v.blockUninit) expect(blockUninit, 'groups with BLOCK_UNINIT').toBeGreaterThan(0);
      const boot = fs.superblock.s_first_data_block > 0 ? [[0, 1] as [number, number]] : [];
      expect(layout.metaBlocks.toArray()).toEqual(new BlockRuns([...boot, ...dumped]).toArray());
    } finally {
      await dev.close();
    }
  });

  test('per-group bitmaps, used and free blocks and inodes equal dumpe2fs; one read per bitmap', async () => {
    const raw = await RawImage.open(image);
    try {
      const dev = new CountingDevice(raw);
      const fs = await Ext4Fs.open(dev, { file: image });
      const layout = fs.layout;
      const sb = fs.superblock;
      dev.reads.clear();
      let allFree = new BlockRuns();
      let allFreeInodes = new BlockRuns();
      for (const d of groups) {
        const geo = layout.group(d.group);
        const bb = await layout.blockBitmap(d.group);
        expect(clearBits(bb, geo.blockCount, geo.firstBlock).toArray(), `group ${d.group} free blocks`).toEqual(d.freeBlocks.toArray());
        const ib = await layout.inodeBitmap(d.group);
        expect(clearBits(ib, geo.inodeCount, geo.firstIno).toArray(), `group ${d.group} free inodes`).toEqual(d.freeInodes.toArray());
        // Copies: changing one does not change the model.
        bb.fill(0xff);
        allFree = allFree.union(d.freeBlocks);
        allFreeInodes = allFreeInodes.union(d.freeInodes);
      }
      expect((await layout.freeBlocks()).toArray()).toEqual(allFree.toArray());
      const used = await layout.usedBlocks();
      expect(used.toArray()).toEqual(allFree.gapsIn(0, sb.s_blocks_count).toArray());
      const usedInodes = await layout.usedInodes();
      expect(usedInodes.toArray()).toEqual(allFreeInodes.gapsIn(1, sb.s_inodes_count).toArray());
      expect((await layout.freeInodes()).toArray()).toEqual(allFreeInodes.toArray());
      expect(usedInodes.blockCount).toBe(sb.s_inodes_count - sb.s_free_inodes_count);
      expect(used.blockCount).toBe(sb.s_blocks_count - sb.s_free_blocks_count);
      for (let b = 0; b < sb.s_blocks_count; b++) if ((await layout.blockInUse(b)) !== used.has(b)) expect.fail(`blockInUse(${b})`);
      for (let i = 1; i <= sb.s_inodes_count; i++) if ((await layout.inodeInUse(i)) !== usedInodes.has(i)) expect.fail(`inodeInUse(${i})`);
      // Every bitmap that exists on disk was read once, whatever was asked how often.
      for (const d of groups) {
        const geo = layout.group(d.group);
        if (!geo.blockUninit) expect(dev.reads.get(geo.blockBitmap * sb.blockSize), `reads of group ${d.group}'s block bitmap`).toBe(1);
        if (!geo.inodeUninit) expect(dev.reads.get(geo.inodeBitmap * sb.blockSize), `reads of group ${d.group}'s inode bitmap`).toBe(1);
      }
      expect([...dev.reads.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(2 * groups.length);
      // After forgetBitmaps (a writer wrote the blocks under them) they are read again.
      layout.forgetBitmaps();
      await layout.blockInUse(layout.group(0).firstBlock);
      expect(dev.reads.get(layout.group(0).blockBitmap * sb.blockSize)).toBe(layout.group(0).blockUninit ? undefined : 2);
    } finally {
      await raw.close();
    }
  });

  if (v.blockUninit) {
    test('synthesised bitmaps of uninitialised groups equal those e2fsprogs writes when tune2fs turns uninit_bg off', async () => {
      const copy = `${image}.init`;
      copyFileSync(image, copy);
      // Without metadata_csum first (tune2fs then keeps the uninit flags under uninit_bg).
      if (sh('dumpe2fs', ['-h', copy]).includes('metadata_csum')) sh('tune2fs', ['-O', '^metadata_csum', copy]);
      sh('tune2fs', ['-O', '^uninit_bg', copy]);
      expectStrictFsckClean(copy);
      expect(dumpGroups(copy).some((d) => d.flags.length > 0)).toBe(false);
      const bytes = readFileSync(copy);
      const dev = await RawImage.open(image);
      try {
        const fs = await Ext4Fs.open(dev, { file: image });
        const bs = fs.blockSize;
        let checked = 0;
        for (let g = 0; g < fs.layout.groupCount; g++) {
          const geo = fs.layout.group(g);
          if (geo.blockUninit) {
            expect(Buffer.from(await fs.layout.blockBitmap(g)).equals(bytes.subarray(geo.blockBitmap * bs, (geo.blockBitmap + 1) * bs)), `block bitmap of group ${g}`).toBe(true);
            checked++;
          }
          if (geo.inodeUninit) {
            expect(Buffer.from(await fs.layout.inodeBitmap(g)).equals(bytes.subarray(geo.inodeBitmap * bs, (geo.inodeBitmap + 1) * bs)), `inode bitmap of group ${g}`).toBe(true);
            checked++;
          }
        }
        expect(checked).toBeGreaterThan(4);
      } finally {
        await dev.close();
      }
    });
  }
});

describe('bitmap checksums (metadata_csum)', () => {
  let image = '';
  beforeAll(() => {
    image = join(tmp(), 'csum.img');
    makeExt4Image(image, tree, { args: ['-b', '1024', '-g', '1024', '-N', '2048'], sizeMiB: 16 });
  });

  /** A copy of the image with one byte of block `blockNo` flipped by dd. */
  function corrupt(blockNo: number, byte: number): string {
    const out = join(tmp(), `csum-${blockNo}-${byte}.img`);
    copyFileSync(image, out);
    const at = blockNo * 1024 + byte;
    const old = readFileSync(out).subarray(at, at + 1)[0]!;
    const r = spawnSync('dd', [`of=${out}`, 'bs=1', `seek=${at}`, 'count=1', 'conv=notrunc', 'status=none'], { input: Buffer.from([old ^ 0x20]) });
    expect(r.status).toBe(0);
    return out;
  }

  const where = (kind: 'Block' | 'Inode', g: number): number => {
    const d = dumpGroups(image)[g]!;
    return d.meta.find((r) => r.kind === (kind === 'Block' ? 'block bitmap' : 'inode bitmap'))!.start;
  };

  /** The first group after 0 whose block bitmap is initialised (one BLOCK_UNINIT is never read). */
  const initialised = (): number => dumpGroups(image).find((d) => d.group > 0 && !d.flags.includes('BLOCK_UNINIT'))!.group;

  const cases: Array<['Block' | 'Inode', string, () => number]> = [
    ['Block', 'group 0', () => 0],
    ['Inode', 'group 0', () => 0],
    ['Block', 'a later group', initialised],
  ];
  test.each(cases)('a flipped byte in the %s bitmap of %s gives BAD_CHECKSUM naming it and its byte offset', async (kind, _which, group) => {
    const g = group();
    const at = where(kind, g);
    const bad = corrupt(at, 5);
    const dev = await RawImage.open(bad);
    try {
      const fs = await Ext4Fs.open(dev, { file: bad });
      const structure = `ext4.${kind.toLowerCase()}_bitmap[${g}]`;
      const expected = { structure, deviceOffset: at * 1024, offset: at * 1024, file: bad };
      if (kind === 'Block') {
        await expectImgError(() => fs.layout.blockBitmap(g), 'BAD_CHECKSUM', expected);
        await expectImgError(() => fs.layout.usedBlocks(), 'BAD_CHECKSUM', expected);
        // A failed read is not cached as good: asking again meets the error again.
        await expectImgError(() => fs.layout.blockInUse(fs.layout.group(g).firstBlock), 'BAD_CHECKSUM', expected);
        // Other groups are unaffected.
        await fs.layout.blockBitmap(g === 0 ? 1 : 0);
      } else {
        await expectImgError(() => fs.layout.inodeBitmap(g), 'BAD_CHECKSUM', expected);
        await expectImgError(() => fs.layout.usedInodes(), 'BAD_CHECKSUM', expected);
        await expectImgError(() => fs.layout.inodeInUse(fs.layout.group(g).firstIno), 'BAD_CHECKSUM', expected);
      }
      // Under 'warn' the bitmap is used as it is, and the mismatch recorded once.
      const lenient = await Ext4Fs.open(dev, { file: bad, verifyChecksums: 'warn' });
      const bitmap = kind === 'Block' ? await lenient.layout.blockBitmap(g) : await lenient.layout.inodeBitmap(g);
      if (kind === 'Block') await lenient.layout.usedBlocks();
      else await lenient.layout.usedInodes();
      expect(bitmap[5]).toBe(readFileSync(bad)[at * 1024 + 5]);
      expect(lenient.diagnostics).toEqual([expect.objectContaining({ code: 'BAD_CHECKSUM', structure, deviceOffset: at * 1024 })]);
    } finally {
      await dev.close();
    }
  });
});

describe('the bg_itable_unused tail', () => {
  test('an inode whose bit is set past the used part of the table is free, as e2fsck reads it', async () => {
    const image = join(tmp(), 'tail.img');
    makeExt4Image(image, tree, { args: ['-b', '1024', '-g', '1024', '-N', '2048', '-O', '^metadata_csum,^64bit,uninit_bg'], sizeMiB: 16 });
    const g0 = dumpGroups(image)[0]!;
    const bitmapAt = g0.meta.find((r) => r.kind === 'inode bitmap')!.start * 1024;
    const unused = Number(/(\d+) unused inodes/.exec(sh('dumpe2fs', [image]).split(/^Group 1:/m)[0]!.split(/^Group 0:/m)[1]!)![1]);
    const ipg = Number(/Inodes per group:\s+(\d+)/.exec(sh('dumpe2fs', ['-h', image]))![1]);
    expect(unused).toBeGreaterThan(8);
    // The last inode of group 0 lies in the unused tail; mark it in use in the bitmap (gdt_csum: no bitmap checksum).
    const ino = ipg;
    const bytes = readFileSync(image);
    bytes[bitmapAt + ((ino - 1) >>> 3)]! |= 1 << ((ino - 1) & 7);
    writeFileSync(image, bytes);
    const fsck = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8', env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    expect(fsck.stdout).toMatch(new RegExp(`Inode bitmap differences:\\s+-${ino}\\b`));
    const dev = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(dev, { file: image });
      expect(await fs.layout.inodeInUse(ino)).toBe(false);
      expect((await fs.layout.usedInodes()).has(ino)).toBe(false);
      // The bitmap itself is what is on disk (a writer copies it and clears the bit).
      const bitmap = await fs.layout.inodeBitmap(0);
      expect(bitmap[(ino - 1) >>> 3]! & (1 << ((ino - 1) & 7))).not.toBe(0);
    } finally {
      await dev.close();
    }
  });
});
