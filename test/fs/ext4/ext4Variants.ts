/**
 * The ext4 reader against debugfs/dumpe2fs on images made by mkfs.ext4 -d from a tree of
 * real files, across block sizes, descriptor sizes, checksum kinds, inline data, block
 * maps (ext2/ext3, ^extent), small inodes, meta_bg/sparse_super2 and htree directories.
 * Oracles: `debugfs ls -p`, `stat`, `blocks`, `dump_extents`, `ea_get`, `rdump`, and
 * dumpe2fs (free ranges and group layout). HEAVY=1 uses a 100,000-entry directory.
 */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { BlockRuns } from '../../../src/fs/BlockRuns.js';
import { Ext4Fs, type Ext4Stat } from '../../../src/fs/ext4/Ext4Fs.js';
import { decodeAcl, encodePosixAclXattr, formatAcl } from '../../../src/fs/ext4/xattr.js';
import { addXattrs, buildSourceTree, debugfsWrite, makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { useTempDir } from '../../helpers/tmp.js';
import { sh } from '../../helpers/run.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { debugfsBatch, debugfsOwners, dumpe2fsFreeRuns, mergeRuns, parseBlocks, parseDumpExtents, parseLsP, parseStat } from './debugfsOracle.js';

const HEAVY = process.env.HEAVY === '1';

interface Variant {
  name: string;
  args: string[];
  type?: 'ext2' | 'ext3' | 'ext4';
  sizeMiB: number;
  tree: 'main' | 'bigdir' | 'small';
  extras?: boolean;
  prealloc?: boolean;
  /** Run `e2fsck -fyD` after mkfs: mkfs -d writes linear directories, -D indexes every multi-block one. */
  index?: boolean;
  /** With index: `debugfs htree` of this directory must show at least this many indirect levels. */
  htreeLevels?: [dir: string, levels: number];
}

export const VARIANTS: Variant[] = [
  { name: 'ext4 4k metadata_csum 64bit', args: ['-b', '4096', '-N', '8192'], sizeMiB: 64, tree: 'main', extras: true, prealloc: true },
  { name: 'ext4 1k', args: ['-b', '1024', '-N', '8192'], sizeMiB: 64, tree: 'main', extras: true, prealloc: true },
  { name: 'ext4 2k ^64bit ^metadata_csum (uninit_bg)', args: ['-b', '2048', '-O', '^64bit,^metadata_csum,uninit_bg', '-N', '8192'], sizeMiB: 64, tree: 'main', index: true, htreeLevels: ['/links', 0] },
  { name: 'ext4 inline_data', args: ['-O', 'inline_data', '-N', '8192'], sizeMiB: 64, tree: 'main', extras: true },
  { name: 'ext4 ^extent (block maps)', args: ['-O', '^extent,^64bit', '-b', '1024', '-N', '8192'], sizeMiB: 64, tree: 'main' },
  { name: 'ext2', type: 'ext2', args: ['-b', '1024', '-N', '8192'], sizeMiB: 64, tree: 'main' },
  { name: 'ext3 -I 128', type: 'ext3', args: ['-I', '128', '-N', '8192'], sizeMiB: 64, tree: 'main' },
  { name: 'ext4 -I 128', args: ['-I', '128', '-N', '8192'], sizeMiB: 64, tree: 'main' },
  { name: 'ext4 meta_bg sparse_super2', args: ['-b', '1024', '-O', 'meta_bg,^resize_inode,sparse_super2', '-N', '8192'], sizeMiB: 64, tree: 'main' },
  { name: 'ext4 64k blocks', args: ['-b', '65536', '-N', '4096'], sizeMiB: 256, tree: 'small', index: true },
  // HEAVY=1: 100,000 entries: mkfs -d makes 20,000 (it inserts linearly, quadratic in the count),
  // e2fsck -D indexes the directory, debugfs adds 80,000 more through the htree (~5 minutes).
  { name: 'ext4 1k htree (2 levels)', args: ['-b', '1024', '-N', HEAVY ? '110000' : '30000', '-O', 'large_dir'], sizeMiB: HEAVY ? 256 : 96, tree: 'bigdir', index: true, htreeLevels: ['/bigdir', 1] },
];

/** Registers the suites of the variants named in `names` (in the calling test file). */
export function describeVariants(names: readonly string[]): void {
const tmp = useTempDir('imgdedup-ext4-');
const variants = VARIANTS.filter((v) => names.includes(v.name));
const trees: Record<Variant['tree'], string> = { main: '', bigdir: '', small: '' };

beforeAll(async () => {
  const needed = new Set(variants.map((v) => v.tree));
  if (needed.has('main')) trees.main = await buildSourceTree(join(tmp(), 'src-main'), { bigDirEntries: 0, docBytes: 6 << 20 });
  if (needed.has('small')) trees.small = await buildSourceTree(join(tmp(), 'src-small'), { bigDirEntries: 0, docBytes: 1 << 20 });
  if (needed.has('bigdir')) trees.bigdir = await buildSourceTree(join(tmp(), 'src-big'), { bigDirEntries: 20_000, docBytes: 0 });
}, 300_000);

const TYPE_NAMES: Record<Ext4Stat['type'], string> = {
  file: 'regular',
  dir: 'directory',
  symlink: 'symlink',
  chardev: 'character',
  blockdev: 'block',
  fifo: 'FIFO',
  socket: 'socket',
  unknown: 'bad',
};

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0') + ' ').join('');
/** A name's bytes as debugfs prints them (UTF-8; the generated trees have UTF-8 names only). */
const text = (b: Uint8Array): string => Buffer.from(b).toString();

async function concat(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

describe.each(variants)('$name', (v) => {
  let image = '';
  let dir = '';
  let dev: RawImage;
  let fs: Ext4Fs;

  beforeAll(async () => {
    dir = join(tmp(), v.name.replace(/\W+/g, '_'));
    mkdirSync(dir);
    image = join(dir, 'fs.img');
    makeExt4Image(image, trees[v.tree], { args: v.args, sizeMiB: v.sizeMiB, ...(v.type ? { type: v.type } : {}) });
    if (v.extras) {
      addXattrs(image, dir);
    }
    if (v.prealloc) {
      // Unwritten (preallocated) extents past some written data.
      debugfsWrite(image, ['write /dev/null /prealloc', 'fallocate /prealloc 0 39', 'sif /prealloc size 100000']);
    }
    if (v.index) spawnSync('e2fsck', ['-fyD', image], { env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    if (HEAVY && v.tree === 'bigdir') {
      const cmds = Array.from({ length: 80_000 }, (_, i) => `write /dev/null /bigdir/extra-${String(i).padStart(6, '0')}`);
      writeFileSync(join(dir, 'cmds'), cmds.join('\n') + '\n');
      spawnSync('debugfs', ['-w', '-f', join(dir, 'cmds'), image], { stdio: 'ignore', env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' } });
    }
    if (v.htreeLevels) {
      const m = /Indirect levels: (\d+)/.exec(sh('debugfs', ['-R', `htree ${v.htreeLevels[0]}`, image]));
      expect(Number(m?.[1] ?? -1), `${v.htreeLevels[0]} is an htree`).toBeGreaterThanOrEqual(v.htreeLevels[1]);
    }
    expectStrictFsckClean(image);
    dev = await RawImage.open(image);
    fs = await Ext4Fs.open(dev, { file: image });
    return () => dev.close();
  }, HEAVY ? 1_800_000 : 300_000);

  test('walk, stat, xattrs and extents equal debugfs ls -p, stat, blocks and dump_extents', async () => {
    const entries: Array<{ path: string; ino: number; parent: number; name: string }> = [];
    for await (const e of fs.walk()) entries.push({ path: text(e.path), ino: e.ino, parent: e.parentIno, name: text(e.name) });
    expect(entries.length).toBeGreaterThan(v.tree === 'bigdir' ? (HEAVY ? 100_000 : 20_000) : v.tree === 'small' ? 300 : 700);

    // Directory listings: every directory's entries (ino, name, mode, uid, gid) against ls -p.
    const dirs = [2, ...new Set(entries.filter((e) => entries.some((c) => c.parent === e.ino)).map((e) => e.ino))];
    const emptyDirs: number[] = [];
    for (const e of entries) if ((await fs.stat(e.ino)).type === 'dir' && !dirs.includes(e.ino)) emptyDirs.push(e.ino);
    const allDirs = [...dirs, ...emptyDirs];
    const ls = debugfsBatch(image, allDirs.map((d) => `ls -p <${d}>`));
    for (let i = 0; i < allDirs.length; i++) {
      const ours: string[] = [];
      for await (const e of fs.readdir(allDirs[i]!)) {
        const st = await fs.stat(e.ino);
        ours.push(`${e.ino}/${st.mode.toString(8)}/${st.uid}/${st.gid}/${text(e.name)}/${st.type === 'dir' ? '' : st.size}`);
      }
      const theirs = parseLsP(ls[i]!).map((e) => `${e.ino}/${e.mode.toString(8)}/${e.uid}/${e.gid}/${e.name}/${e.size}`);
      expect(ours.sort(), `directory <${allDirs[i]}>`).toEqual(theirs.sort());
    }

    // stat of every distinct inode (plus the journal and root), xattrs included.
    // Every inode, except that of the 20,000 alike empty files in /bigdir (whose ino, mode, uid,
    // gid and size ls -p covered above) every 10th is enough.
    const sampled = entries.filter((e, i) => !e.path.startsWith('/bigdir/') || i % 10 === 0);
    const inos = [...new Set([2, 8, ...sampled.map((e) => e.ino)])].filter((ino) => ino !== 8 || fs.superblock.s_journal_inum === 8);
    const stats = debugfsBatch(image, inos.map((i) => `stat <${i}>`)).map(parseStat);
    const xattrChecks: Array<{ ino: number; name: string; value: Uint8Array }> = [];
    const extentInos: number[] = [];
    const mappedInos: number[] = [];
    for (let i = 0; i < inos.length; i++) {
      const ino = inos[i]!;
      const d = stats[i]!;
      const st = await fs.stat(ino);
      const mine = {
        ino, type: TYPE_NAMES[st.type], mode: st.mode & 0o7777, flags: st.flags, uid: st.uid, gid: st.gid, size: st.size,
        links: st.links, blockcount: st.blocks512, ctime: st.ctime, atime: st.atime, mtime: st.mtime,
        ...(d.crtime ? { crtime: st.crtime } : {}),
      };
      expect(mine, `stat <${ino}>`).toEqual({
        ino: d.ino, type: d.type, mode: d.mode, flags: d.flags, uid: d.uid, gid: d.gid, size: d.size, links: d.links,
        blockcount: d.blockcount, ctime: d.ctime, atime: d.atime, mtime: d.mtime, ...(d.crtime ? { crtime: d.crtime } : {}),
      });
      if (d.device) expect(st.rdev, `rdev <${ino}>`).toEqual(d.device);
      if (d.fastLink !== undefined) expect(Buffer.from(await fs.readlink(ino)).toString('latin1')).toBe(d.fastLink);
      const xs = await fs.xattrs(ino);
      expect(xs.map((x) => `${text(x.name)} (${x.value.length})`), `xattrs <${ino}>`).toEqual(d.xattrs.map((x) => `${x.name} (${x.length})`));
      for (const x of xs) xattrChecks.push({ ino, name: text(x.name), value: x.value });
      if (st.flags & 0x80000) extentInos.push(ino);
      if (st.type === 'file' || st.type === 'dir' || (st.type === 'symlink' && d.fastLink === undefined)) mappedInos.push(ino);
    }

    // xattr values against `ea_get -x` (which shows ACLs converted to the Linux xattr format).
    const shown = debugfsBatch(image, xattrChecks.map((x) => `ea_get -x <${x.ino}> ${x.name}`));
    xattrChecks.forEach((x, k) => {
      const theirs = (shown[k]!.split(' = ')[1] ?? '').split(/\s+/).filter(Boolean).join(' ');
      const ctx = { file: image, verifyChecksums: 'error' as const, diagnostics: [] };
      const value = x.name.startsWith('system.posix_acl') ? encodePosixAclXattr(decodeAcl(x.value, ctx, 'acl', 0)) : x.value;
      expect(hex(value).trim(), `xattr ${x.name} of <${x.ino}>`).toBe(theirs);
    });

    // Block lists of every mapped inode against `debugfs blocks`, which lists extent-node and
    // indirect blocks before the blocks below them; extent trees against dump_extents.
    const blocks = debugfsBatch(image, mappedInos.map((i) => `blocks <${i}>`)).map(parseBlocks);
    for (let i = 0; i < mappedInos.length; i++) {
      const data: number[] = [];
      const meta: number[] = [];
      const inode = await fs.readInode(mappedInos[i]!);
      for await (const e of fs.extentsOf(inode, (p) => meta.push(p))) for (let k = 0; k < e.len; k++) data.push(e.pblk + k);
      // Same blocks (data and metadata), and the data blocks in the same logical order.
      expect([...data, ...meta].sort((a, b) => a - b), `blocks <${mappedInos[i]}>`).toEqual([...blocks[i]!].sort((a, b) => a - b));
      const metaSet = new Set(meta);
      expect(data, `data blocks <${mappedInos[i]}>`).toEqual(blocks[i]!.filter((b) => !metaSet.has(b)));
    }
    const dumps = debugfsBatch(image, extentInos.map((i) => `dump_extents <${i}>`)).map(parseDumpExtents);
    let deepest = 0;
    for (let i = 0; i < extentInos.length; i++) {
      const inode = await fs.readInode(extentInos[i]!);
      const nodes: number[] = [];
      const leaves = [];
      for await (const e of fs.extentsOf(inode, (p) => nodes.push(p))) leaves.push({ ...e });
      expect(leaves, `dump_extents <${extentInos[i]}>`).toEqual(dumps[i]!.leaves);
      expect(nodes, `extent nodes <${extentInos[i]}>`).toEqual(dumps[i]!.nodes);
      deepest = Math.max(deepest, nodes.length);
    }
    if (v.name.includes('1k') && v.tree === 'main') expect(deepest).toBeGreaterThan(4); // the fragmented file has a deep tree
  });

  test('content equals debugfs rdump byte for byte', async () => {
    const out = join(dir, 'rdump');
    mkdirSync(out);
    sh('debugfs', ['-R', `rdump / ${out}`, image]);
    let files = 0;
    for await (const e of fs.walk()) {
      const st = await fs.stat(e.ino);
      const p = Buffer.concat([Buffer.from(out), Buffer.from(e.path)]);
      if (st.type === 'file') {
        const ours = await concat(fs.readFile(e.ino));
        let theirs = readFileSync(p);
        // debugfs 1.47.0 dumps an inline file with its whole inline area (60+ bytes) instead of
        // i_size bytes; the kernel reads i_size bytes (zeros past the inline data). Cut or pad
        // the dump to i_size, and check the cut
        // part against the tree mkfs copied.
        if (theirs.length !== st.size && (st.flags & 0x10000000) !== 0) {
          const padded = Buffer.alloc(st.size);
          theirs.copy(padded, 0, 0, Math.min(st.size, theirs.length));
          theirs = padded;
          if (text(e.path).startsWith('/small/')) expect(ours.equals(readFileSync(Buffer.concat([Buffer.from(trees[v.tree]), Buffer.from(e.path)]))), text(e.path)).toBe(true);
        }
        expect(ours.equals(theirs), text(e.path)).toBe(true);
        files++;
      } else if (st.type === 'symlink') {
        expect(Buffer.from(await fs.readlink(e.ino)).equals(Buffer.from(readlinkSync(p, { encoding: 'buffer' }))), text(e.path)).toBe(true);
      } else if (st.type === 'dir') {
        expect(lstatSync(p).isDirectory(), text(e.path)).toBe(true);
      }
    }
    expect(files).toBeGreaterThan(v.tree === 'small' ? 50 : 400);
  });

  test('free blocks equal dumpe2fs; ownership covers every used block exactly once and matches the group layout', async () => {
    const free = mergeRuns(await (async () => { const r: Array<[number, number]> = []; for await (const x of fs.freeBlockRuns()) r.push(x); return r; })());
    expect(free).toEqual(dumpe2fsFreeRuns(image));
    const own = await fs.blockOwnership();
    expect(own.overlappingBlocks).toBe(0);
    const covered = mergeRuns([...[...own.runs()].map((r) => [r.start, r.length] as [number, number]), ...own.freeRuns].sort((a, b) => a[0] - b[0]));
    expect(covered).toEqual([[0, fs.superblock.s_blocks_count]]);
    // The group layout as dumpe2fs prints it.
    const text = sh('dumpe2fs', [image]);
    const range = (s: string): [number, number] => {
      const [a, b] = s.split('-').map(Number);
      return [a!, b ?? a!];
    };
    let checked = 0;
    for (const m of text.matchAll(/^Group (\d+):[^\n]*\n((?: {2}[^\n]*\n)+)/gm)) {
      const g = Number(m[1]);
      const body = m[2]!;
      const expectOwner = (re: RegExp, kind: string): void => {
        const x = re.exec(body);
        if (!x) return;
        const [a, b] = range(x[1]!);
        for (const blk of [a, b]) {
          const o = own.ownerOf(blk);
          expect(o !== 'free' && o?.kind, `group ${g} ${kind} at ${blk}`).toBe(kind);
          checked++;
        }
      };
      expectOwner(/superblock at (\d+)/, 'superblock');
      expectOwner(/Group descriptors at (\d+-\d+)/, 'group descriptors');
      expectOwner(/Reserved GDT blocks at (\d+-\d+)/, 'reserved GDT');
      expectOwner(/Block bitmap at (\d+)/, 'block bitmap');
      expectOwner(/Inode bitmap at (\d+)/, 'inode bitmap');
      expectOwner(/Inode table at (\d+-\d+)/, 'inode table');
    }
    expect(checked).toBeGreaterThan(5);

    // Per-inode ownership of every inode in the tree (and the journal) against debugfs, both
    // ways: the blocks ownership gives an inode are exactly `blocks` (data, extent-node and
    // indirect blocks) plus the xattr block `stat` names; one debugfs process for all.
    const inos = new Set<number>([2]);
    for await (const e of fs.walk()) inos.add(e.ino);
    if (fs.superblock.s_journal_inum === 8) inos.add(8);
    const list = [...inos].sort((a, b) => a - b);
    const outs = debugfsBatch(image, list.flatMap((i) => [`stat <${i}>`, `blocks <${i}>`]));
    const theirs = new Map<number, number[]>();
    const xattrBlocks = new Map<number, number[]>();
    list.forEach((ino, k) => {
      const st = parseStat(outs[2 * k]!);
      // `blocks` prints i_block as block numbers where it holds none: fast symlinks, inline data, devices.
      const mapped = st.fastLink === undefined && !(st.flags & 0x10000000) && st.device === undefined && st.type !== 'FIFO' && st.type !== 'socket';
      theirs.set(ino, mapped ? parseBlocks(outs[2 * k + 1]!) : []);
      if (st.fileAcl !== 0) xattrBlocks.set(st.fileAcl, [...(xattrBlocks.get(st.fileAcl) ?? []), ino]);
    });
    const ours = new Map<number, number[]>();
    const INODE_KINDS = new Set(['data', 'directory', 'journal', 'extent node', 'indirect block']);
    const runStarts: Array<[number, number]> = [];
    for (const r of own.runs()) {
      if (r.kind === 'xattr block') {
        // A shared xattr block is recorded once, under one of the inodes that name it.
        expect(xattrBlocks.get(r.start), `xattr block ${r.start}`).toContain(r.ino);
        expect(r.length).toBe(1);
        xattrBlocks.delete(r.start);
        continue;
      }
      if (!INODE_KINDS.has(r.kind) || r.ino === undefined || r.ino === 7) continue;
      const list2 = ours.get(r.ino) ?? [];
      for (let k = 0; k < r.length; k++) list2.push(r.start + k);
      ours.set(r.ino, list2);
      runStarts.push([r.start, r.ino]);
    }
    expect([...xattrBlocks.keys()], 'xattr blocks without an owner').toEqual([]);
    let owned = 0;
    for (const ino of list) {
      const a = (ours.get(ino) ?? []).sort((x, y) => x - y);
      expect(a, `blocks owned by <${ino}>`).toEqual([...(theirs.get(ino) ?? [])].sort((x, y) => x - y));
      owned += a.length;
      ours.delete(ino);
    }
    // No other inode owns anything (every in-use inode is in the tree, or the journal).
    expect([...ours.keys()], 'inodes owning blocks outside the tree').toEqual([]);
    expect(owned).toBeGreaterThan(v.tree === 'small' ? 10 : 1000);
    // icheck names the same owner for the first block of every owner run.
    const icheck = debugfsOwners(image, runStarts.map(([b]) => b));
    for (const [b, ino] of runStarts) expect(icheck.get(b), `icheck ${b}`).toBe(ino);
    // A table scoped to some blocks (what a diff asks about: run starts, the middle of runs,
    // free blocks) gives the owners icheck gives, with the full table's kind and lblk there;
    // about any other block it refuses to answer.
    const sample: number[] = [];
    for (const [b] of runStarts.filter((_, k) => k % 3 === 0)) sample.push(b);
    for (const r of [...own.runs()].filter((_, k) => k % 5 === 0)) sample.push(r.start + Math.floor(r.length / 2));
    for (const [s] of own.freeRuns.slice(0, 3)) sample.push(s);
    const scoped = await fs.blockOwnership(new BlockRuns(sample.map((b) => [b, 1] as const)));
    for (const b of sample) {
      const o = scoped.ownerOf(b);
      expect(o, `scoped owner of ${b}`).toEqual(own.ownerOf(b));
      if (o !== 'free' && o?.ino !== undefined && o.kind !== 'xattr block') expect(icheck.get(b) ?? debugfsOwners(image, [b]).get(b), `scoped owner of ${b} per icheck`).toBe(o.ino);
    }
    const outside = [...own.runs()].map((r) => r.start).find((b) => !sample.includes(b));
    if (outside !== undefined) expect(() => scoped.ownerOf(outside)).toThrow(/INTERNAL|only the blocks/);
    // Logical blocks: each extent's first and last block map back to it.
    for (const ino of list) {
      for await (const e of fs.extentsOf(await fs.readInode(ino))) {
        for (const k of [0, e.len - 1]) {
          const o = own.ownerOf(e.pblk + k);
          expect(o !== 'free' && o !== undefined && o.lblk, `lblk of block ${e.pblk + k} of <${ino}>`).toBe(e.lblk + k);
        }
      }
    }
  });

  if (v.extras) {
    test('ACLs decode to the text and xattr form debugfs shows; writeRefusal is undefined on a clean fs', async () => {
      const f1 = (await fs.lookup('/small/f1'))!;
      const x = (await fs.xattrs(f1)).find((a) => text(a.name) === 'system.posix_acl_access')!;
      const acl = decodeAcl(x.value, { file: image, verifyChecksums: 'error', diagnostics: [] }, 'acl', 0);
      expect(formatAcl(acl)).toBe('user::rw-,user:1000:r--,group::r--,group:50:r-x,mask::rw-,other::r--');
      const shown = sh('debugfs', ['-R', 'ea_get -x /small/f1 system.posix_acl_access', image]);
      expect(shown).toContain(hex(encodePosixAclXattr(acl)).trim());
      expect(await fs.writeRefusal()).toBeUndefined();
      expect(fs.diagnostics).toEqual([]);
    });
  }
});
}
