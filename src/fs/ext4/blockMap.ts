/**
 * Legacy block maps of ext2/ext3 (ext4 doc, blockmap.rst): 12 direct pointers, then one
 * indirect, one double- and one triple-indirect block. A zero pointer is a hole.
 * The walk is bounded by the inode's i_blocks and by the filesystem's size: a map that
 * names more blocks than the inode owns (or than the filesystem has) is corrupt, and so
 * is an indirect block named twice (a cycle, or fan-out that would multiply the work).
 */
import { fsCorrupt, fsReader } from './context.js';
import { EXT4_DIND_BLOCK, EXT4_IND_BLOCK, EXT4_NDIR_BLOCKS, EXT4_TIND_BLOCK } from './constants.js';
import type { ExtentWalkEnv, FileExtent } from './extents.js';

/**
 * Yields the mapped blocks of a block-mapped inode as runs (never unwritten), in logical
 * order, and reports every indirect block to `onIndirect`. `maxBlocks` bounds the number
 * of blocks (data and indirect) the map may name. Throws CORRUPT_IMAGE (a pointer outside
 * the filesystem, more blocks than maxBlocks or than the filesystem has, an indirect block
 * named twice).
 */
export async function* walkBlockMap(
  env: ExtentWalkEnv,
  ino: number,
  iBlock: Uint8Array,
  iBlockDeviceOffset: number,
  maxBlocks: number,
  onIndirect?: (pblk: number, level: number) => void,
): AsyncGenerator<FileExtent> {
  const { ctx, blockSize } = env;
  const per = blockSize / 4;
  let seen = 0;
  const limit = Math.min(maxBlocks, env.blocksCount);
  const visited = new Set<number>();
  let run: { lblk: number; pblk: number; len: number } | undefined;

  const checkPtr = (p: number, where: number): void => {
    if (p >= env.blocksCount || p < 1) {
      fsCorrupt(ctx, `ext4.inode[${ino}].block_map`, where, 'block pointer outside the filesystem', { expected: `1..${env.blocksCount - 1}`, actual: p });
    }
    if (++seen > limit) {
      fsCorrupt(ctx, `ext4.inode[${ino}].block_map`, where, 'block map names more blocks than the inode owns', { expected: `<= ${limit}` });
    }
  };

  function* add(lblk: number, pblk: number): Generator<FileExtent> {
    if (run !== undefined && run.lblk + run.len === lblk && run.pblk + run.len === pblk && run.len < 0xffffffff) {
      run.len++;
      return;
    }
    if (run !== undefined) yield { ...run, unwritten: false };
    run = { lblk, pblk, len: 1 };
  }

  const root = fsReader(ctx, iBlock, `ext4.inode[${ino}].i_block`, iBlockDeviceOffset);
  for (let i = 0; i < EXT4_NDIR_BLOCKS; i++) {
    const p = root.u32le(i * 4);
    if (p === 0) continue;
    checkPtr(p, iBlockDeviceOffset + i * 4);
    yield* add(i, p);
  }

  async function* indirect(pblk: number, level: number, firstLblk: number): AsyncGenerator<FileExtent> {
    if (visited.has(pblk)) fsCorrupt(ctx, `ext4.inode[${ino}].block_map`, pblk * blockSize, 'indirect block referenced twice', { actual: pblk });
    visited.add(pblk);
    onIndirect?.(pblk, level);
    const bytes = await env.readBlocks(pblk, 1);
    const r = fsReader(ctx, bytes, `ext4.indirect_block[${pblk}]`, pblk * blockSize);
    const span = per ** (level - 1);
    for (let i = 0; i < per; i++) {
      const p = r.u32le(i * 4);
      if (p === 0) continue;
      checkPtr(p, pblk * blockSize + i * 4);
      const lblk = firstLblk + i * span;
      if (level === 1) yield* add(lblk, p);
      else yield* indirect(p, level - 1, lblk);
    }
  }

  let first = EXT4_NDIR_BLOCKS;
  for (const [slot, level] of [[EXT4_IND_BLOCK, 1], [EXT4_DIND_BLOCK, 2], [EXT4_TIND_BLOCK, 3]] as const) {
    const p = root.u32le(slot * 4);
    if (p !== 0) {
      checkPtr(p, iBlockDeviceOffset + slot * 4);
      yield* indirect(p, level, first);
    }
    first += per ** level;
  }
  if (run !== undefined) yield { ...(run as { lblk: number; pblk: number; len: number }), unwritten: false };
}
