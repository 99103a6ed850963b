/**
 * Files edited in place (data overwritten, inode records untouched), as a qcow2 overlay
 * written with qemu-io: the diff finds them only through their changed data blocks. A few
 * such blocks are read and explained one by one; many (above the differ's threshold of
 * 256) go to the block ownership scan unread. Either way every edited file, and only
 * those, is reported modified ('content'), with the changed block debugfs names for it.
 * A leaked block (marked in use by debugfs setb, owned by no inode: e2fsck's "block
 * bitmap differences") that changed is reported unattributed; one that did not change is
 * not, even when the caller's changed blocks include it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync } from 'node:fs';
import { openChain, type ImageChain } from '../../src/diskimage/openChain.js';
import { Ext4Fs } from '../../src/fs/ext4/Ext4Fs.js';
import { BlockRuns } from '../../src/fs/BlockRuns.js';
import { diffExt4 } from '../../src/blockdiff/diffExt4.js';
import { diffDisks, type FsDiff } from '../../src/blockdiff/diffDisk.js';
import type { DiffSide } from '../../src/blockdiff/changedRanges.js';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsPathBlocks } from './blockOracle.js';

const tmp = useTempDir('imgdedup-inplace-');
const DIRS = 8;
const PER_DIR = 45;
const paths: string[] = [];
let base = '';
let blocks = new Map<string, number[]>();

function side(name: string, chain: ImageChain): DiffSide {
  return { name, device: chain.device, layers: chain.layers.map((l) => ({ id: l.path, device: l })) };
}

/** An overlay on `on` where the first 512 bytes of each of `edited` (and of block `alsoBlock`) were overwritten. */
function overlayEditing(name: string, edited: readonly string[], on = base, alsoBlock?: number): string {
  const overlay = join(tmp(), name);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', on, '-F', 'raw', overlay]);
  const writes = edited.flatMap((p, k) => ['-c', `write -P ${1 + (k % 100)} ${blocks.get(p)![0]! * 4096} 512`]);
  if (alsoBlock !== undefined) writes.push('-c', `write -P 0xab ${alsoBlock * 4096} 512`);
  sh('qemu-io', ['-f', 'qcow2', ...writes, overlay]);
  return overlay;
}

async function diffFs(a: string, b: string): Promise<FsDiff> {
  const ca = await openChain(a);
  const cb = await openChain(b);
  try {
    const d = await diffDisks(side(a, ca), side(b, cb));
    expect(d.filesystems).toHaveLength(1);
    return d.filesystems[0]!;
  } finally {
    await ca.close();
    await cb.close();
  }
}

beforeAll(() => {
  const tree = join(tmp(), 'tree');
  for (let d = 0; d < DIRS; d++) {
    mkdirSync(join(tree, `d${d}`), { recursive: true });
    for (let f = 0; f < PER_DIR; f++) {
      const p = `/d${d}/f${f}`;
      paths.push(p);
      // 0x78 everywhere: any other pattern written over it changes the file.
      writeFileSync(join(tree, p), Buffer.alloc(1000 + f, 0x78));
    }
  }
  base = join(tmp(), 'base.raw');
  makeExt4Image(base, tree, { sizeMiB: 32, args: ['-b', '4096'] });
  blocks = debugfsPathBlocks(base, paths);
  for (const p of paths) expect(blocks.get(p)).toHaveLength(1);
});

/** Every other file from the start, then the rest in order: spread over all directories. */
const editOrder = (): string[] => [...paths.filter((_, i) => i % 2 === 0), ...paths.filter((_, i) => i % 2 === 1)];

/** A copy of the base with one free block marked in use (leaked), per debugfs; its number. */
function leakedBase(): { image: string; block: number } {
  const image = join(tmp(), 'leaked.raw');
  copyFileSync(base, image);
  const found = /Free blocks found: (\d+)/.exec(sh('debugfs', ['-R', 'ffb 1 6000', image]));
  expect(found).not.toBeNull();
  const block = Number(found![1]);
  sh('debugfs', ['-w', '-R', `setb ${block}`, image]);
  expect(sh('debugfs', ['-R', `testb ${block}`, image])).toContain('marked in use');
  return { image, block };
}

