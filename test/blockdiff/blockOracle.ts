/**
 * The oracle for the blocks `diff` reports per path (what a rebase consumes): from debugfs
 * (`blocks` for data, extent-node and indirect blocks, `stat` for the xattr block, `icheck`
 * for the owner of each block) and a byte comparison of the two raw images. Exact:
 * - added: every block the path's inode uses in B;
 * - removed: every block it used in A;
 * - modified: the blocks it uses in B whose bytes differ from A's at the same place.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { expect } from 'vitest';
import type { Ext4Diff } from '../../src/blockdiff/diffExt4.js';
import { debugfsBatch, debugfsOwners, parseBlocks, parseStat } from '../fs/ext4/debugfsOracle.js';

/** Block numbers of [start, count] runs, ascending. */
export function expandRuns(runs: ReadonlyArray<readonly [number, number]>): number[] {
  const out: number[] = [];
  for (const [s, c] of runs) for (let k = 0; k < c; k++) out.push(s + k);
  return out.sort((x, y) => x - y);
}

/** For each path: the blocks its inode uses per debugfs (blocks, plus the xattr block from stat). */
export function debugfsPathBlocks(image: string, paths: readonly string[]): Map<string, number[]> {
  const outs = debugfsBatch(image, paths.flatMap((p) => [`blocks "${p}"`, `stat "${p}"`]));
  const m = new Map<string, number[]>();
  paths.forEach((p, i) => {
    const st = parseStat(outs[2 * i + 1]!);
    // `blocks` prints i_block as block numbers even where it holds no block map: a fast
    // symlink's target, inline data (EXT4_INLINE_DATA_FL), a device number.
    const mapped = st.fastLink === undefined && !(st.flags & 0x10000000) && st.device === undefined;
    const data = mapped ? parseBlocks(outs[2 * i]!) : [];
    m.set(p, [...new Set([...data, ...(st.fileAcl !== 0 ? [st.fileAcl] : [])])].sort((x, y) => x - y));
  });
  return m;
}

/** Whether block `blockNo` differs between two raw images (a block past the end of one differs). */
export function blockDiffers(imageA: string, imageB: string, blockNo: number, blockSize: number): boolean {
  const read = (path: string): Buffer | undefined => {
    if ((blockNo + 1) * blockSize > statSync(path).size) return undefined;
    const fd = openSync(path, 'r');
    try {
      const b = Buffer.alloc(blockSize);
      readSync(fd, b, 0, blockSize, blockNo * blockSize);
      return b;
    } finally {
      closeSync(fd);
    }
  };
  const a = read(imageA);
  const b = read(imageB);
  return a === undefined || b === undefined || !a.equals(b);
}

/**
 * Asserts that every added, removed and modified path reports exactly the blocks the
 * oracle gives (see the module comment), and that icheck names the path's inode as the
 * owner of each block reported in B. `imageA`/`imageB` are the raw filesystem images.
 * Returns how many blocks were checked.
 */
export function expectExactChangedBlocks(d: Ext4Diff, imageA: string, imageB: string, blockSize: number): number {
  // The fixtures' paths are UTF-8 text, which is how debugfs takes them on its command line.
  const text = (p: Uint8Array): string => Buffer.from(p).toString('utf8');
  const inB = [...d.added, ...d.modified];
  const blocksB = debugfsPathBlocks(imageB, inB.map((e) => text(e.path)));
  const blocksA = debugfsPathBlocks(imageA, d.removed.map((e) => text(e.path)));
  let checked = 0;
  const reportedB: Array<[number, number]> = [];
  for (const e of d.added) {
    const ours = expandRuns(e.changedBlocks);
    expect(ours, `blocks of added ${text(e.path)}`).toEqual(blocksB.get(text(e.path)));
    checked += ours.length;
    for (const b of ours) reportedB.push([b, e.ino]);
  }
  for (const e of d.removed) {
    const ours = expandRuns(e.changedBlocks);
    expect(ours, `blocks of removed ${text(e.path)}`).toEqual(blocksA.get(text(e.path)));
    checked += ours.length;
  }
  for (const e of d.modified) {
    const ours = expandRuns(e.changedBlocks);
    const want = blocksB.get(text(e.path))!.filter((b) => blockDiffers(imageA, imageB, b, blockSize));
    expect(ours, `changed blocks of modified ${text(e.path)}`).toEqual(want);
    checked += ours.length;
    for (const b of ours) reportedB.push([b, e.ino]);
  }
  const owners = debugfsOwners(imageB, [...new Set(reportedB.map(([b]) => b))]);
  for (const [b, ino] of reportedB) expect(owners.get(b), `icheck ${b}`).toBe(ino);
  return checked;
}
