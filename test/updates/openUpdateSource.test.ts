/**
 * Telling the kind of update from the argument (src/updates/openUpdateSource.ts) and
 * counting what it holds (summarizeUpdate.ts): a file is one tar layer whatever its name,
 * a directory of only tar files is layers in byte order of their names, one mixing
 * layers with other entries is refused, any other directory is a tree; a missing path is IO, a device or fifo BAD_UPDATE. Counts are
 * checked against `tar -tvf` (GNU tar's own reading) of the same layers.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../helpers/tmp.js';
import { sh } from '../helpers/run.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { openUpdateSource } from '../../src/updates/openUpdateSource.js';
import { roughBlocksNeeded, summarizeUpdate } from '../../src/updates/summarizeUpdate.js';
import type { UpdateSource } from '../../src/updates/UpdateEntry.js';

const tmp = useTempDir('imgdedup-source-');

/** A small tree: 2 dirs, 3 files (10 + 5000 + 0 bytes), a symlink, a hard link, a whiteout (8 entries; 9 in a tar, with "./"). */
function makeTree(dir: string): void {
  mkdirSync(join(dir, 'etc', 'app'), { recursive: true });
  writeFileSync(join(dir, 'etc', 'app', 'one'), '0123456789');
  writeFileSync(join(dir, 'etc', 'two'), Buffer.alloc(5000, 7));
  writeFileSync(join(dir, 'etc', 'empty'), '');
  symlinkSync('two', join(dir, 'etc', 'link'));
  sh('ln', [join(dir, 'etc', 'two'), join(dir, 'etc', 'two-again')]);
  writeFileSync(join(dir, 'etc', '.wh.old'), '');
}

async function layerNames(src: UpdateSource): Promise<string[]> {
  const out: string[] = [];
  for await (const l of src.layers()) out.push(l.name);
  return out;
}

