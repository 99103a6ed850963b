/**
 * dirWriter on real directories, with e2fsck and debugfs as the oracles. mkfs.ext4 -d
 * builds a tree whose `big` directory holds 3,000 hard links to one file (e2fsck -fyD
 * then indexes it: an htree) and whose `small` directory is linear; a seeded sequence of
 * adds and removes runs through dirWriter over the directory's real blocks; new blocks
 * are given to the directory with debugfs (fallocate, the extent made initialized with
 * sif, i_size with sif), the blocks are written back at their physical places, the file's
 * link count is set to the number of names, and then:
 *   - `e2fsck -fn` is strictly clean (htree order, leaf tails, dx_tail checksums, sizes);
 *   - `debugfs ls -p` of each directory lists exactly the model.
 * Every entry names the one file, so link counts are the only inode change needed.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { EXT4_INDEX_FL } from '../../../src/fs/ext4/constants.js';
import { decodeDxRoot } from '../../../src/fs/ext4/directory.js';
import { addEntry, dirFormat, removeEntry, type DirectoryBlocks } from '../../../src/fs/ext4/dirWriter.js';
import { BytesDevice } from '../../helpers/BytesDevice.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

const tmp = useTempDir('imgdedup-dirwriter-');

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Names of printable and high bytes (non-UTF-8 included), no '/', of 1..maxLen bytes. */
function randomName(next: () => number, maxLen: number): Buffer {
  const len = 1 + Math.floor(next() ** 2 * maxLen);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    let c: number;
    do c = 0x20 + Math.floor(next() * 0xdf);
    while (c === 0x2f || c === 0x7f);
    b[i] = c;
  }
  if (b.toString('latin1') === '.' || b.toString('latin1') === '..') b[0] = 0x41;
  return b;
}

/** debugfs with raw bytes in and out (latin1), one process. */
function debugfs(image: string, commands: readonly string[], write = false): string {
  const r = spawnSync('debugfs', [...(write ? ['-w'] : []), '-f', '-', image], { input: Buffer.from(commands.join('\n') + '\n', 'latin1'), maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`debugfs: ${r.stderr.toString()}`);
  return r.stdout.toString('latin1');
}

/** `ls -p DIR`: name -> inode, '.' and '..' left out. */
function listDir(image: string, dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of debugfs(image, [`ls -p ${dir}`]).split('\n')) {
    const m = /^\/(\d+)\/\d+\/\d+\/\d+\/(.*)\/\d*\/$/s.exec(line);
    // ls -p also prints the empty records (inode 0) that cover htree index blocks.
    if (m && m[1] !== '0' && m[2] !== '.' && m[2] !== '..') out.set(m[2]!, Number(m[1]));
  }
  return out;
}

/** The directory's blocks in a Map, appended ones included, for dirWriter; the physical ones stay with the test. */
class ImageDir implements DirectoryBlocks {
  readonly blocks: Uint8Array[];
  constructor(
    readonly ino: number,
    readonly blockSize: number,
    public htree: boolean,
    image: Buffer,
    readonly pblks: readonly number[],
  ) {
    this.blocks = pblks.map((p) => Uint8Array.from(image.subarray(p * blockSize, (p + 1) * blockSize)));
  }
  get blockCount(): number {
    return this.blocks.length;
  }
  async read(lblk: number): Promise<Uint8Array> {
    return this.blocks[lblk]!.slice();
  }
  async write(lblk: number, bytes: Uint8Array): Promise<void> {
    if (lblk >= this.blocks.length) throw new Error(`write beyond the directory: ${lblk}`);
    this.blocks[lblk] = bytes.slice();
  }
  async append(): Promise<number> {
    this.blocks.push(new Uint8Array(this.blockSize));
    return this.blocks.length - 1;
  }
  setHtree(on: boolean): void {
    this.htree = on;
  }
}

