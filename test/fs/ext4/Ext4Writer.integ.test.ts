/**
 * The ext4 writer against the oracles, on images made by mkfs.ext4 -d from a tree of real
 * files, across block sizes, checksum kinds, descriptor sizes, inline data, small inodes,
 * meta_bg/sparse_super2, flex_bg off and htree directories: every object kind created,
 * files replaced and deleted, directory trees removed; the result passes the strict
 * e2fsck oracle, `debugfs stat`/`dump` show exactly what was asked, and the input image
 * is byte-for-byte unchanged.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { buildSourceTree, makeExt4Image, seeded } from '../../../fixtures/ext4/ext4Fixtures.js';
import type { Ext4Writer, NodeContent } from '../../../src/fs/ext4/Ext4Writer.js';
import { BlockRuns } from '../../../src/fs/BlockRuns.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseStat } from './debugfsOracle.js';
import { debugfsCat, debugfsIcheck, debugfsNames, writeImage, WRITER_NOW } from './writerHarness.js';

const tmp = useTempDir('imgdedup-writer-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

function bytes(n: number, seed: number): Uint8Array {
  const r = seeded(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function fileContent(data: Uint8Array, chunk = 65536): NodeContent {
  return {
    kind: 'file',
    size: data.length,
    async *data() {
      for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
    },
  };
}

const VARIANTS: Array<{ name: string; args: string[]; sizeMiB?: number; index?: boolean }> = [
  { name: '4k metadata_csum 64bit', args: ['-b', '4096', '-N', '8192'] },
  { name: '1k', args: ['-b', '1024', '-N', '8192'] },
  { name: '2k ^64bit ^metadata_csum uninit_bg', args: ['-b', '2048', '-O', '^64bit,^metadata_csum,uninit_bg', '-N', '8192'] },
  { name: 'inline_data', args: ['-O', 'inline_data', '-N', '8192'] },
  { name: '-I 128', args: ['-I', '128', '-N', '8192'] },
  { name: 'meta_bg sparse_super2 1k', args: ['-b', '1024', '-O', 'meta_bg,^resize_inode,sparse_super2', '-N', '8192'] },
  { name: '^flex_bg', args: ['-O', '^flex_bg', '-N', '8192'] },
  { name: '1k htree', args: ['-b', '1024', '-N', '16384'], sizeMiB: 96, index: true },
];

let tree = '';
beforeAll(async () => {
  tree = await buildSourceTree(join(tmp(), 'src'), { bigDirEntries: 3000, docBytes: 2 << 20 });
}, 120_000);

const big = bytes(300_000, 1);
const sparse = new Uint8Array(1 << 20);
sparse.set(bytes(5000, 2), (1 << 20) - 5000);
const long = 'x'.repeat(100);

/** Everything the writer can create, replace and delete, in one go. */
async function scenario(w: Ext4Writer): Promise<void> {
  const a = (mode: number, uid = 0, gid = 0) => ({ mode, uid, gid, mtime: { sec: 1_600_000_123, nsec: 456_000_000 } });
  await w.put(enc('/new'), { kind: 'dir' }, a(0o750, 1000, 1000));
  await w.put(enc('/new/file.bin'), fileContent(big), a(0o644, 1000, 100));
  await w.put(enc('/new/empty'), fileContent(new Uint8Array(0)), a(0o600));
  await w.put(enc('/new/sparse'), fileContent(sparse), a(0o644));
  await w.put(enc('/new/fast'), { kind: 'symlink', target: enc('file.bin') }, a(0o777));
  await w.put(enc('/new/slow'), { kind: 'symlink', target: enc(long) }, a(0o777));
  await w.put(enc('/new/fifo'), { kind: 'fifo' }, a(0o644));
  await w.put(enc('/new/sock'), { kind: 'socket' }, a(0o755));
  await w.put(enc('/new/chr'), { kind: 'chardev', major: 1, minor: 3 }, a(0o666));
  await w.put(enc('/new/blk'), { kind: 'blockdev', major: 300, minor: 70000 }, a(0o660));
  await w.put(enc('/new/sub'), { kind: 'dir' }, a(0o755));
  await w.put(enc('/new/sub/deeper'), { kind: 'dir' }, a(0o700));
  await w.hardlink(enc('/new/sub/hard'), enc('/new/file.bin'));
  // Replace: a file by a file, a file by a directory, a symlink by a file; a directory keeps its children.
  await w.put(enc('/py/email/__init__.py'), fileContent(enc('replaced\n')), a(0o640, 5, 6));
  await w.put(enc('/small/f61'), { kind: 'dir' }, a(0o755));
  await w.put(enc('/links/l10'), fileContent(enc('was a link\n')), a(0o644));
  await w.put(enc('/py'), { kind: 'dir' }, a(0o711, 7, 7));
  // Delete: a file, a hard link (the others stay), a whole tree.
  expect(await w.remove(enc('/small/f150'))).toBe(true);
  expect(await w.remove(enc('/hard/link1'))).toBe(true);
  expect(await w.remove(enc('/sparse'))).toBe(true);
  expect(await w.remove(enc('/does/not/exist'))).toBe(false);
  // The big directory grows (an htree where indexed) and loses entries.
  for (let i = 0; i < 400; i++) await w.put(enc(`/bigdir/added-${i}-${'y'.repeat(i % 50)}`), fileContent(new Uint8Array(0)), a(0o644));
  for (let i = 0; i < 3000; i += 7) await w.remove(enc(`/bigdir/entry-${String(i).padStart(6, '0')}-${(i * 2654435761) % 1000003}`));
}

