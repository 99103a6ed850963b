/**
 * The diff reads bitmaps through the one layout model, so their checksums are verified
 * there too: a B whose bitmap was damaged (one byte flipped with dd, metadata_csum) gives
 * BAD_CHECKSUM naming the bitmap and its byte offset, not a diff computed from a bitmap
 * that cannot be trusted. The damaged bitmap is one the diff must consult: the inode bitmap
 * when an inode record changed (is the inode live?), the block bitmap when a file's data
 * changed in place (is the block in use?).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { parseBlocks } from '../fs/ext4/debugfsOracle.js';
import { diffPaths } from './diffPaths.js';

const tmp = useTempDir('imgdedup-bitmapcsum-');
let base = '';

beforeAll(() => {
  const tree = join(tmp(), 'tree');
  mkdirSync(join(tree, 'd'), { recursive: true });
  for (let i = 0; i < 20; i++) writeFileSync(join(tree, 'd', `f${i}`), Buffer.alloc(3000 + i * 100, i + 1));
  base = join(tmp(), 'a.img');
  makeExt4Image(base, tree, { args: ['-b', '1024', '-O', 'metadata_csum'], sizeMiB: 8 });
});

/** Block `kind` bitmap of group 0, per dumpe2fs. */
function bitmapBlock(image: string, kind: 'Block' | 'Inode'): number {
  return Number(new RegExp(`${kind} bitmap at (\\d+)`).exec(sh('dumpe2fs', [image]))![1]);
}

/** A qcow2 overlay on the raw image `on` (default: the base), holding what differs in the raw image `raw`. */
function overlayOf(raw: string, on = base): string {
  const out = `${raw}.on-${on.replace(/\W+/g, '_')}.qcow2`;
  sh('qemu-img', ['convert', '-O', 'qcow2', '-B', on, '-F', 'raw', raw, out]);
  return out;
}

/** Flips one byte of `image` at byte `at` with dd. */
function flipByte(image: string, at: number): void {
  const old = readFileSync(image)[at]!;
  const r = spawnSync('dd', [`of=${image}`, 'bs=1', `seek=${at}`, 'count=1', 'conv=notrunc', 'status=none'], { input: Buffer.from([old ^ 0x01]) });
  expect(r.status).toBe(0);
}

/** The first block of the last free run dumpe2fs lists. */
function freeBlock(image: string): number {
  const runs = [...sh('dumpe2fs', [image]).matchAll(/^ {2}Free blocks: (\d+)-\d+/gm)];
  return Number(runs[runs.length - 1]![1]);
}

describe('a damaged bitmap', () => {
  test('in B, the inode bitmap: an inode record changed, the diff asks whether it is live', async () => {
    const b = join(tmp(), 'b-inode.img');
    copyFileSync(base, b);
    debugfsWrite(b, ['sif /d/f3 mode 0100600']);
    // Sanity: undamaged, the diff finds the change.
    const clean = await diffPaths(base, overlayOf(b));
    expect(clean.mode).toBe('overlay');
    expect(clean.filesystems[0]!.stats.mode).toBe('incremental');
    expect(clean.filesystems[0]!.modified.map((m) => Buffer.from(m.path).toString())).toEqual(['/d/f3']);
    const at = bitmapBlock(b, 'Inode') * 1024;
    flipByte(b, at + 100);
    const damaged = overlayOf(b);
    await expectImgError(() => diffPaths(base, damaged), 'BAD_CHECKSUM', { structure: 'ext4.inode_bitmap[0]', deviceOffset: at });
  });

  test('in B, the block bitmap: bytes written to a block free on both sides, the diff asks whether it is in use', async () => {
    const b = join(tmp(), 'b-free.img');
    copyFileSync(base, b);
    const blk = freeBlock(b);
    const bytes = readFileSync(b);
    bytes.fill(0xee, blk * 1024, blk * 1024 + 512);
    writeFileSync(b, bytes);
    const clean = await diffPaths(base, overlayOf(b));
    expect(clean.filesystems[0]!.stats.mode).toBe('incremental');
    expect(clean.filesystems[0]!.freeBlocks).toEqual([[blk, 1]]);
    expect(clean.filesystems[0]!.modified).toEqual([]);
    const at = bitmapBlock(b, 'Block') * 1024;
    flipByte(b, at + 3);
    const damaged = overlayOf(b);
    await expectImgError(() => diffPaths(base, damaged), 'BAD_CHECKSUM', { structure: 'ext4.block_bitmap[0]', deviceOffset: at });
  });

  test('in A, the block bitmap: a data block changed in place, the diff asks whether it is in use', async () => {
    const b = join(tmp(), 'b-block.img');
    copyFileSync(base, b);
    const blk = parseBlocks(sh('debugfs', ['-R', 'blocks /d/f5', b]))[0]!;
    const bytes = readFileSync(b);
    bytes.fill(0xee, blk * 1024, blk * 1024 + 512);
    writeFileSync(b, bytes);
    const clean = await diffPaths(base, overlayOf(b));
    expect(clean.filesystems[0]!.stats.mode).toBe('incremental');
    expect(clean.filesystems[0]!.modified.map((m) => Buffer.from(m.path).toString())).toEqual(['/d/f5']);
    // A damaged, B (an overlay on it) holding the good bitmap and the changed block.
    const a = join(tmp(), 'a-damaged.img');
    copyFileSync(base, a);
    const at = bitmapBlock(a, 'Block') * 1024;
    flipByte(a, at + 200);
    const onDamaged = overlayOf(b, a);
    await expectImgError(() => diffPaths(a, onDamaged), 'BAD_CHECKSUM', { structure: 'ext4.block_bitmap[0]', deviceOffset: at, file: a });
  });
});
