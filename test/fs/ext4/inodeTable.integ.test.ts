/**
 * Batched inode-table reading: inodes come from chunks of the used part of each table
 * (cached within a budget), the full scan visits exactly the inodes the bitmaps mark in
 * use, and a chunk that cannot be read falls back to single-block reads, so a bad block
 * fails only the inodes it holds. Oracles: dumpe2fs (free inodes), debugfs stat.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import type { BlockDevice } from '../../../src/diskimage/BlockDevice.js';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { IoError } from '../../../src/errors.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { BlockRuns } from '../../../src/fs/BlockRuns.js';
import { INODE_CHUNK_BYTES, InodeTableCache, locateInode, usedTableBlocks } from '../../../src/fs/ext4/inodeTable.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { expectImgError } from '../../helpers/expectImgError.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseBlocks, parseLsP, parseStat } from './debugfsOracle.js';

const tmp = useTempDir('imgdedup-inode-table-');
let image: string;

/** Inode numbers marked in use, from dumpe2fs's per-group "Free inodes" lists. */
function usedInodesOracle(img: string): number[] {
  const out = spawnSync('dumpe2fs', [img], { encoding: 'utf8', maxBuffer: 1 << 28 }).stdout;
  const total = Number(/^Inode count:\s+(\d+)/m.exec(out)![1]);
  const free = new Uint8Array(total + 1);
  for (const m of out.matchAll(/^ {2}Free inodes: (.*)$/gm)) {
    for (const part of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [a, b] = part.split('-').map(Number);
      for (let i = a!; i <= (b ?? a!); i++) free[i] = 1;
    }
  }
  const used: number[] = [];
  for (let i = 1; i <= total; i++) if (!free[i]) used.push(i);
  return used;
}

/** A device that counts reads and fails those overlapping [badStart, badEnd) with IO. */
class ProbeDevice implements BlockDevice {
  reads: Array<[number, number]> = [];
  bad: [number, number] | undefined;
  constructor(private readonly inner: RawImage) {}
  get size(): number {
    return this.inner.size;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    if (this.bad && offset < this.bad[1] && offset + length > this.bad[0]) {
      throw new IoError({ file: 'probe', detail: `unreadable bytes ${this.bad[0]}..${this.bad[1]}` });
    }
    return this.inner.read(offset, length);
  }
  allocation(): AsyncGenerator<never> {
    throw new Error('not used');
  }
}