describe.each(VARIANTS)('Ext4Writer on ext4 $name', (v) => {
  let image = '';
  let out = '';
  let inputHash = '';
  beforeAll(async () => {
    image = join(tmp(), `${v.name.replace(/\W+/g, '_')}.raw`);
    out = `${image}.out`;
    makeExt4Image(image, tree, { args: v.args, sizeMiB: v.sizeMiB ?? 64 });
    if (v.index) execFileSync('e2fsck', ['-fyD', image], { stdio: 'ignore' });
    inputHash = sha(image);
    await writeImage(image, out, scenario);
  }, 180_000);

  test('the result passes the strict e2fsck oracle and the input is unchanged', () => {
    expectStrictFsckClean(out);
    expect(sha(image)).toBe(inputHash);
  });

  test('created objects have the asked type, mode, owner, times, content and link count', () => {
    const paths = ['/new', '/new/file.bin', '/new/empty', '/new/sparse', '/new/fast', '/new/slow', '/new/fifo', '/new/sock', '/new/chr', '/new/blk', '/new/sub', '/new/sub/deeper', '/new/sub/hard'];
    const st = new Map(paths.map((p, i) => [p, parseStat(debugfsBatch(out, paths.map((x) => `stat "${x}"`))[i]!)]));
    expect(st.get('/new')).toMatchObject({ type: 'directory', mode: 0o750, uid: 1000, gid: 1000, links: 3 });
    expect(st.get('/new/file.bin')).toMatchObject({ type: 'regular', mode: 0o644, uid: 1000, gid: 100, size: big.length, links: 2 });
    // Nanoseconds need the extra inode fields (inodes over 128 bytes).
    expect(st.get('/new/file.bin')!.mtime).toEqual({ sec: 1_600_000_123, nsec: v.args.includes('128') ? 0 : 456_000_000 });
    expect(st.get('/new/file.bin')!.ctime.sec).toBe(WRITER_NOW.sec);
    expect(st.get('/new/sub/hard')!.ino).toBe(st.get('/new/file.bin')!.ino);
    expect(st.get('/new/empty')).toMatchObject({ size: 0, blockcount: 0 });
    expect(st.get('/new/fast')).toMatchObject({ type: 'symlink', size: 8, fastLink: 'file.bin' });
    expect(st.get('/new/slow')).toMatchObject({ type: 'symlink', size: 100 });
    expect(st.get('/new/fifo')!.type).toBe('FIFO');
    expect(st.get('/new/sock')!.type).toBe('socket');
    expect(st.get('/new/chr')).toMatchObject({ type: 'character', device: { major: 1, minor: 3 } });
    expect(st.get('/new/blk')).toMatchObject({ type: 'block', device: { major: 300, minor: 70000 } });
    expect(st.get('/new/sub')!.links).toBe(3);
    expect(Buffer.from(debugfsCat(out, '/new/file.bin', join(tmp(), 'cat')))).toEqual(Buffer.from(big));
    expect(Buffer.from(debugfsCat(out, '/new/sparse', join(tmp(), 'cat')))).toEqual(Buffer.from(sparse));
    // The sparse file's leading megabyte of zeros is a hole: only the tail's blocks are held.
    expect(st.get('/new/sparse')!.blockcount * 512).toBeLessThan(16384);
    const [slowTarget] = debugfsBatch(out, ['stat /new/slow']);
    expect(slowTarget).not.toContain('Fast link dest');
  });

  test('replacements and deletions are exact', () => {
    expect(debugfsCat(out, '/py/email/__init__.py', join(tmp(), 'cat')).toString()).toBe('replaced\n');
    const [f61, l10, py] = debugfsBatch(out, ['stat /small/f61', 'stat /links/l10', 'stat /py']).map(parseStat);
    expect(f61!.type).toBe('directory');
    expect(l10!.type).toBe('regular');
    expect(py).toMatchObject({ mode: 0o711, uid: 7, gid: 7 });
    expect(debugfsNames(out, '/py')).toEqual(debugfsNames(image, '/py'));
    expect(debugfsNames(out, '/small')).not.toContain('f150');
    expect(debugfsNames(out, '/')).not.toContain('sparse');
    expect(debugfsNames(out, '/hard').sort()).toEqual(['orig', 'sub']);
    expect(parseStat(debugfsBatch(out, ['stat /hard/orig'])[0]!).links).toBe(2);
    const names = new Set(debugfsNames(out, '/bigdir'));
    expect(names.size).toBe(3000 - Math.ceil(3000 / 7) + 400);
    for (let i = 0; i < 400; i++) expect(names.has(`added-${i}-${'y'.repeat(i % 50)}`)).toBe(true);
  });
});

