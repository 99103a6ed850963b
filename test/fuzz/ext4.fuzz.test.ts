/**
 * Mutation fuzzing of the ext4 reader (src/fs/ext4) on filesystems made at test time by
 * `mke2fs -d` from a small tree (small and larger files, a sparse file with many extents,
 * short and long symlinks, a hard link, a 300-entry directory that `e2fsck -D` turns
 * into an htree, xattrs set by `debugfs ea_set`), reproducibly (E2FSPROGS_FAKE_TIME,
 * fixed UUID and hash seed, timestamps pinned by debugfs). Variants: ext4 with
 * metadata_csum (4 KiB and 1 KiB blocks), ext4 without metadata_csum (mutations reach the
 * deep parsers), inline_data, ext3 (block maps, journal) and ext2.
 *
 * Metadata is located independently of src/: `dumpe2fs` for the superblock, descriptors,
 * bitmaps and inode tables; `debugfs stat` for each used inode's directory blocks, extent
 * tree blocks (ETB), indirect blocks (IND/DIND/TIND) and xattr block. Mutations (little-
 * endian field sets with values that point at other metadata, at the block itself or at
 * other inodes, so cycles and cross-links arise; bit flips; chunk copies; rare
 * truncation) are weighted towards used inodes, directory blocks, extent/indirect nodes
 * and the superblock/descriptors. Each case (targets/ext4.ts, in a pool worker) opens
 * the mutated bytes in memory with checksum policy 'error' (and 'warn' for every other
 * case), walks the whole tree reading every file (bounded), every symlink and every
 * xattr list, then builds block ownership, free runs and the write refusal. Only
 * ImgdedupErrors other than InternalError may escape; the pool stops a case over its
 * time or memory bound and reports it (see harness.ts and pool.ts for the knobs;
 * FUZZ_REPLAY=<seed> replays).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, readdirSync, lstatSync, symlinkSync, linkSync, writeFileSync, openSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { Ext4Fs } from '../../src/fs/ext4/Ext4Fs.js';
import { run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { FUZZ_SEED, Tally, caseSeeds, describeFailures, exerciseSeed, mulberry32, mutate, type Region } from './harness.js';
import { useCasePool } from './pool.js';
import { BytesDevice, exercise } from './targets/ext4.js';

/** Cases per seed filesystem: 6 seeds x 100 takes about 16 s on 2 cores (12,000 ran clean once). FUZZ_CASES overrides. */
const CASES = process.env.FUZZ_CASES !== undefined ? Number(process.env.FUZZ_CASES) : 100;
const FAKE_TIME = '1700000000';
const UUID = '0e1d2c3b-4a59-4687-9a5b-6c7d8e9fa0b1';
const HASH_SEED = '1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b';

const tmp = useTempDir('imgdedup-fuzz-ext4-');
const pool = useCasePool();

// ---------------------------------------------------------------------------------------
// Seed filesystems

/** The source tree; returns the number of entries below the root (the walk's oracle). */
function makeTree(root: string): number {
  const rnd = mulberry32(0xe474);
  const bytes = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
    return b;
  };
  mkdirSync(join(root, 'dir', 'sub'), { recursive: true });
  mkdirSync(join(root, 'big'));
  writeFileSync(join(root, 'small.txt'), 'hello\n');
  writeFileSync(join(root, 'large.bin'), bytes(300_000));
  writeFileSync(join(root, 'medium.bin'), bytes(50_000));
  writeFileSync(join(root, 'empty'), '');
  for (let i = 0; i < 12; i++) writeFileSync(join(root, 'dir', `f${i}`), bytes(100 + i * 700));
  writeFileSync(join(root, 'dir', 'sub', 'deep'), 'deep\n');
  linkSync(join(root, 'small.txt'), join(root, 'hardlink.txt'));
  symlinkSync('small.txt', join(root, 'short-link'));
  symlinkSync(`dir/${'x'.repeat(200)}`, join(root, 'long-link'));
  // A sparse file with 21 separate data blocks: more extents than the inode holds, so a leaf block.
  const fd = openSync(join(root, 'sparse'), 'w');
  ftruncateSync(fd, 1 << 20);
  for (let i = 0; i <= 20; i++) writeSync(fd, Buffer.from(`D${String(i).padStart(2, "0")}`), 0, 3, i * 6 * 4096);
  closeSync(fd);
  for (let i = 1; i <= 300; i++) writeFileSync(join(root, 'big', `a-rather-long-directory-entry-name-number-${i}`), `${i}\n`);
  let n = 0;
  const count = (d: string): void => {
    for (const e of readdirSync(d)) {
      n++;
      if (lstatSync(join(d, e)).isDirectory()) count(join(d, e));
    }
  };
  count(root);
  return n;
}

