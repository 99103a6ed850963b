/**
 * Where the changed bytes of one filesystem are, so that every one of them is shown:
 * in a listed path's blocks, in group metadata or the journal, in blocks free on both
 * sides, or in other blocks in use (a changed directory's entries, whose added or removed
 * paths are listed but not the directory; an unwritten extent, which reads as zeros; a
 * block no inode owns).
 */
import type { ByteRange } from '../diskimage/BlockDevice.js';
import { BlockRuns, type BlockRun } from '../fs/BlockRuns.js';
import type { FsBlocks } from '../fs/FsBlocks.js';
import type { Ext4Diff } from './diffExt4.js';

export interface FsAccounting {
  /** Changed bytes inside the filesystem, at the granularity of the ranges given (sectors). */
  readonly changedBytes: number;
  readonly changedBytesIn: { readonly files: number; readonly metadata: number; readonly free: number; readonly other: number };
  readonly metadataBlocks: Array<[number, number]>;
  readonly freeBlocks: Array<[number, number]>;
  readonly otherBlocks: Array<[number, number]>;
}

/** Bytes of ascending, disjoint `ranges` that fall in the blocks of `runs`. */
export function bytesInRuns(ranges: readonly ByteRange[], runs: BlockRuns, blockSize: number): number {
  let n = 0;
  let i = 0;
  for (const [s, c] of runs.runs()) {
    const start = s * blockSize;
    const end = (s + c) * blockSize;
    while (i < ranges.length && ranges[i]!.offset + ranges[i]!.length <= start) i++;
    for (let j = i; j < ranges.length && ranges[j]!.offset < end; j++) {
      const r = ranges[j]!;
      n += Math.min(end, r.offset + r.length) - Math.max(start, r.offset);
    }
  }
  return n;
}

/**
 * Splits `ranges` (changed bytes relative to the filesystem's start, ascending, disjoint)
 * by the blocks they fall in (see the module comment). Block numbers are B's block size.
 * Throws what the ext4 reader throws (CORRUPT_IMAGE, BAD_CHECKSUM, IO).
 */
export async function accountFs(fsA: FsBlocks, fsB: FsBlocks, ranges: readonly ByteRange[], d: Ext4Diff): Promise<FsAccounting> {
  const bs = fsB.blockSize;
  const changed = BlockRuns.fromByteRanges(ranges, bs);
  const listed: BlockRun[] = [];
  for (const e of [...d.added, ...d.removed, ...d.modified]) for (const r of e.changedBlocks) listed.push(r);
  const files = changed.intersection(new BlockRuns(listed));
  let rest = changed.minus(files);
  let metadata = new BlockRuns();
  const free: BlockRun[] = [];
  const other: BlockRun[] = [];
  if (!rest.isEmpty) {
    const meta = fsA.metaBlocks.union(fsB.metaBlocks).union(await fsA.journalBlocks()).union(await fsB.journalBlocks());
    metadata = rest.intersection(meta);
    rest = rest.minus(metadata);
    const [countA, countB] = [fsA.blockCount, fsB.blockCount];
    for (const [s, c] of rest.runs()) {
      for (let blk = s; blk < s + c; blk++) {
        const used = (blk < countA && (await fsA.blockInUse(blk))) || (blk < countB && (await fsB.blockInUse(blk)));
        (used ? other : free).push([blk, 1]);
      }
    }
  }
  const freeRuns = new BlockRuns(free);
  const otherRuns = new BlockRuns(other);
  const sum = ranges.reduce((n, r) => n + r.length, 0);
  return {
    changedBytes: sum,
    changedBytesIn: { files: bytesInRuns(ranges, files, bs), metadata: bytesInRuns(ranges, metadata, bs), free: bytesInRuns(ranges, freeRuns, bs), other: bytesInRuns(ranges, otherRuns, bs) },
    metadataBlocks: metadata.toArray(),
    freeBlocks: freeRuns.toArray(),
    otherBlocks: otherRuns.toArray(),
  };
}