describe('openUpdateSource tells the kind of update from the argument', () => {
  it('a directory that is not only tar files is a tree', async () => {
    const d = join(tmp(), 'tree');
    mkdirSync(d);
    makeTree(d);
    const src = await openUpdateSource(d);
    expect(src.kind).toBe('tree');
    expect(src.describe).toBe(`directory tree ${d}`);
    expect(await layerNames(src)).toEqual([d]);
    const s = await summarizeUpdate(src, { blockSize: 1024 });
    expect(s).toEqual({ layers: 1, entries: 8, files: 3, dirs: 2, symlinks: 1, hardlinks: 1, devices: 0, specials: 0, whiteouts: 1, opaques: 0, fileBytes: 5010, xattrs: 0, roughBlocks: 1 + 5 + 0 + 2 });
  });

  it('a file is one tar layer, whatever its name: compression is told by magic bytes', async () => {
    const d = join(tmp(), 'for-tar');
    mkdirSync(d);
    makeTree(d);
    const f = join(tmp(), 'layer.bin');
    sh('tar', ['--format=pax', '-czf', f, '-C', d, '.']);
    const src = await openUpdateSource(f);
    expect(src.kind).toBe('tar-layers');
    expect(src.describe).toBe(`tar layer ${f} (gzip)`);
    const s = await summarizeUpdate(src);
    // GNU tar's own count of the same archive: its listing has one line per member.
    const listing = sh('tar', ['-tvzf', f]).trim().split('\n');
    expect(s.entries).toBe(listing.length);
    expect(s.dirs).toBe(listing.filter((l) => l.startsWith('d')).length);
    expect(s.hardlinks).toBe(listing.filter((l) => l.startsWith('h')).length);
    expect(s.symlinks).toBe(listing.filter((l) => l.startsWith('l')).length);
    expect(s.whiteouts).toBe(listing.filter((l) => / \.\/etc\/\.wh\.old$/.test(l)).length);
    expect(s.files).toBe(listing.filter((l) => l.startsWith('-')).length - s.whiteouts);
    expect(s.fileBytes).toBe(listing.filter((l) => l.startsWith('-')).reduce((sum, l) => sum + Number(l.split(/\s+/)[2]), 0));
    expect(s).toMatchObject({ layers: 1, files: 3, dirs: 3, fileBytes: 5010, whiteouts: 1, hardlinks: 1 });
  });

  it('a directory of only .tar/.tar.gz/.tgz/.tar.zst files is layers in byte order of their names', async () => {
    const d = join(tmp(), 'layers');
    mkdirSync(d);
    const t = join(tmp(), 'for-layers');
    mkdirSync(t);
    makeTree(t);
    for (const [name, opt] of [['b.tar.zst', ['-I', 'zstd']], ['B.tgz', ['-z']], ['a.tar', []], ['c.tar.gz', ['-z']]] as const) sh('tar', [...opt, '-cf', join(d, name), '-C', t, '.']);
    const src = await openUpdateSource(d);
    expect(src.kind).toBe('tar-layers');
    expect(src.describe).toBe(`4 tar layers in ${d}`);
    expect(await layerNames(src)).toEqual(['B.tgz', 'a.tar', 'b.tar.zst', 'c.tar.gz'].map((n) => join(d, n)));
    expect((await summarizeUpdate(src)).entries).toBe(4 * 9);
    // Layers beside another entry are ambiguous (a stray README, or a tree holding a layer file): refused, never guessed.
    writeFileSync(join(d, 'README'), 'x');
    await expectImgError(() => openUpdateSource(d), 'BAD_UPDATE', { file: d, detail: expect.stringContaining('other entries (README)') });
  });

  it('a missing path is IO, a fifo BAD_UPDATE, an empty or xz file BAD_UPDATE, a bad layer in a directory fails at open', async () => {
    await expectImgError(() => openUpdateSource(join(tmp(), 'nope')), 'IO', { file: join(tmp(), 'nope'), detail: expect.stringContaining('no such file') });
    const fifo = join(tmp(), 'fifo');
    sh('mkfifo', [fifo]);
    await expectImgError(() => openUpdateSource(fifo), 'BAD_UPDATE', { file: fifo });
    const empty = join(tmp(), 'empty.tar');
    writeFileSync(empty, '');
    await expectImgError(() => openUpdateSource(empty), 'BAD_UPDATE', { file: empty, offset: 0 });
    const d = join(tmp(), 'bad-layers');
    mkdirSync(d);
    writeFileSync(join(d, '1.tar'), Buffer.alloc(1024));
    writeFileSync(join(d, '2.tar.gz'), Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]));
    await expectImgError(() => openUpdateSource(d), 'BAD_UPDATE', { file: join(d, '2.tar.gz') });
  });

  it('an empty directory is an empty tree; a tar of zero blocks is an empty layer', async () => {
    const d = join(tmp(), 'nothing');
    mkdirSync(d);
    expect((await summarizeUpdate(await openUpdateSource(d))).entries).toBe(0);
    const f = join(tmp(), 'zeros.tar');
    writeFileSync(f, Buffer.alloc(10240));
    expect(await summarizeUpdate(await openUpdateSource(f))).toMatchObject({ layers: 1, entries: 0 });
  });
});

describe('roughBlocksNeeded', () => {
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: [] };
  const path = Uint8Array.of(0x2f, 0x61);
  it.each([
    [0, 0],
    [1, 1],
    [4096, 1],
    [4097, 2],
  ])('a file of %i bytes needs %i 4 KiB blocks', (size, blocks) => {
    expect(roughBlocksNeeded({ kind: 'file', path, meta, size, open: async function* () {} }, 4096)).toBe(blocks);
  });
  it('a directory one block, a symlink over 59 bytes one, a fast symlink and a whiteout none', () => {
    expect(roughBlocksNeeded({ kind: 'dir', path, meta }, 4096)).toBe(1);
    expect(roughBlocksNeeded({ kind: 'symlink', path, meta, target: new Uint8Array(60) }, 4096)).toBe(1);
    expect(roughBlocksNeeded({ kind: 'symlink', path, meta, target: new Uint8Array(59) }, 4096)).toBe(0);
    expect(roughBlocksNeeded({ kind: 'whiteout', path }, 4096)).toBe(0);
  });
});