interface Seed {
  readonly name: string;
  readonly bytes: Buffer;
  readonly regions: readonly WeightedRegion[];
  /** Block numbers of metadata (for pointer mutations that make cross-links and cycles). */
  readonly metaBlocks: readonly number[];
  readonly usedInodes: readonly number[];
  readonly blockSize: number;
  readonly blocksCount: number;
}

interface WeightedRegion extends Region {
  readonly weight: number;
  /** The filesystem block the region sits in. */
  readonly block: number;
}

const VARIANTS: ReadonlyArray<{ name: string; args: string[] }> = [
  { name: 'ext4 metadata_csum 4k', args: ['-t', 'ext4', '-b', '4096', '-I', '256'] },
  { name: 'ext4 metadata_csum 1k', args: ['-t', 'ext4', '-b', '1024', '-I', '256'] },
  { name: 'ext4 ^metadata_csum 4k', args: ['-t', 'ext4', '-O', '^metadata_csum', '-b', '4096', '-I', '256'] },
  { name: 'ext4 inline_data ^metadata_csum', args: ['-t', 'ext4', '-O', 'inline_data,^metadata_csum', '-b', '4096', '-I', '256'] },
  { name: 'ext3 1k', args: ['-t', 'ext3', '-b', '1024', '-I', '128'] },
  { name: 'ext2 4k', args: ['-t', 'ext2', '-b', '4096', '-I', '128'] },
];

const seeds: Seed[] = [];
let treeEntries = 0;

function makeSeed(dir: string, tree: string, v: { name: string; args: string[] }, i: number): Seed {
  const img = join(dir, `seed${i}.img`);
  const env = { E2FSPROGS_FAKE_TIME: FAKE_TIME, E2FSCK_TIME: FAKE_TIME };
  sh('mke2fs', ['-q', '-F', ...v.args, '-U', UUID, '-E', `hash_seed=${HASH_SEED}`, '-d', tree, img, '12M'], { env });
  // Pin the times mke2fs copied from the tree (made now; atimes change as it is read), add xattrs.
  const cmds: string[] = [];
  for (const ino of [2, ...Array.from({ length: 330 }, (_, k) => k + 11)]) cmds.push(`sif <${ino}> ctime @${FAKE_TIME}`, `sif <${ino}> atime @${FAKE_TIME}`, `sif <${ino}> mtime @${FAKE_TIME}`);
  writeFileSync(join(dir, 'val'), 'v'.repeat(600));
  cmds.push('ea_set /small.txt user.a hello', 'ea_set /dir user.b world', 'ea_set /big user.c some-longer-value-for-the-htree-dir', `ea_set -f ${join(dir, 'val')} /large.bin user.big`);
  writeFileSync(join(dir, 'cmds'), cmds.join('\n') + '\n');
  sh('debugfs', ['-w', '-f', join(dir, 'cmds'), img], { env });
  // e2fsck -D indexes the multi-block directories (mke2fs -d writes them linear).
  const fix = run('e2fsck', ['-fyD', img], { env: { ...process.env, ...env } });
  if (fix.status > 1) throw new Error(`e2fsck -fyD ${img}: ${fix.stdout}${fix.stderr}`);
  const check = run('e2fsck', ['-fn', img]);
  if (check.status !== 0) throw new Error(`seed ${v.name} is not clean: ${check.stdout}`);
  return { name: v.name, bytes: readFileSync(img), ...findRegions(img) };
}

