/**
 * The writer's two primitives for the rebase: `relocate` moves every kind of block an
 * inode owns (file data, extent-tree nodes, directory blocks, xattr blocks) out of a
 * range and re-points its owner; `point` gives an inode a map over blocks that already
 * hold its content; `put(..., { at })` creates a file at a chosen inode number. Checked
 * with debugfs (content, `icheck` owners, `ex`, `stat`, `ea_list`) and the strict oracle.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { buildSourceTree, debugfsWrite, makeExt4Image, seeded } from '../../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseDumpExtents, parseLsP, parseStat } from './debugfsOracle.js';
import { debugfsCat, debugfsIcheck, writeImage } from './writerHarness.js';

const tmp = useTempDir('imgdedup-relocate-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
let image = '';

beforeAll(async () => {
  const tree = await buildSourceTree(join(tmp(), 'src'), { bigDirEntries: 600, docBytes: 256 << 10 });
  for (const [bs, name] of [[1024, '1k'], [4096, '4k']] as const) {
    const img = join(tmp(), `${name}.raw`);
    makeExt4Image(img, tree, { args: ['-b', String(bs), '-N', '8192'], sizeMiB: 96 });
    // An xattr too big for the inode body: it lives in an xattr block.
    execFileSync('sh', ['-c', `head -c 700 /dev/zero | tr '\\0' v > ${tmp()}/xv`]);
    debugfsWrite(img, [`ea_set -f ${tmp()}/xv /hard/orig user.big`]);
    if (bs === 1024) image = img;
  }
}, 120_000);

const stat = (img: string, p: string) => parseStat(debugfsBatch(img, [`stat "${p}"`])[0]!);

describe.each(['1k', '4k'])('relocate on %s blocks', (name) => {
  const img = (): string => join(tmp(), `${name}.raw`);

  test.each([
    { kind: 'file data', path: '/sparse/fragmented', pick: (i: string, p: string) => parseDumpExtents(debugfsBatch(i, [`ex "${p}"`])[0]!).leaves[3]!.pblk },
    { kind: 'extent-tree node', path: '/sparse/fragmented', pick: (i: string, p: string) => parseDumpExtents(debugfsBatch(i, [`ex "${p}"`])[0]!).nodes.at(-1)! },
    { kind: 'directory block', path: '/bigdir', pick: (i: string, p: string) => Number(debugfsBatch(i, [`blocks "${p}"`])[0]!.trim().split(/\s+/)[1]) },
    { kind: 'xattr block', path: '/hard/orig', pick: (i: string, p: string) => stat(i, p).fileAcl },
  ])('$kind: moved, owner re-pointed, content and the oracle intact', async ({ kind, path, pick }) => {
    const src = img();
    const out = `${src}.${kind.replace(/\W/g, '_')}.out`;
    const block = pick(src, path);
    expect(block).toBeGreaterThan(0);
    const before = stat(src, path);
    const tmpFile = join(tmp(), `cat-${name}`);
    const content = before.type === 'directory' ? '' : debugfsCat(src, path, tmpFile).toString('base64');
    const listing = before.type === 'directory' ? parseLsP(debugfsBatch(src, [`ls -p "${path}"`])[0]!).map((e) => `${e.ino}:${e.name}`).sort() : [];
    let moves: Array<{ from: number; to: number }> = [];
    await writeImage(src, out, async (w) => {
      moves = await w.relocate(block, 1);
    });
    expectStrictFsckClean(out);
    expect(moves.map((m) => m.from)).toContain(block);
    const to = moves.find((m) => m.from === block)!.to;
    expect(to).not.toBe(block);
    const owners = debugfsIcheck(out, [block, to]);
    expect(owners.get(block)).toBeUndefined();
    expect(owners.get(to)).toBe(before.ino);
    const after = stat(out, path);
    expect(after.xattrs).toEqual(before.xattrs);
    expect(after.size).toBe(before.size);
    if (before.type === 'directory') expect(parseLsP(debugfsBatch(out, [`ls -p "${path}"`])[0]!).map((e) => `${e.ino}:${e.name}`).sort()).toEqual(listing);
    else expect(debugfsCat(out, path, tmpFile).toString('base64')).toBe(content);
  }, 60_000);

  test('group metadata cannot be relocated (WRITE_REFUSED)', async () => {
    await expect(writeImage(img(), `${img()}.meta.out`, async (w) => void (await w.relocate(w.fs.groupDescriptor(0).bg_inode_table, 1)))).rejects.toMatchObject({ code: 'WRITE_REFUSED' });
  });
});

describe('point and create-at', () => {
  test('point gives an inode blocks that already hold its content; its old blocks are freed', async () => {
    const out = `${image}.point.out`;
    const data = new Uint8Array(5 * 1024);
    const r = seeded(9);
    for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
    const target = '/small/f4097';
    const oldBlocks = debugfsBatch(image, [`blocks ${target}`])[0]!.trim().split(/\s+/).map(Number);
    let placed: number[] = [];
    await writeImage(image, out, async (w, dev) => {
      // Find 5 free blocks, put the content there as a client's own data would be, then point the file at them.
      const ino = (await w.lookup(enc(target)))!;
      const free: number[] = [];
      for (let b = 20000; free.length < 5; b++) if (!(await w.fs.layout.blockInUse(b))) free.push(b);
      for (let i = 0; i < 5; i++) await dev.write(free[i]! * 1024, data.subarray(i * 1024, (i + 1) * 1024));
      placed = free;
      await w.point(ino, free.map((p, i) => ({ lblk: i, pblk: p, len: 1, unwritten: false })), data.length);
    });
    expectStrictFsckClean(out);
    expect(Buffer.from(debugfsCat(out, target, join(tmp(), 'pt')))).toEqual(Buffer.from(data));
    const owners = debugfsIcheck(out, [...placed, ...oldBlocks]);
    const ino = stat(out, target).ino;
    for (const b of placed) expect(owners.get(b)).toBe(ino);
    for (const b of oldBlocks) expect(owners.get(b)).toBeUndefined();
  });

  test('a file is created at the inode number asked for', async () => {
    const out = `${image}.at.out`;
    await writeImage(image, out, async (w) => {
      await w.put(enc('/at-7777'), { kind: 'file', size: 3, async *data() { yield enc('abc'); } }, { mode: 0o644, uid: 0, gid: 0 }, { at: 7777 });
    });
    expectStrictFsckClean(out);
    expect(stat(out, '/at-7777').ino).toBe(7777);
  });
});