/** Gives `path` the logical blocks [from, to) with debugfs (initialized, within i_size) and returns its physical blocks. */
function growDirectory(image: string, path: string, from: number, to: number, blockSize: number): number[] {
  debugfs(image, [`sif ${path} size ${to * blockSize}`, `fallocate ${path} ${from} ${to - 1}`], true);
  // debugfs allocates the new extents unwritten; a directory's must be initialized: clear
  // the flag (ee_len > 32768) in i_block, which holds the whole tree while it has depth 0.
  const ex = debugfs(image, [`ex ${path}`]).split('\n').filter((l) => /^\s*\d+\/\s*\d+\s+\d+\/\s*\d+/.test(l));
  const fixes: string[] = [];
  ex.forEach((line, k) => {
    const m = /^\s*(\d+)\/\s*(\d+)\s+(\d+)\/\s*(\d+)\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s*(Uninit)?/.exec(line)!;
    expect(m[2], 'directory extent tree of depth 0').toBe('0');
    if (m[10] === 'Uninit') fixes.push(`sif ${path} ${iBlockField(4 + 3 * k)} ${Number(m[9])}`);
  });
  if (fixes.length > 0) debugfs(image, fixes, true);
  return blocksOf(image, path);
}

/** debugfs's name for word i of i_block: block[0..11], then block[IND], block[DIND], block[TIND]. */
function iBlockField(i: number): string {
  return i < 12 ? `block[${i}]` : `block[${['IND', 'DIND', 'TIND'][i - 12]!}]`;
}

function blocksOf(image: string, path: string): number[] {
  return debugfs(image, [`blocks ${path}`]).split('\n')[1]!.trim().split(/\s+/).filter((s) => s !== '').map(Number);
}

interface Variant {
  readonly label: string;
  readonly blockSize: number;
  readonly features: string;
  readonly seed: number;
  /** Whether `small` may become an htree when its one block fills (dir_index is on in both images). */
  readonly smallDirIndex: boolean;
  /** s_flags says unsigned hashes (set before e2fsck -D builds the index): names' high bytes hash otherwise. */
  readonly unsignedHash?: boolean;
}