/** Regions of metadata, from dumpe2fs and debugfs (independent of src/). */
function findRegions(img: string): Omit<Seed, 'name' | 'bytes'> {
  const dump = sh('dumpe2fs', [img], { env: { LC_ALL: 'C' } });
  const num = (re: RegExp, dflt?: number): number => {
    const m = re.exec(dump);
    if (!m) {
      if (dflt !== undefined) return dflt;
      throw new Error(`dumpe2fs: no ${re}`);
    }
    return Number(m[1]);
  };
  const bs = num(/^Block size:\s+(\d+)/m);
  const isize = num(/^Inode size:\s+(\d+)/m);
  const ipg = num(/^Inodes per group:\s+(\d+)/m);
  const blocksCount = num(/^Block count:\s+(\d+)/m);
  const groups = Math.ceil((blocksCount - num(/^First block:\s+(\d+)/m)) / num(/^Blocks per group:\s+(\d+)/m));
  const descSize = num(/^Group descriptor size:\s+(\d+)/m, 32);
  const regions: WeightedRegion[] = [];
  const meta = new Set<number>();
  const add = (name: string, block: number, offset: number, length: number, weight: number): void => {
    regions.push({ name, offset, length, weight, block });
    meta.add(block);
  };
  add('superblock', 1024 / bs >= 1 ? 1 : 0, 1024, 1024, 1);
  add('superblock-core', 1024 / bs >= 1 ? 1 : 0, 1024, 0x110, 2);
  add('superblock-64bit', 1024 / bs >= 1 ? 1 : 0, 1024 + 0x150, 16, 0.3);
  const itables: number[] = [];
  for (const m of dump.matchAll(/^Group (\d+):[\s\S]*?(?=^Group |(?![\s\S]))/gm)) {
    const g = Number(m[1]);
    const text = m[0];
    const pg = /Primary superblock at \d+, Group descriptors at (\d+)-(\d+)/.exec(text);
    if (pg) add('gdt', Number(pg[1]), Number(pg[1]) * bs, Math.min(bs, groups * descSize), 3);
    const bb = /Block bitmap at (\d+)/.exec(text);
    if (bb) add(`block-bitmap[${g}]`, Number(bb[1]), Number(bb[1]) * bs, bs, 0.3);
    const ib = /Inode bitmap at (\d+)/.exec(text);
    if (ib) add(`inode-bitmap[${g}]`, Number(ib[1]), Number(ib[1]) * bs, bs, 0.3);
    const it = /Inode table at (\d+)-(\d+)/.exec(text);
    if (!it) throw new Error(`dumpe2fs: group ${g} has no inode table`);
    itables[g] = Number(it[1]);
    add(`inode-table[${g}]`, Number(it[1]), Number(it[1]) * bs, bs, 0.5);
  }
  // Used inodes: those below each group's first free inode (mke2fs -d allocates in order).
  const used: number[] = [];
  for (const m of dump.matchAll(/^Group (\d+):[\s\S]*?Free inodes: (\d+)/gm)) {
    const g = Number(m[1]);
    const firstFree = Number(m[2]);
    for (let ino = g * ipg + 1; ino < firstFree && ino <= (g + 1) * ipg; ino++) used.push(ino);
  }
  const stats = sh('debugfs', ['-f', '-', img], { input: used.map((i) => `stat <${i}>`).join('\n') + '\n' });
  for (const part of stats.split(/^debugfs: stat /m).slice(1)) {
    const ino = Number(/^<(\d+)>/.exec(part)![1]);
    if (/^Inode: \d+\s+Type: bad type/m.test(part) || !/Type:/.test(part)) continue;
    const type = /Type: (\w+)/.exec(part)![1]!;
    const g = Math.floor((ino - 1) / ipg);
    const off = itables[g]! * bs + ((ino - 1) % ipg) * isize;
    const size = Number(/Group:.*?Size: (\d+)/.exec(part)?.[1] ?? 0);
    // The 300 tiny files of /big (and other tiny regular files) get little weight; the root, directories and the rest much.
    const w = type === 'directory' ? 3 : type === 'regular' && size <= 4 ? 0.05 : 1.5;
    add(`inode[${ino}]`, Math.floor(off / bs), off, isize, w);
    const acl = /File ACL: (\d+)/.exec(part);
    if (acl && Number(acl[1]) !== 0) add(`xattr-block[${ino}]`, Number(acl[1]), Number(acl[1]) * bs, bs, 2);
    const blocksText = /^(?:EXTENTS|BLOCKS):\n([\s\S]*?)(?:\n[A-Z]|\n*$)/m.exec(part)?.[1] ?? '';
    for (const t of blocksText.matchAll(/\((ETB\d+|IND|DIND|TIND|\d+(?:-\d+)?)\):(\d+)(?:-(\d+))?/g)) {
      const first = Number(t[2]);
      const last = t[3] !== undefined ? Number(t[3]) : first;
      if (t[1]!.startsWith('ETB')) add(`extent-node[${ino}]@${first}`, first, first * bs, bs, 3);
      else if (/IND/.test(t[1]!)) add(`${t[1]!.toLowerCase()}[${ino}]@${first}`, first, first * bs, bs, 3);
      else if (type === 'directory') for (let b = first; b <= Math.min(last, first + 7); b++) add(`dir[${ino}]@${b}`, b, b * bs, bs, 2.5);
    }
  }
  return { regions, metaBlocks: [...meta], usedInodes: used, blockSize: bs, blocksCount };
}

