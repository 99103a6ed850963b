/**
 * Diff of two whole disks, partition by partition: find the changed byte ranges once
 * (changedRanges), then diff each ext2/3/4 filesystem file by file (diffExt4), also when
 * the disk, the partition or the filesystem grew (the blocks past the old end are the new
 * filesystem's own) or the partition moved, and report every other region (non-ext
 * partitions, partitions on one side only, space outside any partition or past the end of
 * a filesystem) as changed byte ranges. Dirty filesystems (a journal to replay, errors,
 * orphans) are diffed as stored, with a warning.
 */
import type { BlockDevice, ByteRange } from '../diskimage/BlockDevice.js';
import { SliceDevice } from '../diskimage/SliceDevice.js';
import { detectFilesystem, isExtFilesystem } from '../diskimage/detectFilesystem.js';
import { readPartitionTable, type PartitionTable } from '../diskimage/partition/readPartitionTable.js';
import type { Partition } from '../diskimage/partition/PartitionTable.js';
import { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { BlockRuns } from '../fs/BlockRuns.js';
import { changedRanges, rangesWithin, type DiffSide } from './changedRanges.js';
import { diffExt4, type Ext4Diff } from './diffExt4.js';
import { accountFs } from './fsAccounting.js';

/** A filesystem diffed file by file. */
export interface FsDiff extends Ext4Diff {
  /** Partition index (Linux numbering), or null for a filesystem on the whole disk. */
  readonly partition: number | null;
  readonly fsType: 'ext2' | 'ext3' | 'ext4';
  /** B's partition (or disk) bounds. */
  readonly startBytes: number;
  readonly lengthBytes: number;
  /** A's bounds, when they differ from B's (a partition that grew, shrank or moved). */
  readonly startBytesA?: number;
  readonly lengthBytesA?: number;
  /** Whether each side's journal needs recovery: the diff is then of the states before replay. */
  readonly journalNeedsRecovery: { readonly a: boolean; readonly b: boolean };
  /** Dirty states of either side (also in DiskDiff.warnings). */
  readonly warnings: string[];
  /**
   * Bytes that differ inside this filesystem, at sector granularity (the unit of
   * DiskDiff.changedBytes; past the filesystem's end they are a raw region), and how they
   * split: in the blocks of listed paths (added, removed, modified), in group metadata or
   * the journal, in blocks free on both sides, and in other blocks in use: a changed
   * directory's entries (the paths they name are listed, not the directory), an unwritten
   * extent (it reads as zeros, so its file's content did not change), a block no inode
   * owns. The four parts add up to `changedBytes`.
   */
  readonly changedBytes: number;
  readonly changedBytesIn: { readonly files: number; readonly metadata: number; readonly free: number; readonly other: number };
  /** The changed blocks (filesystem block numbers) of the last three parts. */
  readonly metadataBlocks: Array<[number, number]>;
  readonly freeBlocks: Array<[number, number]>;
  readonly otherBlocks: Array<[number, number]>;
}

/** A region diffed block by block: `changedRanges` are [diskByteOffset, length] pairs. */
export interface RawRegionDiff {
  readonly partition: number | null;
  /**
   * Why it is not diffed by file: 'outside partitions', 'partition only in A' (or B),
   * 'beyond the end of one disk', 'beyond the filesystem', or the filesystem found.
   */
  readonly reason: string;
  readonly startBytes: number;
  readonly lengthBytes: number;
  readonly changedRanges: Array<[number, number]>;
  readonly changedBytes: number;
}

export interface DiskDiff {
  readonly a: string;
  readonly b: string;
  /** How changed ranges were found: B's extra layers' allocation, or hashing both. */
  readonly mode: 'overlay' | 'hash';
  readonly sizeA: number;
  readonly sizeB: number;
  readonly scheme: PartitionTable['scheme'];
  /**
   * Bytes that differ, at sector granularity: the sum of `filesystems[].changedBytes` and
   * `raw[].changedBytes`. Raw regions compare B's bytes with A's at the same offsets; a
   * filesystem compares its two partitions' bytes (at their own offsets when it moved).
   */
  readonly changedBytes: number;
  /** Bytes read from each side to find them (overlay: what B's own layers store). */
  readonly bytesCompared: number;
  readonly filesystems: FsDiff[];
  readonly raw: RawRegionDiff[];
  readonly warnings: string[];
  readonly seconds: number;
}

export interface DiffDisksOptions {
  /** Walk and compare whole trees even where the change could be followed incrementally. */
  readonly fullTree?: boolean;
  /**
   * Filesystems the caller has open already, by side and byte range on its disk: used
   * instead of opening them again, so their caches serve this diff and the caller's next
   * steps (a rebase diffs every client against the one open base).
   */
  readonly openFilesystems?: ReadonlyArray<{ readonly side: 'a' | 'b'; readonly start: number; readonly length: number; readonly fs: Ext4Fs }>;
}

/** Where a region lies on one side. */
interface Bounds {
  readonly start: number;
  readonly length: number;
}

interface Region {
  readonly partition: number | null;
  /** The span of B it accounts for: B's partition, or both whole disks. */
  readonly start: number;
  readonly length: number;
  /** Its bounds on each side (a partition or filesystem may have grown, shrunk or moved). */
  readonly a: Bounds;
  readonly b: Bounds;
  /** Set when the region cannot be diffed by file whatever it holds. */
  readonly rawReason?: string;
}

function sumRanges(rs: readonly ByteRange[]): number {
  return rs.reduce((n, r) => n + r.length, 0);
}

/**
 * B's partitions paired with A's: by GPT unique partition GUID where both have one, then
 * by start offset, then by number (a partition that moved). Numbers alone would pair the
 * wrong filesystems when entries were renumbered (sgdisk -r, or a table rewritten in
 * another order), and report invented changes without an error. Each of A's partitions
 * is paired at most once. Extended (container) partitions are never paired.
 */
export function pairPartitions(ta: PartitionTable, tb: PartitionTable): Map<number, Partition> {
  const candidates = ta.partitions.filter((q) => q.kind !== 'extended');
  const used = new Set<number>();
  const pairs = new Map<number, Partition>();
  const inB = tb.partitions.filter((p) => p.kind !== 'extended');
  const rules: Array<(p: Partition, q: Partition) => boolean> = [
    (p, q) => p.guid !== undefined && q.guid !== undefined && p.guid === q.guid,
    (p, q) => p.startBytes === q.startBytes,
    (p, q) => p.index === q.index,
  ];
  for (const rule of rules) {
    for (const p of inB) {
      if (pairs.has(p.index)) continue;
      const q = candidates.find((c) => !used.has(c.index) && rule(p, c));
      if (q === undefined) continue;
      pairs.set(p.index, q);
      used.add(q.index);
    }
  }
  return pairs;
}

/**
 * The regions to diff, tiling B's address space [0, max(sizeA, sizeB)) once, so that every
 * changed byte is counted in exactly one region. Two filesystems are compared file by
 * file when they sit in the same place: the whole disk on both sides, or the same
 * partition (see pairPartitions). Their sizes may differ (a disk or partition that grew, then
 * resize2fs), and a partition may have moved; the file-level diff does not depend on
 * either. A partition only in B is raw; so is all space outside B's partitions, compared
 * with A's bytes at the same offsets (named after A's partition where A had one only A has).
 */
function regionsOf(ta: PartitionTable, tb: PartitionTable, pairs: ReadonlyMap<number, Partition>, sizeA: number, sizeB: number): Region[] {
  const size = Math.max(sizeA, sizeB);
  if (ta.scheme === 'none' && tb.scheme === 'none') return [{ partition: null, start: 0, length: size, a: { start: 0, length: sizeA }, b: { start: 0, length: sizeB } }];
  const out: Region[] = [];
  const pairedA = new Set([...pairs.values()].map((q) => q.index));
  for (const p of [...tb.partitions].sort((x, y) => x.startBytes - y.startBytes)) {
    if (p.kind === 'extended') continue;
    const b = { start: p.startBytes, length: p.lengthBytes };
    // Overlapping partitions (a corrupt table): the overlap is counted once, in the first.
    const prevEnd = out.length > 0 ? out[out.length - 1]!.start + out[out.length - 1]!.length : 0;
    const q = pairs.get(p.index);
    if (q === undefined || b.start < prevEnd) {
      const start = Math.max(b.start, prevEnd);
      if (b.start + b.length > start) out.push({ partition: p.index, start, length: b.start + b.length - start, a: b, b, rawReason: 'partition only in B' });
      continue;
    }
    out.push({ partition: p.index, ...b, a: { start: q.startBytes, length: q.lengthBytes }, b });
  }
  // Everything not covered by B's partitions (tables, boot-loader gaps, trailing space, a partition's old place).
  const onlyA = ta.partitions.filter((q) => q.kind !== 'extended' && !pairedA.has(q.index)).sort((x, y) => x.startBytes - y.startBytes);
  const gaps: Region[] = [];
  const gap = (start: number, length: number, partition: number | null, rawReason: string): void => {
    if (length > 0) gaps.push({ partition, start, length, a: { start, length }, b: { start, length }, rawReason });
  };
  const fill = (start: number, end: number): void => {
    let pos = start;
    for (const q of onlyA) {
      const s = Math.max(pos, q.startBytes);
      const e = Math.min(end, q.startBytes + q.lengthBytes);
      if (e <= s) continue;
      gap(pos, s - pos, null, 'outside partitions');
      gap(s, e - s, q.index, 'partition only in A');
      pos = e;
    }
    gap(pos, end - pos, null, 'outside partitions');
  };
  let pos = 0;
  for (const r of out) {
    if (r.start > pos) fill(pos, r.start);
    pos = Math.max(pos, r.start + r.length);
  }
  if (pos < size) fill(pos, size);
  return [...out, ...gaps].sort((x, y) => x.start - y.start);
}

const emptyDiff = (): Ext4Diff => ({
  added: [],
  removed: [],
  modified: [],
  unattributedBlocks: [],
  dirLinks: [],
  stats: { mode: 'incremental', changedBlockBytes: 0, inodesCompared: 0, dirsRead: 0, ownershipScan: false, seconds: 0 },
});

/**
 * Diffs disk A against disk B (see the module comment). Throws what the partition-table
 * reader, the ext4 reader and the devices throw (CORRUPT_IMAGE, BAD_CHECKSUM, TRUNCATED,
 * UNSUPPORTED_FEATURE, IO).
 */
export async function diffDisks(a: DiffSide, b: DiffSide, options: DiffDisksOptions = {}): Promise<DiskDiff> {
  const t0 = performance.now();
  const changes = await changedRanges(a, b);
  const [ta, tb] = await Promise.all([readPartitionTable(a.device, { file: a.name }), readPartitionTable(b.device, { file: b.name })]);
  const warnings = [...ta.warnings.map((w) => `${a.name}: ${w}`), ...tb.warnings.map((w) => `${b.name}: ${w}`)];
  const pairs = pairPartitions(ta, tb);
  for (const p of tb.partitions) {
    const q = pairs.get(p.index);
    if (q !== undefined && q.index !== p.index) {
      const by = p.guid !== undefined && p.guid === q.guid ? 'GPT partition GUID' : 'start offset';
      warnings.push(`partition ${p.index} of ${b.name} is compared with partition ${q.index} of ${a.name} (same ${by}; the table was renumbered)`);
    }
  }
  const filesystems: FsDiff[] = [];
  const raw: RawRegionDiff[] = [];
  for (const r of regionsOf(ta, tb, pairs, a.device.size, b.device.size)) {
    const within = rangesWithin(changes.ranges, r.start, r.length);
    const rawRegion = (reason: string): void => {
      if (r.partition === null && within.length === 0 && reason === 'outside partitions') return;
      raw.push({
        partition: r.partition,
        reason,
        startBytes: r.start,
        lengthBytes: r.length,
        changedRanges: within.map((x) => [x.offset + r.start, x.length]),
        changedBytes: sumRanges(within),
      });
    };
    const fits = r.a.start + r.a.length <= a.device.size && r.b.start + r.b.length <= b.device.size;
    if (r.rawReason !== undefined || !fits) {
      rawRegion(r.rawReason ?? 'beyond the end of one disk');
      continue;
    }
    const slice = (d: DiffSide, at: Bounds): BlockDevice =>
      at.start === 0 && at.length === d.device.size ? d.device : new SliceDevice(d.device, at.start, at.length, { file: d.name, structure: `partition ${r.partition}` });
    const [da, db] = [slice(a, r.a), slice(b, r.b)];
    const [fa, fb] = await Promise.all([detectFilesystem(da), detectFilesystem(db)]);
    if (fa === undefined || fb === undefined || !isExtFilesystem(fa) || !isExtFilesystem(fb)) {
      rawRegion(fa === fb ? (fa ?? 'unknown content') : `${fa ?? 'unknown'} in A, ${fb ?? 'unknown'} in B`);
      continue;
    }
    const label = (d: DiffSide): string => (r.partition === null ? d.name : `${d.name}:${r.partition}`);
    const where = (d: DiffSide, at: Bounds) => ({ file: label(d), location: { diskStart: at.start, fileIsDisk: d.fileIsDisk === true } });
    const open = (side: 'a' | 'b', dev: BlockDevice, d: DiffSide, at: Bounds): Promise<Ext4Fs> | Ext4Fs =>
      options.openFilesystems?.find((o) => o.side === side && o.start === at.start && o.length === at.length)?.fs ?? Ext4Fs.open(dev, where(d, at));
    const [fsA, fsB] = await Promise.all([open('a', da, a, r.a), open('b', db, b, r.b)]);
    // What the diff shows is each filesystem as stored: say so when that is not what a mount would show.
    const fsWarnings = [...(await fsA.readWarnings()), ...(await fsB.readWarnings())];
    warnings.push(...fsWarnings);
    const [jA, jB] = await Promise.all([fsA.journalState(), fsB.journalState()]);
    // Changed bytes relative to the filesystem's start. A moved partition shares no offsets
    // with its old place, so its two slices are compared by content.
    const moved = r.a.start !== r.b.start;
    const span = Math.max(r.a.length, r.b.length);
    const inFs = moved
      ? (await changedRanges({ name: label(a), device: da, layers: [{ id: 'A', device: da }] }, { name: label(b), device: db, layers: [{ id: 'B', device: db }] })).ranges
      : rangesWithin(changes.ranges, r.b.start, span);
    // Bytes this filesystem accounts for: up to the end of the larger filesystem, within B's region.
    const fsEnd = Math.min(r.length, Math.max(fsA.superblock.s_blocks_count * fsA.blockSize, fsB.superblock.s_blocks_count * fsB.blockSize));
    const counted = rangesWithin(inFs, 0, fsEnd);
    const changed = BlockRuns.fromByteRanges(inFs, fsB.blockSize);
    const d = changed.isEmpty ? emptyDiff() : await diffExt4(fsA, fsB, changed, { full: options.fullTree === true || changes.mode === 'hash' || moved, differingBytes: inFs });
    filesystems.push({
      partition: r.partition,
      fsType: fb as FsDiff['fsType'],
      startBytes: r.b.start,
      lengthBytes: r.b.length,
      ...(r.a.start !== r.b.start || r.a.length !== r.b.length ? { startBytesA: r.a.start, lengthBytesA: r.a.length } : {}),
      journalNeedsRecovery: { a: jA?.needsRecovery === true, b: jB?.needsRecovery === true },
      warnings: fsWarnings,
      ...d,
      ...(await accountFs(fsA.blocks, fsB.blocks, counted, d)),
    });
    // Changes past the end of both filesystems (a partition larger than its filesystem) belong to no file.
    const beyond = rangesWithin(inFs, fsEnd, r.length - fsEnd);
    if (beyond.length > 0) {
      const start = r.b.start + fsEnd;
      raw.push({ partition: r.partition, reason: 'beyond the filesystem', startBytes: start, lengthBytes: r.length - fsEnd, changedRanges: beyond.map((x) => [x.offset + start, x.length]), changedBytes: sumRanges(beyond) });
    }
  }
  return {
    a: a.name,
    b: b.name,
    mode: changes.mode,
    sizeA: a.device.size,
    sizeB: b.device.size,
    scheme: tb.scheme,
    changedBytes: filesystems.reduce((n, f) => n + f.changedBytes, 0) + raw.reduce((n, x) => n + x.changedBytes, 0),
    bytesCompared: changes.bytesCompared,
    filesystems,
    raw,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}