beforeAll(() => {
  const tree = join(tmp(), 'tree');
  const rnd = mulberry32(7);
  // 3,000 files in 30 directories, 1 KiB blocks and 2,048 inodes per group: each group's
  // table spans two 256 KiB chunks, and the Orlov allocator spreads the directories.
  for (let d = 0; d < 30; d++) {
    mkdirSync(join(tree, `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(tree, `d${d}`, `f${f}`), 'y'.repeat(Math.floor(rnd() * 3000)));
  }
  image = join(tmp(), 'fs.raw');
  sh('truncate', ['-s', '64M', image]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-I', '256', '-g', '8192', '-N', '16384', '-d', tree, image], { env: { E2FSPROGS_FAKE_TIME: '1600000000' } });
}, 60_000);

describe('directory prefetch', () => {
  test('readdir takes the blocks prefetchDirectories read (one read each) and lists what debugfs lists; a failed prefetch leaves the error to readdir', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const bs = fs.superblock.blockSize;
      const names = Array.from({ length: 30 }, (_, d) => `/d${d}`);
      const inos = await Promise.all(names.map(async (n) => (await fs.lookup(n))!));
      const dirBlocks = debugfsBatch(image, names.map((n) => `blocks ${n}`)).map(parseBlocks);
      // d7's first directory block cannot be read.
      dev.bad = [dirBlocks[7]![0]! * bs, (dirBlocks[7]![0]! + 1) * bs];
      dev.reads = [];
      fs.prefetchDirectories(inos);
      const listings = debugfsBatch(image, names.map((n) => `ls -p ${n}`)).map(parseLsP);
      for (let d = 0; d < names.length; d++) {
        if (d === 7) {
          await expectImgError(async () => {
            for await (const e of fs.readdir(inos[d]!)) void e;
          }, 'IO');
          continue;
        }
        const got: string[] = [];
        for await (const e of fs.readdir(inos[d]!)) got.push(`${e.ino} ${new TextDecoder().decode(e.name)}`);
        expect(got.sort()).toEqual(listings[d]!.map((e) => `${e.ino} ${e.name}`).sort());
        for (const b of dirBlocks[d]!) expect(dev.reads.filter(([off]) => off === b * bs).length).toBe(1);
      }
    } finally {
      await img.close();
    }
  });
});

describe('inode tables', () => {
  test('the scan visits exactly the inodes the bitmaps mark in use, in order, decoded as debugfs stat shows them', async () => {
    const img = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(img, { file: image });
      const seen: number[] = [];
      const sample = new Map<number, { mode: number; size: number; links: number; mtime: number }>();
      await fs.scanInodes((inode) => {
        seen.push(inode.ino);
        if (inode.ino % 97 === 0 || inode.ino === 2) sample.set(inode.ino, { mode: inode.i_mode & 0o7777, size: inode.i_size, links: inode.i_links_count, mtime: inode.mtime.sec });
      });
      expect(seen).toEqual(usedInodesOracle(image));
      expect(sample.size).toBeGreaterThan(20);
      const stats = debugfsBatch(image, [...sample.keys()].map((i) => `stat <${i}>`)).map(parseStat);
      expect([...sample.values()]).toEqual(stats.map((s) => ({ mode: s.mode, size: s.size, links: s.links, mtime: s.mtime.sec })));
    } finally {
      await img.close();
    }
  });

  test('readInode reads whole chunks of the used table, each once on a sequential pass', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const used = usedInodesOracle(image);
      dev.reads = [];
      for (const ino of used) await fs.readInode(ino);
      const sb = fs.superblock;
      const chunkBlocks = INODE_CHUNK_BYTES / sb.blockSize;
      // Chunks touched: per group, those of its used table part that hold an inode in use.
      const chunks = new Set(used.map((ino) => {
        const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
        return `${loc.group}:${Math.floor(loc.tableBlock / chunkBlocks)}`;
      }));
      expect(dev.reads.length).toBe(chunks.size);
      for (const [, len] of dev.reads) {
        expect(len).toBeLessThanOrEqual(INODE_CHUNK_BYTES);
        expect(len % sb.blockSize).toBe(0);
      }
      // Nothing beyond a group's used part (bg_itable_unused) is read in chunks.
      for (let g = 0; g < sb.groupCount; g++) {
        const gd = fs.groupDescriptor(g);
        const end = (gd.bg_inode_table + usedTableBlocks(sb, gd)) * sb.blockSize;
        for (const [off, len] of dev.reads) if (off >= gd.bg_inode_table * sb.blockSize && off < end) expect(off + len).toBeLessThanOrEqual(end);
      }
    } finally {
      await img.close();
    }
  });

  test('prefetchInodes reads the chunks holding the given inodes concurrently, each once; cachedInode then decodes them without I/O, as debugfs stat shows them', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const used = usedInodesOracle(image).filter((i) => i >= sb.s_first_ino);
      // Inodes of several groups, so of several chunks.
      const picked = used.filter((_, k) => k % 151 === 0);
      const chunkBlocks = INODE_CHUNK_BYTES / sb.blockSize;
      const chunks = new Set(picked.map((ino) => {
        const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
        return `${loc.group}:${Math.floor(loc.tableBlock / chunkBlocks)}`;
      }));
      expect(chunks.size).toBeGreaterThan(2);
      expect(fs.cachedInode(picked[0]!)).toBeUndefined();
      dev.reads = [];
      await fs.prefetchInodes(picked);
      expect(dev.reads.length).toBe(chunks.size);
      dev.reads = [];
      const got = picked.map((ino) => fs.cachedInode(ino)!);
      expect(dev.reads.length).toBe(0);
      const stats = debugfsBatch(image, picked.map((i) => `stat <${i}>`)).map(parseStat);
      expect(got.map((i) => ({ mode: i.i_mode & 0o7777, size: i.i_size, links: i.i_links_count }))).toEqual(stats.map((s) => ({ mode: s.mode, size: s.size, links: s.links })));
      // An unreadable chunk: prefetchInodes does not fail, cachedInode has nothing, readInode meets the error.
      const fresh = await Ext4Fs.open(dev, { file: image });
      const victim = picked[picked.length - 1]!;
      const loc = locateInode(sb, (g) => fs.groupDescriptor(g), victim);
      dev.bad = [loc.blockNo * sb.blockSize, (loc.blockNo + 1) * sb.blockSize];
      await fresh.prefetchInodes([victim]);
      expect(fresh.cachedInode(victim)).toBeUndefined();
      await expectImgError(() => fresh.readInode(victim), 'IO');
    } finally {
      await img.close();
    }
  });

  test('prefetchInodes reads inodes that lie one per chunk block by block, not whole chunks; cachedInode then decodes them without I/O, as debugfs stat shows them', async () => {
    // As a root's subdirectories lie: read whole, their chunks fill the cache, and a large
    // table's are evicted before the walk descends into them and reads them again.
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const chunkBlocks = INODE_CHUNK_BYTES / sb.blockSize;
      const byChunk = new Map<string, number>();
      for (const ino of usedInodesOracle(image).filter((i) => i >= sb.s_first_ino)) {
        const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
        const k = `${loc.group}:${Math.floor(loc.tableBlock / chunkBlocks)}`;
        if (!byChunk.has(k)) byChunk.set(k, ino);
      }
      const picked = [...byChunk.values()];
      expect(picked.length).toBeGreaterThan(2);
      dev.reads = [];
      await fs.prefetchInodes(picked);
      const blockOf = (ino: number): number => locateInode(sb, (g) => fs.groupDescriptor(g), ino).blockNo;
      expect(dev.reads).toEqual(picked.map((ino) => [blockOf(ino) * sb.blockSize, sb.blockSize]));
      dev.reads = [];
      const got = picked.map((ino) => fs.cachedInode(ino)!);
      expect(dev.reads).toEqual([]);
      const stats = debugfsBatch(image, picked.map((i) => `stat <${i}>`)).map(parseStat);
      expect(got.map((i) => ({ mode: i.i_mode & 0o7777, size: i.i_size, links: i.i_links_count }))).toEqual(stats.map((s) => ({ mode: s.mode, size: s.size, links: s.links })));
    } finally {
      await img.close();
    }
  });

  test('a scoped ownership scan keeps the directories\' records; another filesystem borrows one only where its inode-table block is unchanged', async () => {
    // B: A with /d7's mode changed (debugfs set_inode_field). Its table block is the only
    // changed block, found by comparing the two files.
    const copy = join(tmp(), 'chmod.raw');
    copyFileSync(image, copy);
    sh('debugfs', ['-w', '-R', 'set_inode_field /d7 mode 040700', copy]);
    const [ia, ib] = [readFileSync(image), readFileSync(copy)];
    const a = await RawImage.open(image);
    const b = await RawImage.open(copy);
    try {
      const fsA = await Ext4Fs.open(a, { file: image });
      const bs = fsA.superblock.blockSize;
      const changed: Array<[number, number]> = [];
      for (let blk = 0; blk * bs < ia.length; blk++) if (ia.compare(ib, blk * bs, (blk + 1) * bs, blk * bs, (blk + 1) * bs) !== 0) changed.push([blk, 1]);
      expect(changed).toHaveLength(1);
      const runs = new BlockRuns(changed);
      const names = Array.from({ length: 30 }, (_, d) => `/d${d}`);
      const inos = await Promise.all(names.map(async (n) => (await fsA.lookup(n))!));
      // Scoped to one block (a diff's pending blocks): the scan keeps every directory's record.
      await fsA.blockOwnership(new BlockRuns([[changed[0]![0], 1]]));
      const dev = new ProbeDevice(b);
      const fsB = await Ext4Fs.open(dev, { file: copy });
      fsB.borrowInodeTables(fsA, (s, c) => !runs.overlaps(s, c));
      dev.reads = [];
      const modes = [];
      for (const ino of inos) modes.push((await fsB.readInode(ino)).i_mode);
      const stats = debugfsBatch(copy, names.map((n) => `stat ${n}`)).map(parseStat);
      expect(modes.map((m) => m & 0o7777)).toEqual(stats.map((s) => s.mode));
      expect(stats[7]!.mode).toBe(0o700);
      // Only /d7's record came from B's device.
      expect(dev.reads.length).toBeGreaterThan(0);
      const d7 = locateInode(fsB.superblock, (g) => fsB.groupDescriptor(g), inos[7]!);
      for (const [off, len] of dev.reads) expect(off <= d7.blockNo * bs && off + len >= (d7.blockNo + 1) * bs).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('after a scan, reading the inodes again reads only the chunks the scan did not read whole', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const used = usedInodesOracle(image);
      await fs.scanInodes(() => undefined);
      const chunkBlocks = INODE_CHUNK_BYTES / sb.blockSize;
      const chunkOf = (ino: number): string => {
        const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
        return `${loc.group}:${Math.floor(loc.tableBlock / chunkBlocks)}`;
      };
      // The scan reads each group's table up to its last inode in use: a chunk past that
      // inode's block is only partly read, every earlier one whole.
      const lastBlock = new Map<number, number>();
      for (const ino of used) {
        const loc = locateInode(sb, (g) => fs.groupDescriptor(g), ino);
        lastBlock.set(loc.group, loc.tableBlock);
      }
      const partial = new Set<string>();
      for (const [g, last] of lastBlock) {
        const ci = Math.floor(last / chunkBlocks);
        const end = Math.min((ci + 1) * chunkBlocks, usedTableBlocks(sb, fs.groupDescriptor(g)));
        if (last + 1 < end) partial.add(`${g}:${ci}`);
      }
      dev.reads = [];
      const got = [];
      for (const ino of used) got.push((await fs.readInode(ino)).i_links_count);
      expect(new Set(used.map(chunkOf)).size).toBeGreaterThan(partial.size);
      expect(dev.reads.length).toBe(partial.size);
      const stats = debugfsBatch(image, used.filter((_, k) => k % 211 === 0).map((i) => `stat <${i}>`)).map(parseStat);
      expect(got.filter((_, k) => k % 211 === 0)).toEqual(stats.map((s) => s.links));
    } finally {
      await img.close();
    }
  });

  test('reading a table in order reads the next chunk ahead: it is asked for before any of its inodes is', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const inodesPerChunk = INODE_CHUNK_BYTES / sb.s_inode_size;
      const chunkBlocks = INODE_CHUNK_BYTES / sb.blockSize;
      const usedChunks = (g: number): number => Math.ceil(usedTableBlocks(sb, fs.groupDescriptor(g)) / chunkBlocks);
      // A group whose used table spans two chunks or more, followed by one in use.
      let g = 0;
      while (g + 1 < sb.groupCount && !(usedChunks(g) >= 2 && usedChunks(g + 1) >= 1)) g++;
      expect(g + 1).toBeLessThan(sb.groupCount);
      const chunkAt = (h: number, k: number): number => (fs.groupDescriptor(h).bg_inode_table + k * chunkBlocks) * sb.blockSize;
      // After chunk 1 comes the group's chunk 2, or the next group's chunk 0.
      const ahead = usedChunks(g) > 2 ? chunkAt(g, 2) : chunkAt(g + 1, 0);
      const first = g * sb.s_inodes_per_group + 1;
      dev.reads = [];
      await fs.readInode(first); // chunk 0: no predecessor read, nothing ahead
      expect(dev.reads.map(([off]) => off)).toEqual([chunkAt(g, 0)]);
      await fs.readInode(first + inodesPerChunk); // its successor: the one after is read ahead
      expect(dev.reads.map(([off]) => off).sort((x, y) => x - y)).toEqual([chunkAt(g, 0), chunkAt(g, 1), ahead].sort((x, y) => x - y));
      await fs.readInode(usedChunks(g) > 2 ? first + 2 * inodesPerChunk : first + sb.s_inodes_per_group);
      expect(dev.reads.filter(([off]) => off === ahead)).toHaveLength(1);
      // Out of order: nothing is read ahead.
      dev.reads = [];
      await fs.readInode(first + sb.s_inodes_per_group + inodesPerChunk);
      expect(dev.reads).toHaveLength(1);
    } finally {
      await img.close();
    }
  });

  test('an inode past the used part of its table (bg_itable_unused), in a chunk already read, is read from its own block', async () => {
    const img = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(img, { file: image });
      const sb = fs.superblock;
      const chunkInodes = INODE_CHUNK_BYTES / sb.s_inode_size;
      // A group whose used part ends inside a chunk, so that chunk is clipped before the tail.
      let g = 0;
      const usedIn = (x: number): number => usedTableBlocks(sb, fs.groupDescriptor(x)) * (sb.blockSize / sb.s_inode_size);
      while (g < sb.groupCount && (usedIn(g) % chunkInodes === 0 || fs.groupDescriptor(g).bg_itable_unused === 0)) g++;
      expect(g).toBeLessThan(sb.groupCount);
      const firstUnused = g * sb.s_inodes_per_group + usedIn(g) + 1;
      const chunkStart = g * sb.s_inodes_per_group + Math.floor(usedIn(g) / chunkInodes) * chunkInodes + 1;
      await fs.readInode(chunkStart);
      const inode = await fs.readInode(firstUnused);
      const want = parseStat(debugfsBatch(image, [`stat <${firstUnused}>`])[0]!);
      expect({ mode: inode.i_mode & 0o7777, size: inode.i_size, links: inode.i_links_count }).toEqual({ mode: want.mode, size: want.size, links: want.links });
    } finally {
      await img.close();
    }
  });

  test('the chunk cache keeps to its budget: with room for one chunk, going back re-reads', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const gd = (g: number) => fs.groupDescriptor(g);
      const cache = new InodeTableCache(sb, gd, (b, n) => fs.readBlocks(b, n), INODE_CHUNK_BYTES);
      const a = locateInode(sb, gd, 2);
      // An inode in use in another group (so in another chunk).
      const other = usedInodesOracle(image).find((i) => i > sb.s_inodes_per_group)!;
      const b = locateInode(sb, gd, other);
      dev.reads = [];
      expect(await cache.load(a)).toBeDefined();
      expect(cache.peek(a)).toBeDefined();
      expect(await cache.load(b)).toBeDefined();
      expect(cache.peek(a)).toBeUndefined();
      expect(await cache.load(a)).toBeDefined();
      expect(dev.reads.length).toBe(3);
    } finally {
      await img.close();
    }
  });

  test('an unreadable inode-table block fails only its own inodes, with the error of that block', async () => {
    const img = await RawImage.open(image);
    try {
      const dev = new ProbeDevice(img);
      const fs = await Ext4Fs.open(dev, { file: image });
      const sb = fs.superblock;
      const allUsed = usedInodesOracle(image);
      const used = allUsed.filter((i) => i >= sb.s_first_ino);
      // A block of the table in the middle of the used inodes of some group.
      const victim = used[Math.floor(used.length / 2)]!;
      const loc = locateInode(sb, (g) => fs.groupDescriptor(g), victim);
      dev.bad = [loc.blockNo * sb.blockSize, (loc.blockNo + 1) * sb.blockSize];
      const perBlock = sb.blockSize / sb.s_inode_size;
      const sameBlock = (ino: number): boolean => Math.floor((ino - 1) / perBlock) === Math.floor((victim - 1) / perBlock);
      const neighbour = used.find((i) => !sameBlock(i) && Math.abs(i - victim) < 64)!;
      expect(neighbour).toBeDefined();
      const want = parseStat(debugfsBatch(image, [`stat <${neighbour}>`])[0]!);
      expect((await fs.readInode(neighbour)).i_size).toBe(want.size);
      await expectImgError(() => fs.readInode(victim), 'IO');
      // The scan fails at the victim's block too, after every inode before it.
      const seen: number[] = [];
      await expectImgError(() => fs.scanInodes((i) => void seen.push(i.ino)), 'IO');
      const blockFirstIno = Math.floor((victim - 1) / perBlock) * perBlock + 1;
      expect(seen).toEqual(allUsed.filter((i) => i < blockFirstIno));
    } finally {
      await img.close();
    }
  });
});