describe('constrained allocation', () => {
  test('never hands out an avoided block, and a file over every other block gets a deep extent tree', async () => {
    const image = join(tmp(), 'constrained.raw');
    const out = `${image}.out`;
    makeExt4Image(image, undefined, { args: ['-b', '1024', '-N', '2048'], sizeMiB: 32 });
    // Avoid every even block: every run is one block long, so 2,000 blocks need 2,000 extents.
    const avoid = new BlockRuns(Array.from({ length: 16384 }, (_, i) => [i * 2, 1] as const));
    const data = bytes(2000 * 1024, 3);
    const report = await writeImage(image, out, (w) => w.put(enc('/frag'), fileContent(data), { mode: 0o644, uid: 0, gid: 0 }).then(() => undefined), {
      constraints: { avoidBlocks: avoid },
    });
    expectStrictFsckClean(out);
    expect(Buffer.from(debugfsCat(out, '/frag', join(tmp(), 'cat')))).toEqual(Buffer.from(data));
    const allocated = report.blocksAllocated.toArray().flatMap(([s, c]) => Array.from({ length: c }, (_, i) => s + i));
    expect(allocated.length).toBeGreaterThanOrEqual(2000);
    expect(allocated.filter((b) => avoid.has(b))).toEqual([]);
    const owners = debugfsIcheck(out, allocated.slice(0, 50));
    for (const b of allocated.slice(0, 50)) expect(owners.get(b)).toBeDefined();
    const [ex] = debugfsBatch(out, ['ex /frag']);
    expect(ex).toMatch(/Level Entries/);
    expect(ex!.split('\n').some((l) => /^\s*1\/\s*1/.test(l) || /^\s*1\/\s*2/.test(l))).toBe(true);
  }, 120_000);

  test('running short of unavoided blocks is NO_SPACE, not a silent fallback', async () => {
    const image = join(tmp(), 'short.raw');
    makeExt4Image(image, undefined, { args: ['-b', '4096', '-N', '256'], sizeMiB: 16 });
    const avoid = new BlockRuns([[0, 4096]]);
    await expect(
      writeImage(image, `${image}.out`, (w) => w.put(enc('/f'), fileContent(bytes(8192, 4)), { mode: 0o644, uid: 0, gid: 0 }).then(() => undefined), { constraints: { avoidBlocks: avoid } }),
    ).rejects.toMatchObject({ code: 'NO_SPACE' });
  });
});
