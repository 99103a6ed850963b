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
import { detectFilesystem, type FilesystemName } from '../diskimage/detectFilesystem.js';
import { readPartitionTable, type PartitionTable } from '../diskimage/partition/readPartitionTable.js';
import { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { BlockRuns } from './BlockRuns.js';
import { changedRanges, rangesWithin, type DiffSide } from './changedRanges.js';
import { diffExt4, type Ext4Diff } from './diffExt4.js';

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
  /** Bytes that differ (at sector granularity). */
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
}

/** Where a region lies on one side. */
interface Bounds {
  readonly start: number;
  readonly length: number;
}

interface Region {
  readonly partition: number | null;
  /** The span reported for raw changes: from the lower start to the higher end of both sides. */
  readonly start: number;
  readonly length: number;
  /** Its bounds on each side (a partition or filesystem may have grown, shrunk or moved). */
  readonly a: Bounds;
  readonly b: Bounds;
  /** Set when the region cannot be diffed by file whatever it holds. */
  readonly rawReason?: string;
}

const EXT_TYPES = new Set<FilesystemName>(['ext2', 'ext3', 'ext4']);

function sumRanges(rs: readonly ByteRange[]): number {
  return rs.reduce((n, r) => n + r.length, 0);
}

/**
 * The regions to diff. Two filesystems are compared file by file when they sit in the
 * same place: the whole disk on both sides, or the partition with the same number. Their
 * sizes may differ (a disk or partition that grew, then resize2fs), and a partition may
 * have moved; the file-level diff does not depend on either. A partition on one side only
 * is raw, and so is all space outside partitions.
 */
function regionsOf(ta: PartitionTable, tb: PartitionTable, sizeA: number, sizeB: number): Region[] {
  const size = Math.max(sizeA, sizeB);
  if (ta.scheme === 'none' && tb.scheme === 'none') return [{ partition: null, start: 0, length: size, a: { start: 0, length: sizeA }, b: { start: 0, length: sizeB } }];
  const out: Region[] = [];
  const byIndex = new Map(ta.partitions.map((p) => [p.index, p]));
  const seen = new Set<number>();
  for (const p of tb.partitions) {
    const q = byIndex.get(p.index);
    seen.add(p.index);
    if (p.kind === 'extended') continue;
    const b = { start: p.startBytes, length: p.lengthBytes };
    if (q === undefined || q.kind === 'extended') {
      out.push({ partition: p.index, ...b, a: b, b, rawReason: 'partition only in B' });
      continue;
    }
    const a = { start: q.startBytes, length: q.lengthBytes };
    const start = Math.min(a.start, b.start);
    out.push({ partition: p.index, start, length: Math.max(a.start + a.length, b.start + b.length) - start, a, b });
  }
  for (const q of ta.partitions) {
    const a = { start: q.startBytes, length: q.lengthBytes };
    if (!seen.has(q.index) && q.kind !== 'extended') out.push({ partition: q.index, ...a, a, b: a, rawReason: 'partition only in A' });
  }
  // Everything not covered by a partition (tables, boot-loader gaps, trailing space).
  out.sort((x, y) => x.start - y.start);
  const gaps: Region[] = [];
  let pos = 0;
  const gap = (start: number, length: number): Region => ({ partition: null, start, length, a: { start, length }, b: { start, length }, rawReason: 'outside partitions' });
  for (const r of out) {
    if (r.start > pos) gaps.push(gap(pos, r.start - pos));
    pos = Math.max(pos, r.start + r.length);
  }
  if (pos < size) gaps.push(gap(pos, size - pos));
  return [...out, ...gaps].sort((x, y) => x.start - y.start);
}

const emptyDiff = (): Ext4Diff => ({
  added: [],
  removed: [],
  modified: [],
  unattributedBlocks: [],
  stats: { mode: 'incremental', changedBytes: 0, inodesCompared: 0, dirsRead: 0, ownershipScan: false, seconds: 0 },
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
  const filesystems: FsDiff[] = [];
  const raw: RawRegionDiff[] = [];
  for (const r of regionsOf(ta, tb, a.device.size, b.device.size)) {
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
    if (fa === undefined || fb === undefined || !EXT_TYPES.has(fa) || !EXT_TYPES.has(fb)) {
      rawRegion(fa === fb ? (fa ?? 'unknown content') : `${fa ?? 'unknown'} in A, ${fb ?? 'unknown'} in B`);
      continue;
    }
    const label = (d: DiffSide): string => (r.partition === null ? d.name : `${d.name} (partition ${r.partition})`);
    const where = (d: DiffSide, at: Bounds) => ({ file: label(d), location: { diskStart: at.start, fileIsDisk: d.fileIsDisk === true } });
    const [fsA, fsB] = await Promise.all([Ext4Fs.open(da, where(a, r.a)), Ext4Fs.open(db, where(b, r.b))]);
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
    const changed = BlockRuns.fromByteRanges(inFs, fsB.blockSize);
    const d = changed.isEmpty ? emptyDiff() : await diffExt4(fsA, fsB, changed, { full: options.fullTree === true || changes.mode === 'hash' || moved });
    filesystems.push({
      partition: r.partition,
      fsType: fb as FsDiff['fsType'],
      startBytes: r.b.start,
      lengthBytes: r.b.length,
      ...(r.a.start !== r.b.start || r.a.length !== r.b.length ? { startBytesA: r.a.start, lengthBytesA: r.a.length } : {}),
      journalNeedsRecovery: { a: jA?.needsRecovery === true, b: jB?.needsRecovery === true },
      warnings: fsWarnings,
      ...d,
    });
    // Changes past the end of both filesystems (a partition larger than its filesystem) belong to no file.
    const fsEnd = Math.max(fsA.superblock.s_blocks_count * fsA.blockSize, fsB.superblock.s_blocks_count * fsB.blockSize);
    const beyond = rangesWithin(inFs, fsEnd, span - fsEnd);
    if (beyond.length > 0) {
      const start = r.b.start + fsEnd;
      raw.push({ partition: r.partition, reason: 'beyond the filesystem', startBytes: start, lengthBytes: span - fsEnd, changedRanges: beyond.map((x) => [x.offset + start, x.length]), changedBytes: sumRanges(beyond) });
    }
  }
  return {
    a: a.name,
    b: b.name,
    mode: changes.mode,
    sizeA: a.device.size,
    sizeB: b.device.size,
    scheme: tb.scheme,
    changedBytes: changes.changedBytes,
    bytesCompared: changes.bytesCompared,
    filesystems,
    raw,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}