describe.each<Variant>([
  { label: '1 KiB blocks, metadata_csum', blockSize: 1024, features: 'metadata_csum', seed: 11, smallDirIndex: true },
  { label: '4 KiB blocks, no metadata_csum', blockSize: 4096, features: '^metadata_csum', seed: 12, smallDirIndex: false },
  { label: '1 KiB blocks, unsigned hash', blockSize: 1024, features: 'metadata_csum', seed: 13, smallDirIndex: true, unsignedHash: true },
])('dirWriter on a real filesystem ($label)', ({ label, blockSize, features, seed, smallDirIndex, unsignedHash }) => {
  it(`adds and removes entries in an htree and in a linear directory that ${smallDirIndex ? 'becomes an htree' : 'stays linear'}; e2fsck strict and debugfs ls agree with the model`, async () => {
    const dir = join(tmp(), label.replace(/\W+/g, '_'));
    const root = join(dir, 'root');
    mkdirSync(join(root, 'big'), { recursive: true });
    mkdirSync(join(root, 'small'));
    writeFileSync(join(root, 't'), 'target\n');
    const next = rng(seed);
    const model = { big: new Map<string, number>(), small: new Map<string, number>() };
    const pool = (n: number, maxLen: number) => {
      const s = new Set<string>();
      while (s.size < n) s.add(randomName(next, maxLen).toString('latin1'));
      return [...s];
    };
    const bigNames = pool(5000, 80);
    const smallNames = pool(400, 60);
    for (const n of bigNames.slice(0, 3000)) linkSync(join(root, 't'), Buffer.concat([Buffer.from(join(root, 'big') + '/'), Buffer.from(n, 'latin1')]));
    for (const n of smallNames.slice(0, 12)) linkSync(join(root, 't'), Buffer.concat([Buffer.from(join(root, 'small') + '/'), Buffer.from(n, 'latin1')]));
    const image = join(dir, 'fs.img');
    // A fixed UUID and hash seed, so that the layout (and so the run) is the same every time.
    const uuid = `${seed.toString(16).padStart(8, '0')}-1111-4222-8333-444455556666`;
    sh('mkfs.ext4', ['-q', '-F', '-U', uuid, '-b', String(blockSize), '-O', features, '-d', root, image, blockSize === 1024 ? '16M' : '64M']);
    debugfs(image, [`ssv hash_seed ${uuid.replace('1111', '7777')}`, ...(unsignedHash === true ? ['ssv flags 2'] : [])], true); // flags 2: EXT2_FLAGS_UNSIGNED_HASH only
    const fsck = spawnSync('e2fsck', ['-fyD', image], { env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    expect(fsck.status === 0 || fsck.status === 1, fsck.stdout.toString()).toBe(true);
    expectStrictFsckClean(image);

    const fs = await Ext4Fs.open(new BytesDevice(readFileSync(image)), { file: image, verifyChecksums: 'error' });
    const t = listDir(image, '/').get('t')!;
    for (const [name, ino] of listDir(image, '/big')) model.big.set(name, ino);
    for (const [name, ino] of listDir(image, '/small')) model.small.set(name, ino);
    expect(model.big.size).toBe(3000);

    const bytes = readFileSync(image);
    const dirs: Array<{ path: '/big' | '/small'; names: string[]; d: ImageDir; htree: boolean }> = [];
    for (const [path, names] of [['/big', bigNames], ['/small', smallNames]] as const) {
      const ino = listDir(image, '/').get(path.slice(1))!;
      const inode = await fs.readInode(ino);
      const htree = (inode.i_flags & EXT4_INDEX_FL) !== 0;
      const d = new ImageDir(ino, blockSize, htree, bytes, blocksOf(image, path));
      const fmt = { ...dirFormat(fs.superblock, inode), ...(path === '/small' ? { dirIndex: smallDirIndex } : {}) };
      expect(fmt.unsignedHash).toBe(unsignedHash === true);
      const m = model[path === '/big' ? 'big' : 'small'];
      const ops = path === '/big' ? 4000 : 600;
      for (let i = 0; i < ops; i++) {
        const name = Buffer.from(names[Math.floor(next() * names.length)]!, 'latin1');
        const k = name.toString('latin1');
        if (m.has(k) && next() < 0.6) {
          expect(await removeEntry(d, fmt, name)).toEqual({ ino: t, fileType: 1 });
          m.delete(k);
        } else if (!m.has(k)) {
          await addEntry(d, fmt, { name, ino: t, fileType: 1 });
          m.set(k, t);
        }
      }
      dirs.push({ path, names, d, htree });
    }
    expect(dirs[0]!.htree, 'e2fsck -D indexed big').toBe(true);
    expect(dirs[1]!.htree, 'small starts linear').toBe(false);
    expect(dirs[1]!.d.htree, 'small made an htree').toBe(smallDirIndex);

    // Give each directory its new blocks, then write every block where it lives.
    const fd = openSync(image, 'r+');
    try {
      for (const { path, d } of dirs) {
        const pblks = d.blockCount > d.pblks.length ? growDirectory(image, path, d.pblks.length, d.blockCount, blockSize) : [...d.pblks];
        expect(pblks.slice(0, d.pblks.length)).toEqual(d.pblks);
        expect(pblks.length).toBe(d.blockCount);
        d.blocks.forEach((b, lblk) => writeSync(fd, b, 0, blockSize, pblks[lblk]! * blockSize));
      }
      if (dirs[1]!.d.htree) {
        const flags = Number(/Flags: (0x[0-9a-f]+)/.exec(debugfs(image, ['stat /small']))![1]);
        debugfs(image, [`sif /small flags ${flags | EXT4_INDEX_FL}`], true);
      }
    } finally {
      closeSync(fd);
    }
    debugfs(image, [`sif /t links_count ${1 + model.big.size + model.small.size}`], true);

    expectStrictFsckClean(image);
    expect(listDir(image, '/big')).toEqual(model.big);
    expect(listDir(image, '/small')).toEqual(model.small);
    // The runs really grew both directories (new leaves, new linear blocks).
    expect(dirs[0]!.d.blockCount).toBeGreaterThan(dirs[0]!.d.pblks.length);
    expect(dirs[1]!.d.blockCount).toBeGreaterThan(dirs[1]!.d.pblks.length);
    const after = readFileSync(image);
    const rootBlock = after.subarray(dirs[0]!.d.pblks[0]! * blockSize, (dirs[0]!.d.pblks[0]! + 1) * blockSize);
    const info = decodeDxRoot(rootBlock, { file: image, verifyChecksums: 'error', diagnostics: [] }, 'root', 0, blockSize, { metadataCsum: features === 'metadata_csum', inodeCsumSeed: dirFormat(fs.superblock, await fs.readInode(dirs[0]!.d.ino)).csumSeed, largedir: false, dirBlocks: dirs[0]!.d.blockCount }).info;
    console.log(`${label}: big ${dirs[0]!.d.pblks.length} -> ${dirs[0]!.d.blockCount} blocks (indirect_levels ${info.indirect_levels}), small ${dirs[1]!.d.pblks.length} -> ${dirs[1]!.d.blockCount}; ${model.big.size} + ${model.small.size} names`);
  }, 120_000);
});
