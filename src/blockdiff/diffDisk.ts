/**
 * Diff of two whole disks, partition by partition: find the changed byte ranges once
 * (changedRanges), then diff each ext2/3/4 filesystem file by file (diffExt4) and report
 * every other region (non-ext partitions, space outside any partition, partitions whose
 * bounds differ between A and B) as changed byte ranges.
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
  readonly startBytes: number;
  readonly lengthBytes: number;
}

/** A region diffed block by block: `changedRanges` are [diskByteOffset, length] pairs. */
export interface RawRegionDiff {
  readonly partition: number | null;
  /** Why it is not diffed by file: 'outside partitions', 'partition bounds differ', or the filesystem found. */
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
  /** Bytes in ranges that may differ (overlay) or do differ (hash). */
  readonly changedBytes: number;
  /** Bytes read from each side to find them. */
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

interface Region {
  readonly partition: number | null;
  readonly start: number;
  readonly length: number;
  /** Set when the region cannot be diffed by file whatever it holds. */
  readonly rawReason?: string;
}

const EXT_TYPES = new Set<FilesystemName>(['ext2', 'ext3', 'ext4']);

function sumRanges(rs: readonly ByteRange[]): number {
  return rs.reduce((n, r) => n + r.length, 0);
}

function regionsOf(ta: PartitionTable, tb: PartitionTable, size: number): Region[] {
  if (ta.scheme === 'none' && tb.scheme === 'none') return [{ partition: null, start: 0, length: size }];
  const out: Region[] = [];
  const byIndex = new Map(ta.partitions.map((p) => [p.index, p]));
  const seen = new Set<number>();
  for (const p of tb.partitions) {
    const q = byIndex.get(p.index);
    seen.add(p.index);
    const same = q !== undefined && q.startBytes === p.startBytes && q.lengthBytes === p.lengthBytes;
    if (p.kind === 'extended') continue;
    out.push({ partition: p.index, start: p.startBytes, length: p.lengthBytes, ...(same ? {} : { rawReason: 'partition bounds differ' }) });
  }
  for (const q of ta.partitions) {
    if (!seen.has(q.index) && q.kind !== 'extended') out.push({ partition: q.index, start: q.startBytes, length: q.lengthBytes, rawReason: 'partition only in A' });
  }
  // Everything not covered by a partition (tables, boot-loader gaps, trailing space).
  out.sort((x, y) => x.start - y.start);
  const gaps: Region[] = [];
  let pos = 0;
  for (const r of out) {
    if (r.start > pos) gaps.push({ partition: null, start: pos, length: r.start - pos, rawReason: 'outside partitions' });
    pos = Math.max(pos, r.start + r.length);
  }
  if (pos < size) gaps.push({ partition: null, start: pos, length: size - pos, rawReason: 'outside partitions' });
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
  const size = Math.max(a.device.size, b.device.size);
  const filesystems: FsDiff[] = [];
  const raw: RawRegionDiff[] = [];
  for (const r of regionsOf(ta, tb, size)) {
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
    const fits = r.start + r.length <= a.device.size && r.start + r.length <= b.device.size;
    if (r.rawReason !== undefined || !fits) {
      rawRegion(r.rawReason ?? 'beyond the end of one disk');
      continue;
    }
    const slice = (d: DiffSide): BlockDevice => (r.start === 0 && r.length === d.device.size ? d.device : new SliceDevice(d.device, r.start, r.length, { file: d.name, structure: `partition ${r.partition}` }));
    const [da, db] = [slice(a), slice(b)];
    const [fa, fb] = await Promise.all([detectFilesystem(da), detectFilesystem(db)]);
    if (fa === undefined || fb === undefined || !EXT_TYPES.has(fa) || !EXT_TYPES.has(fb)) {
      rawRegion(fa === fb ? (fa ?? 'unknown content') : `${fa ?? 'unknown'} in A, ${fb ?? 'unknown'} in B`);
      continue;
    }
    const label = (d: DiffSide): string => (r.partition === null ? d.name : `${d.name} (partition ${r.partition})`);
    const base = { partition: r.partition, fsType: fb as FsDiff['fsType'], startBytes: r.start, lengthBytes: r.length };
    if (within.length === 0) {
      filesystems.push({ ...base, ...emptyDiff() });
      continue;
    }
    const [fsA, fsB] = await Promise.all([Ext4Fs.open(da, { file: label(a) }), Ext4Fs.open(db, { file: label(b) })]);
    const changed = BlockRuns.fromByteRanges(within, fsB.blockSize);
    const d = await diffExt4(fsA, fsB, changed, { full: options.fullTree === true || changes.mode === 'hash' });
    filesystems.push({ ...base, ...d });
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