// ---------------------------------------------------------------------------------------
// The ext4-aware mutator

const S_IF = [0x41ed, 0x81a4, 0xa1ff, 0x2190, 0x6190, 0x1180, 0xc1ed, 0xf1ff, 0x01a4];
/** Inode fields: name, offset, width, values ('ptr': block numbers, inode numbers, extremes). i_flags values are XORed in. */
const INODE_FIELDS: ReadonlyArray<readonly [string, number, 2 | 4, readonly number[] | 'ptr']> = [
  ['i_mode', 0x00, 2, S_IF],
  ['i_size_lo', 0x04, 4, [0, 1, 59, 60, 61, 1023, 1024, 4095, 4096, 4097, 65536, 0x7fffffff, 0xffffffff]],
  ['i_links_count', 0x1a, 2, [0, 1, 2, 0xffff]],
  ['i_blocks_lo', 0x1c, 4, [0, 1, 2, 8, 0xffff, 0x7fffffff, 0xffffffff]],
  ['i_flags', 0x20, 4, [0x80000, 0x1000, 0x10000000, 0x40000, 0x200000, 0x800, 0x4000000]],
  ['i_block', 0x28, 4, 'ptr'],
  ['i_file_acl_lo', 0x68, 4, 'ptr'],
  ['i_size_high', 0x6c, 4, [0, 1, 0x100, 0xffffffff]],
  ['l_i_blocks_high', 0x74, 2, [0, 1, 0xffff]],
  ['i_file_acl_high', 0x76, 2, [0, 1, 0xffff]],
  ['i_extra_isize', 0x80, 2, [0, 4, 28, 32, 96, 128, 0xfffc, 2]],
];