describe('files edited in place', () => {
  it.each([
    ['a few (each changed block read and explained)', 12],
    ['many (attributed by the ownership scan unread)', 300],
  ])('%s: exactly the edited files are modified, with their blocks', async (_label, count) => {
    const edited = editOrder().slice(0, count);
    const overlay = overlayEditing(`edit-${count}.qcow2`, edited);
    const fs = await diffFs(base, overlay);
    expect(fs.added).toEqual([]);
    expect(fs.removed).toEqual([]);
    expect(fs.unattributedBlocks).toEqual([]);
    const got = fs.modified.map((m) => ({ path: Buffer.from(m.path).toString(), changes: m.changes, changedBlocks: m.changedBlocks }));
    const want = [...edited].sort().map((p) => ({ path: p, changes: ['content'], changedBlocks: [[blocks.get(p)![0]!, 1]] }));
    expect(got).toEqual(want);
  });

  it.each([12, 300])('with %i edits, a leaked block that changed is unattributed', async (count) => {
    const leak = leakedBase();
    const edited = editOrder().slice(0, count);
    const fs = await diffFs(leak.image, overlayEditing(`leak-${count}.qcow2`, edited, leak.image, leak.block));
    expect(fs.unattributedBlocks).toEqual([[leak.block, 1]]);
    expect(fs.modified.map((m) => Buffer.from(m.path).toString())).toEqual([...edited].sort());
  });

  it('bytes changed past i_size in a file\'s last block leave it unmodified; bytes changed inside it make it modified', async () => {
    // Files here are 1000..1044 bytes in one 4 KiB block: bytes 2048..2559 are not content.
    const [tailOnly, inside] = [paths[3]!, paths[50]!];
    const overlay = join(tmp(), 'tail.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', overlay]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x55 ${blocks.get(tailOnly)![0]! * 4096 + 2048} 512`, '-c', `write -P 0x55 ${blocks.get(inside)![0]! * 4096 + 512} 512`, overlay]);
    const fs = await diffFs(base, overlay);
    expect(fs.modified.map((m) => ({ path: Buffer.from(m.path).toString(), changes: m.changes }))).toEqual([{ path: inside, changes: ['content'] }]);
  });

  it('an inode record changed in place (debugfs set_inode_field) is read from B, not taken from A: its file is modified', async () => {
    // B reuses inode-table chunks A has read only where no block changed. The file's
    // inode lies past the first 256 KiB chunk of the table (which both sides read early,
    // for the journal inode), so A reads its chunk first and B must not take it.
    const tree = join(tmp(), 'many');
    mkdirSync(join(tree, 'm'), { recursive: true });
    for (let i = 0; i < 1200; i++) writeFileSync(join(tree, 'm', `e${i}`), '');
    const a = join(tmp(), 'many.raw');
    makeExt4Image(a, tree, { sizeMiB: 32, args: ['-b', '4096', '-I', '256'] });
    // debugfs ls -p: /ino/mode/uid/gid/name/size/ per entry; a file whose inode is past 1024.
    const entries = sh('debugfs', ['-R', 'ls -p /m', a]).split('\n').map((l) => l.split('/')).filter((f) => f.length > 5 && f[5]!.startsWith('e'));
    const pick = entries.find((f) => Number(f[1]) > 1024);
    expect(pick).toBeDefined();
    const path = `/m/${pick![5]}`;
    const copy = join(tmp(), 'many-chmod.raw');
    copyFileSync(a, copy);
    sh('debugfs', ['-w', '-R', `set_inode_field ${path} mode 0100600`, copy]);
    expect(sh('debugfs', ['-R', `stat ${path}`, copy])).toMatch(/Mode:\s+0600/);
    const overlay = join(tmp(), 'many-chmod.qcow2');
    sh('qemu-img', ['convert', '-q', '-O', 'qcow2', '-B', a, '-F', 'raw', copy, overlay]);
    const fs = await diffFs(a, overlay);
    expect(fs.modified.map((m) => ({ path: Buffer.from(m.path).toString(), changes: m.changes }))).toEqual([{ path, changes: ['mode'] }]);
  });

  it('a directory block rewritten with its inode record untouched (debugfs unlink) is read on both sides: the entry it lost is reported removed', async () => {
    // The differ shares a directory's listing between the sides only when neither its
    // record nor any of its blocks changed; here the record is identical, the block is not.
    const copy = join(tmp(), 'unlinked.raw');
    copyFileSync(base, copy);
    const before = sh('debugfs', ['-R', 'stat /d3', copy]);
    sh('debugfs', ['-w', '-R', 'unlink /d3/f7', copy]);
    expect(sh('debugfs', ['-R', 'stat /d3', copy])).toBe(before);
    expect(sh('debugfs', ['-R', 'ls /d3', copy])).not.toMatch(/\bf7\b/);
    const overlay = join(tmp(), 'unlinked.qcow2');
    sh('qemu-img', ['convert', '-q', '-O', 'qcow2', '-B', base, '-F', 'raw', copy, overlay]);
    const fs = await diffFs(base, overlay);
    expect(fs.removed.map((e) => Buffer.from(e.path).toString())).toEqual(['/d3/f7']);
    expect(fs.added).toEqual([]);
  });

  it('a leaked block among the changed blocks whose bytes did not change is not unattributed', async () => {
    const leak = leakedBase();
    const edited = editOrder().slice(0, 300);
    const overlay = overlayEditing('leak-same.qcow2', edited, leak.image);
    const ca = await openChain(leak.image);
    const cb = await openChain(overlay);
    try {
      const fsA = await Ext4Fs.open(ca.device, { file: leak.image });
      const fsB = await Ext4Fs.open(cb.device, { file: overlay });
      // A superset of what changed (allowed): the edited files' blocks and the leaked block.
      const changed = new BlockRuns([...edited.map((p): [number, number] => [blocks.get(p)![0]!, 1]), [leak.block, 1]]);
      const d = await diffExt4(fsA, fsB, changed);
      expect(d.unattributedBlocks).toEqual([]);
      expect(d.modified.map((m) => Buffer.from(m.path).toString())).toEqual([...edited].sort());
    } finally {
      await ca.close();
      await cb.close();
    }
  });
});