function ext4Mutator(seed: Seed): (buf: Buffer, regions: readonly Region[], rnd: () => number) => { bytes: Buffer; done: string[] } {
  const total = seed.regions.reduce((s, r) => s + r.weight, 0);
  const U16 = [0, 1, 2, 0x7fff, 0x8000, 0xffff, 0xf30a, 12, 8, 4, 5];
  return (buf, _regions, rnd) => {
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const region = (): WeightedRegion => {
      let x = rnd() * total;
      for (const r of seed.regions) if ((x -= r.weight) < 0) return r;
      return seed.regions[seed.regions.length - 1]!;
    };
    const interesting32 = (r: WeightedRegion): number => {
      const k = Math.floor(rnd() * 10);
      if (k === 0) return r.block; // a block pointing at itself: cycles
      if (k === 1) return pick(seed.metaBlocks); // cross-links into other metadata
      if (k === 2) return pick(seed.usedInodes); // inode numbers (dirents, e_value_inum)
      if (k === 3) return seed.blocksCount - 1 + Math.floor(rnd() * 3);
      if (k === 4) return Math.floor(rnd() * seed.blocksCount);
      if (k === 5) return Math.floor(rnd() * 2 ** 32);
      return pick([0, 1, 2, 11, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe, 0x10000, 0xf30a, 4096, 1024]);
    };
    if (rnd() < 0.08) return mutate(buf, seed.regions, rnd);
    const done: string[] = [];
    let bytes = buf;
    const n = 1 + Math.floor(rnd() * 4);
    for (let m = 0; m < n; m++) {
      const r = region();
      const at = (align: number): number => r.offset + Math.floor(rnd() * Math.max(1, Math.floor(r.length / align))) * align;
      const op = Math.floor(rnd() * 9);
      if (r.name.startsWith('inode[') && rnd() < 0.4) {
        // An inode field (ext4 doc, inodes.rst) set to a value chosen for it.
        const [name, off, width, values] = pick(INODE_FIELDS);
        const k = name === 'i_block' ? 4 * Math.floor(rnd() * 15) : 0;
        const v = values === 'ptr' ? interesting32(r) : pick(values);
        const p = r.offset + off + k;
        if (p + width <= bytes.length && off + k + width <= r.length) {
          if (width === 2) bytes.writeUInt16LE(v & 0xffff, p);
          else if (name === 'i_flags') bytes.writeUInt32LE((bytes.readUInt32LE(p) ^ v) >>> 0, p);
          else bytes.writeUInt32LE(v >>> 0, p);
        }
        done.push(`inode ${r.name}.${name}${k ? `+${k}` : ''}=${v}`);
        continue;
      }
      if (/^(ind|dind|tind|extent-node|dir)\[/.test(r.name) && rnd() < 0.3) {
        // Many pointer slots naming one block (often the block itself): cycles and fan-out.
        const v = rnd() < 0.5 ? r.block : interesting32(r);
        const from = at(4);
        const count = rnd() < 0.5 ? (r.offset + r.length - from) / 4 : 1 + Math.floor(rnd() * 16);
        for (let p = from, c = 0; c < count && p + 4 <= Math.min(bytes.length, r.offset + r.length); p += 4, c++) bytes.writeUInt32LE(v >>> 0, p);
        done.push(`slots ${r.name}@${from}x${count}=${v}`);
        continue;
      }
      if (op <= 1) {
        const p = at(1);
        const bit = Math.floor(rnd() * 8);
        if (p < bytes.length) bytes[p] = bytes[p]! ^ (1 << bit);
        done.push(`flip ${r.name}@${p}.${bit}`);
      } else if (op === 2) {
        const p = at(1);
        const v = pick([0, 0xff, 0x7f, 0x80, 1, 2, 7, 8, 0xfe]);
        if (p < bytes.length) bytes[p] = v;
        done.push(`byte ${r.name}@${p}=${v}`);
      } else if (op === 3) {
        const p = at(2);
        const v = pick(U16);
        if (p + 2 <= bytes.length) bytes.writeUInt16LE(v, p);
        done.push(`u16 ${r.name}@${p}=${v}`);
      } else if (op <= 5) {
        const p = at(4);
        const v = interesting32(r) >>> 0;
        if (p + 4 <= bytes.length) bytes.writeUInt32LE(v, p);
        done.push(`u32 ${r.name}@${p}=${v}`);
      } else if (op === 6) {
        // Copy a chunk from another region (dirents, extents, inode fields end up elsewhere).
        const src = region();
        const len = pick([4, 8, 12, 16, 32, 128]);
        const p = at(4);
        const q = src.offset + Math.floor(rnd() * Math.max(1, Math.floor((src.length - len) / 4))) * 4;
        if (p + len <= bytes.length && q + len <= bytes.length) bytes.copy(bytes, p, q, q + len);
        done.push(`copy ${src.name}@${q}+${len} -> ${r.name}@${p}`);
      } else if (op === 7) {
        const p = at(4);
        const len = Math.min(pick([4, 16, 64, 256]), r.offset + r.length - p);
        const fill = rnd() < 0.5 ? 0 : Math.floor(rnd() * 256);
        if (p + len <= bytes.length) bytes.fill(fill, p, p + len);
        done.push(`fill ${r.name}@${p}+${len}=${fill}`);
      } else if (rnd() < 0.1) {
        const len = rnd() < 0.5 ? Math.floor(rnd() * bytes.length) : r.offset + Math.floor(rnd() * r.length);
        bytes = bytes.subarray(0, Math.min(len, bytes.length));
        done.push(`truncate ${bytes.length}`);
      } else {
        const p = at(1);
        if (p < bytes.length) bytes[p] = Math.floor(rnd() * 256);
        done.push(`rand ${r.name}@${p}`);
      }
    }
    return { bytes, done };
  };
}

// ---------------------------------------------------------------------------------------
// Running cases (targets/ext4.ts runs each in a pool worker)

/**
 * Every case under checksum policy 'error'; even seeds under 'warn' as well (same bytes).
 * Cases are mutated in place in one SharedArrayBuffer that the worker reads without a
 * copy; that is safe because the pool runs one case at a time and the target only reads.
 */
async function fuzzExt4(seed: Seed, cases: number, baseSeed: number): Promise<Tally> {
  const tally = new Tally();
  const mutator = ext4Mutator(seed);
  const shared = Buffer.from(new SharedArrayBuffer(seed.bytes.length));
  const t0 = performance.now();
  for (const [i, s] of caseSeeds(baseSeed, cases).entries()) {
    seed.bytes.copy(shared);
    const { bytes, done } = mutator(shared, seed.regions, mulberry32(s));
    for (const policy of (s & 1) === 0 ? (['error', 'warn'] as const) : (['error'] as const)) {
      tally.add(i, s, [`policy ${policy}`, ...done], await pool.run('ext4', { bytes, policy, seed: exerciseSeed(s) }), `${policy}:`);
    }
  }
  if (process.env.FUZZ_VERBOSE) console.log(tally.summary(seed.name, performance.now() - t0, pool));
  return tally;
}

beforeAll(() => {
  const d = tmp();
  const tree = join(d, 'tree');
  mkdirSync(tree);
  treeEntries = makeTree(tree);
  VARIANTS.forEach((v, i) => seeds.push(makeSeed(d, tree, v, i)));
}, 60_000);

describe('ext4 mutation fuzzing: only ImgdedupErrors, bounded time and memory', () => {
  it('the seed filesystems read fully, as made, with no diagnostics', async () => {
    for (const s of seeds) {
      const fs = await Ext4Fs.open(new BytesDevice(s.bytes), { file: s.name, verifyChecksums: 'error' });
      const r = await exercise(fs, mulberry32(1));
      // Every entry of the tree, and lost+found.
      expect({ name: s.name, codes: r.codes, entries: r.entries }).toEqual({ name: s.name, codes: [], entries: treeEntries + 1 });
      expect(fs.diagnostics).toEqual([]);
      // The regions found by dumpe2fs/debugfs include the structures the mutator aims at.
      const kinds = new Set(s.regions.map((x) => x.name.replace(/[[@].*/, '')));
      expect([...kinds].filter((k) => ['superblock', 'gdt', 'inode', 'dir', 'xattr-block'].includes(k)).length, `${s.name}: ${[...kinds]}`).toBe(5);
      expect(kinds.has('extent-node') || kinds.has('ind') || kinds.has('dind'), s.name).toBe(true);
    }
  });

  it.each(VARIANTS.map((v, i) => [v.name, i] as const))('%s', async (_name, i) => {
    const s = seeds[i]!;
    const r = await fuzzExt4(s, CASES, FUZZ_SEED + 0xe4 + i * 7919);
    expect(r.failures, describeFailures(s.name, r.failures)).toEqual([]);
    // The mutations must reach past open: many cases must walk into the tree.
    if (process.env.FUZZ_REPLAY === undefined) expect(r.deepCases, JSON.stringify(r.outcomes)).toBeGreaterThan(CASES / 4);
  }, 600_000);
});
