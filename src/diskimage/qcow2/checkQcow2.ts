/**
 * Structural check of a qcow2 image, read-only, in the manner of `qemu-img check`
 * (qcow2.rst, "Host cluster management" and "Cluster mapping"): count, for every
 * host cluster, the references the metadata makes to it (header, L1/L2 tables,
 * data and compressed clusters, refcount table and blocks, snapshot table and
 * every snapshot's tables, bitmap directory, tables and data), then compare with
 * the stored refcounts.
 *
 * Counting follows qemu-img check so the verdicts and numbers agree:
 * - a cluster whose refcount is lower than its references is a corruption, higher is a leak;
 * - a region reaching a whole cluster or more past the end of the file is a corruption
 *   (a partly written last cluster is allowed);
 * - misaligned L2/data/refblock offsets, reserved bits, bad subcluster bitmaps and
 *   OFLAG_COPIED disagreeing with "refcount == 1" in the active tables are corruptions;
 * - a table referenced N times is checked once and its findings counted N times.
 * On an image with the dirty bit set (lazy refcounts), qemu-img check reports the
 * unflushed refcounts as errors too; we count them the same way (the image is not
 * clean until `qemu-img check -r all` rebuilds them) but name them `stale_refcount`.
 *
 * Memory: one byte of count and one of kind per host cluster (bounded by the file
 * size), plus cached tables. Work is bounded by a budget proportional to the file size.
 */
import { LruCache } from '../LruCache.js';
import { ImageFile } from '../ImageFile.js';
import { CorruptImageError, ImgdedupError, UnsupportedError } from '../../errors.js';
import { CheckCollector, type CheckError, type CheckErrorKind, type CheckResult } from '../CheckResult.js';
import {
  QCOW2_AUTOCLEAR_BITMAPS,
  QCOW2_INCOMPAT_CORRUPT,
  QCOW2_INCOMPAT_DIRTY,
  QCOW2_INCOMPAT_EXTL2,
  QCOW2_MAX_L1_SIZE_BYTES,
  QCOW2_MAX_REFTABLE_SIZE_BYTES,
} from './constants.js';
import { decodeQcow2Extensions, decodeQcow2Header, type Qcow2Header } from './header.js';
import { readQcow2SnapshotTable } from './snapshots.js';
import { readQcow2BitmapDirectory } from './bitmaps.js';

const TWO_32 = 0x1_0000_0000;
/** Most host clusters we keep counts for (2 bytes each: 256 MiB). */
export const MAX_CHECK_CLUSTERS = 2 ** 27;
/** qemu's BME_MAX_TABLE_SIZE: bitmap table entries. */
const MAX_BITMAP_TABLE_ENTRIES = 0x8000000;

/** What a host cluster is used as, for overlap reports. */
const KIND_NAMES = [
  '',
  'header',
  'L1 table',
  'L2 table',
  'data cluster',
  'compressed data',
  'snapshot table',
  'snapshot L1 table',
  'refcount table',
  'refcount block',
  'bitmap directory',
  'bitmap table',
  'bitmap data',
] as const;
const enum Use {
  Header = 1,
  L1 = 2,
  L2 = 3,
  Data = 4,
  Compressed = 5,
  SnapshotTable = 6,
  SnapshotL1 = 7,
  RefcountTable = 8,
  RefcountBlock = 9,
  BitmapDirectory = 10,
  BitmapTable = 11,
  BitmapData = 12,
}
const CONFLICT = 255;

export interface CheckQcow2Options {
  /** Most findings listed (counts stay exact). Default 1000. */
  readonly maxErrors?: number;
}

/** Per-host-cluster reference counts (saturating bytes plus an overflow map) and uses. */
class ReferenceMap {
  readonly counts: Uint8Array;
  readonly uses: Uint8Array;
  readonly big = new Map<number, number>();
  /** Clusters covered: the file's, or more when a reference reaches into a partial cluster past the end. */
  nb: number;

  constructor(fileClusters: number) {
    this.counts = new Uint8Array(fileClusters + 1);
    this.uses = new Uint8Array(fileClusters + 1);
    this.nb = fileClusters;
  }

  get(k: number): number {
    const c = this.counts[k] ?? 0;
    return c === 255 ? this.big.get(k)! : c;
  }

  /** Adds `n` references as `use`; returns the previous use if it conflicts. */
  add(k: number, n: number, use: Use): number | undefined {
    const c = this.counts[k]!;
    if (c === 255) this.big.set(k, this.big.get(k)! + n);
    else if (c + n >= 255) {
      this.counts[k] = 255;
      this.big.set(k, c + n);
    } else this.counts[k] = c + n;
    if (k + 1 > this.nb) this.nb = k + 1;
    const prev = this.uses[k]!;
    if (prev === 0) this.uses[k] = use;
    else if (prev !== use && prev !== CONFLICT) {
      this.uses[k] = CONFLICT;
      return prev;
    }
    return undefined;
  }
}

/** The stored refcounts: the refcount table and a bounded cache of refcount blocks. */
class StoredRefcounts {
  readonly perBlock: number;
  private readonly cache: LruCache<number, Uint8Array | 'unreadable'>;

  constructor(
    private readonly file: ImageFile,
    private readonly h: Qcow2Header,
    readonly reftable: Uint8Array,
  ) {
    this.perBlock = 2 ** (h.cluster_bits + 3 - h.refcount_order);
    this.cache = new LruCache(Math.max(4, (32 * 1024 * 1024) / 2 ** h.cluster_bits));
  }

  get entries(): number {
    return this.reftable.length / 8;
  }

  /** Refcount table entry `i`: its refcount block offset (REFT_OFFSET_MASK) and reserved bits. */
  entry(i: number): { offset: number; reserved: number } {
    const v = new DataView(this.reftable.buffer, this.reftable.byteOffset + i * 8, 8);
    const hi = v.getUint32(0);
    const lo = v.getUint32(4);
    return { offset: hi * TWO_32 + ((lo & 0xfffffe00) >>> 0), reserved: lo & 0x1ff };
  }

  /** The refcount block holding cluster `k`'s refcount: bytes, null (none: all zero) or unreadable (misaligned). */
  async block(blockIndex: number): Promise<Uint8Array | null | 'unreadable'> {
    if (blockIndex >= this.entries) return null;
    const { offset } = this.entry(blockIndex);
    if (offset === 0) return null;
    const cs = 2 ** this.h.cluster_bits;
    if (offset % cs !== 0) return 'unreadable';
    const hit = this.cache.get(blockIndex);
    if (hit !== undefined) return hit;
    const bytes = await readZeroFilled(this.file, offset, cs);
    this.cache.set(blockIndex, bytes);
    return bytes;
  }

  /** Decodes entry `i` of a refcount block (refcount_order 0..6; sub-byte widths are LSB first). */
  value(block: Uint8Array, i: number): number {
    switch (this.h.refcount_order) {
      case 0:
        return (block[i >>> 3]! >>> (i & 7)) & 1;
      case 1:
        return (block[i >>> 2]! >>> (2 * (i & 3))) & 3;
      case 2:
        return (block[i >>> 1]! >>> (4 * (i & 1))) & 15;
      case 3:
        return block[i]!;
      case 4:
        return (block[2 * i]! << 8) | block[2 * i + 1]!;
      case 5:
        return ((block[4 * i]! << 24) | (block[4 * i + 1]! << 16) | (block[4 * i + 2]! << 8) | block[4 * i + 3]!) >>> 0;
      default: {
        const v = new DataView(block.buffer, block.byteOffset + 8 * i, 8);
        return v.getUint32(0) * TWO_32 + v.getUint32(4);
      }
    }
  }

  /** Stored refcount of cluster `k`, or undefined if its refcount block is unreadable. */
  async get(k: number): Promise<number | undefined> {
    const b = await this.block(Math.floor(k / this.perBlock));
    if (b === 'unreadable') return undefined;
    return b === null ? 0 : this.value(b, k % this.perBlock);
  }
}

/** Reads [offset, offset+length) as far as it lies inside the file; what lies beyond reads as zeros (as qemu does). */
async function readZeroFilled(file: ImageFile, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const avail = Math.min(length, file.size - offset);
  if (avail > 0 && Number.isSafeInteger(offset)) await file.readInto(out.subarray(0, avail), offset);
  return out;
}

/** The in-file part of [offset, offset+length): bytes beyond the end are zeros and need no scanning. */
async function readInFile(file: ImageFile, offset: number, length: number): Promise<Uint8Array> {
  if (!Number.isSafeInteger(offset) || offset >= file.size) return new Uint8Array(0);
  const avail = Math.min(length, file.size - offset);
  const out = new Uint8Array(avail);
  await file.readInto(out, offset);
  return out;
}

/**
 * Checks the qcow2 image at `path`. Returns the findings; throws only when the image
 * cannot be checked at all: CORRUPT_IMAGE/TRUNCATED (bad header, tables qemu would
 * refuse to open, check work beyond the budget: CHECK_FAILED), UNSUPPORTED_FEATURE,
 * ENCRYPTED, IMAGE_MARKED_CORRUPT, IO.
 */
export async function checkQcow2(path: string, options: CheckQcow2Options = {}): Promise<CheckResult> {
  const file = await ImageFile.open(path);
  try {
    return await new Qcow2Checker(file, options).run();
  } finally {
    await file.close();
  }
}

class Qcow2Checker {
  private readonly col: CheckCollector;
  private h!: Qcow2Header;
  private cs = 0;
  private extL2 = false;
  private refs!: ReferenceMap;
  /** Distinct L2 table offsets and how many L1 entries reference them. */
  private readonly l2Refs = new Map<number, { n: number; structure: string; offset: number }>();
  /** Same, for the active L1 table only (OFLAG_COPIED is checked there). */
  private readonly activeL2 = new Map<number, { n: number; copied: number; notCopied: number; entryOffset: number }>();
  private budget = 0;

  constructor(
    private readonly file: ImageFile,
    options: CheckQcow2Options,
  ) {
    this.col = new CheckCollector(options.maxErrors);
  }

  private spend(bytes: number, structure: string, offset: number): void {
    this.budget -= bytes;
    if (this.budget < 0) {
      throw new CorruptImageError('CHECK_FAILED', {
        file: this.file.path,
        structure,
        offset,
        detail: 'the tables reference each other far more than a valid image can (overlapping L1/L2 tables); the check was stopped',
      });
    }
  }

  private corruption(kind: CheckErrorKind, structure: string, offset: number, detail: string, times = 1): void {
    this.col.add({ kind, structure, offset, detail, counts: 'corruption' }, times);
  }

  /** Counts a reference from `structure` (at `at`) to the host region [offset, offset+size). */
  private inc(offset: number, size: number, use: Use, structure: string, at: number, times = 1): void {
    if (size <= 0) return;
    // qemu allows the last cluster to be partly written, not a whole cluster or more past the end.
    if (offset + size - this.file.size >= this.cs) {
      this.corruption('outside_file', structure, at, `${KIND_NAMES[use]} at byte ${offset} (${size} bytes) lies a cluster or more beyond the end of the file (${this.file.size} bytes)`, times);
      return;
    }
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + size - 1) / this.cs);
    for (let k = first; k <= last; k++) {
      const prev = this.refs.add(k, times, use);
      // A refcount block used twice is reported by the refcount block check.
      if (prev !== undefined && prev !== Use.RefcountBlock && use !== Use.RefcountBlock) {
        this.col.add({
          kind: 'overlap',
          structure,
          offset: at,
          detail: `host cluster at byte ${k * this.cs} is used both as ${KIND_NAMES[prev]} and as ${KIND_NAMES[use]}`,
          counts: 'none',
        });
      }
    }
  }

  async run(): Promise<CheckResult> {
    const file = this.file;
    // A header the file does not hold cannot be checked (qemu would read zeros for the missing part).
    const first = await file.readExact(0, Math.min(4096, file.size), 'qcow2.header');
    const h = decodeQcow2Header(first, file.path, { allowCorruptBit: true });
    if (file.size < h.header_length) {
      throw new CorruptImageError('TRUNCATED', { file: file.path, structure: 'qcow2.header', offset: file.size, detail: `the file ends inside the header (header_length ${h.header_length}, file ${file.size} bytes)` });
    }
    this.h = h;
    const cs = 2 ** h.cluster_bits;
    this.cs = cs;
    this.extL2 = (h.incompatible_features & QCOW2_INCOMPAT_EXTL2) !== 0n;
    const cluster0 = await file.readUpTo(0, cs);
    const ext = decodeQcow2Extensions(cluster0, h, file.path);
    this.validateOpenable();

    const fileClusters = Math.ceil(file.size / cs);
    if (fileClusters + 1 > MAX_CHECK_CLUSTERS) {
      throw new UnsupportedError('UNSUPPORTED_FEATURE', {
        file: file.path,
        detail: `the file has ${fileClusters} clusters of ${cs} bytes; checking more than ${MAX_CHECK_CLUSTERS} is not supported`,
      });
    }
    this.refs = new ReferenceMap(fileClusters);
    this.budget = 4 * file.size + 64 * 1024 * 1024;

    const reftable = await readZeroFilled(file, h.refcount_table_offset, h.refcount_table_clusters * cs);
    const stored = new StoredRefcounts(file, h, reftable);
    const snapshots = await readQcow2SnapshotTable(file, h);

    // Header cluster (extensions and backing file name live in it).
    this.inc(0, cs, Use.Header, 'qcow2.header', 0);
    await this.walkL1(h.l1_table_offset, h.l1_size, { active: true, structure: 'qcow2.l1_table' });
    for (const [i, s] of snapshots.snapshots.entries()) {
      const structure = `qcow2.snapshot[${i}]`;
      if (s.l1_table_offset % cs !== 0) {
        this.corruption('misaligned', `${structure}.l1_table_offset`, s.entryOffset, `snapshot "${s.name}" L1 table at byte ${s.l1_table_offset} is not cluster-aligned`);
        continue;
      }
      if (s.l1_size * 8 > QCOW2_MAX_L1_SIZE_BYTES) {
        this.corruption('invalid_entry', `${structure}.l1_size`, s.entryOffset + 8, `snapshot "${s.name}" L1 table of ${s.l1_size} entries is larger than 32 MiB`);
        continue;
      }
      await this.walkL1(s.l1_table_offset, s.l1_size, { active: false, structure: `${structure}.l1_table` });
    }
    await this.walkL2Tables();
    this.inc(h.snapshots_offset, snapshots.sizeBytes, Use.SnapshotTable, 'qcow2.snapshot_table', h.snapshots_offset);
    this.inc(h.refcount_table_offset, h.refcount_table_clusters * cs, Use.RefcountTable, 'qcow2.refcount_table', h.refcount_table_offset);
    if (ext.bitmaps !== undefined && (h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) !== 0n && ext.bitmaps.nb_bitmaps > 0) {
      await this.walkBitmaps(ext.bitmaps);
    }
    this.checkRefcountBlocks(stored);
    const { highest } = await this.compare(stored);
    await this.checkCopiedFlags(stored);

    if (h.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
      // qemu set the corrupt bit: our readers refuse the image until `qemu-img check -r all` clears it.
      this.col.add({ kind: 'marked_corrupt', structure: 'qcow2.header.incompatible_features', offset: 72, detail: 'the corrupt bit is set; readers refuse the image until it is repaired (qemu-img check -r all)', counts: 'none' });
    }
    const dirty = (h.incompatible_features & QCOW2_INCOMPAT_DIRTY) !== 0n;
    const errors = dirty ? this.col.errors.map(markStale) : this.col.errors;
    return {
      file: file.path,
      format: 'qcow2',
      clean: this.col.findings === 0,
      dirty,
      corruptions: this.col.corruptions,
      leaks: this.col.leaks,
      errors,
      errorsOmitted: this.col.omitted,
      checkedClusters: this.refs.nb,
      imageEndOffset: (highest + 1) * cs,
    };
  }

  /** What qemu refuses to open at all: the check cannot proceed either. */
  private validateOpenable(): void {
    const h = this.h;
    const cs = this.cs;
    const at = (offset: number, field: string) => ({ file: this.file.path, structure: `qcow2.header.${field}`, offset });
    const span = cs * (cs / (this.extL2 ? 16 : 8));
    const l1Needed = Math.ceil(h.size / span);
    if (h.l1_size < l1Needed) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(36, 'l1_size'), detail: 'L1 table too small for the virtual size', expected: `>= ${l1Needed}`, actual: h.l1_size });
    if (h.l1_size * 8 > QCOW2_MAX_L1_SIZE_BYTES) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(36, 'l1_size'), detail: 'L1 table larger than 32 MiB', actual: h.l1_size });
    if (h.l1_size > 0 && h.l1_table_offset % cs !== 0) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(40, 'l1_table_offset'), detail: 'L1 table not cluster-aligned', actual: h.l1_table_offset });
    if (h.refcount_table_clusters * cs > QCOW2_MAX_REFTABLE_SIZE_BYTES) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(56, 'refcount_table_clusters'), detail: 'refcount table larger than 8 MiB', actual: h.refcount_table_clusters });
    if (h.refcount_table_offset % cs !== 0) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(48, 'refcount_table_offset'), detail: 'refcount table not cluster-aligned', actual: h.refcount_table_offset });
  }

  /** Counts an L1 table and its entries' L2 tables; the L2 tables' contents are walked later, once each. */
  private async walkL1(l1Offset: number, l1Size: number, ctx: { active: boolean; structure: string }): Promise<void> {
    if (l1Size === 0) return;
    this.inc(l1Offset, l1Size * 8, ctx.active ? Use.L1 : Use.SnapshotL1, ctx.structure, l1Offset);
    const bytes = await readInFile(this.file, l1Offset, l1Size * 8);
    this.spend(bytes.length, ctx.structure, l1Offset);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i + 8 <= bytes.length; i += 8) {
      const hi = view.getUint32(i);
      const lo = view.getUint32(i + 4);
      if (hi === 0 && lo === 0) continue;
      const entryOffset = l1Offset + i;
      const structure = `${ctx.structure}[${i / 8}]`;
      if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) {
        this.corruption('reserved_bits', structure, entryOffset, `L1 entry 0x${hex64(hi, lo)} has reserved bits set`);
      }
      const l2Offset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
      if (l2Offset === 0) continue;
      this.inc(l2Offset, this.cs, Use.L2, structure, entryOffset);
      if (l2Offset % this.cs !== 0) {
        this.corruption('misaligned', structure, entryOffset, `L2 table offset ${l2Offset} is not cluster-aligned`);
      }
      const seen = this.l2Refs.get(l2Offset);
      if (seen !== undefined) seen.n++;
      else this.l2Refs.set(l2Offset, { n: 1, structure, offset: entryOffset });
      if (ctx.active) {
        const copied = (hi & 0x80000000) !== 0;
        // OFLAG_COPIED on the L1 entry is checked against the stored refcount later.
        const a = this.activeL2.get(l2Offset) ?? { n: 0, copied: 0, notCopied: 0, entryOffset };
        a.n++;
        if (copied) a.copied++;
        else a.notCopied++;
        this.activeL2.set(l2Offset, a);
      }
    }
  }

  /** Walks every distinct L2 table once, counting its references as many times as L1 entries point at it. */
  private async walkL2Tables(): Promise<void> {
    for (const [l2Offset, ref] of this.l2Refs) {
      const bytes = await readInFile(this.file, l2Offset, this.cs);
      this.spend(bytes.length, 'qcow2.l2_table', l2Offset);
      this.walkL2(bytes, l2Offset, ref.n);
    }
  }

  private walkL2(bytes: Uint8Array, l2Offset: number, times: number): void {
    const cs = this.cs;
    const cb = this.h.cluster_bits;
    const entryBytes = this.extL2 ? 16 : 8;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Compressed descriptor: x = 62 - (cluster_bits - 8) bits of offset, then the sector count.
    const hiOffsetBits = 70 - cb - 32;
    const sectorMask = (1 << (cb - 8)) - 1;
    for (let pos = 0; pos + entryBytes <= bytes.length; pos += entryBytes) {
      const hi = view.getUint32(pos);
      const lo = view.getUint32(pos + 4);
      const zeroBits = this.extL2 ? view.getUint32(pos + 8) : 0;
      const allocBits = this.extL2 ? view.getUint32(pos + 12) : 0;
      if (hi === 0 && lo === 0 && zeroBits === 0 && allocBits === 0) continue;
      const at = l2Offset + pos;
      const structure = 'qcow2.l2_table';
      if (hi & 0x40000000) {
        if (hi & 0x80000000) this.corruption('invalid_entry', structure, at, 'OFLAG_COPIED must never be set on a compressed cluster', times);
        if (zeroBits !== 0 || allocBits !== 0) {
          this.corruption('invalid_entry', structure, at, 'compressed cluster with a non-zero subcluster bitmap', times);
          continue;
        }
        const coffset = (hi & ((1 << hiOffsetBits) - 1)) * TWO_32 + lo;
        const sectors = ((hi >>> hiOffsetBits) & sectorMask) + 1;
        const csize = sectors * 512 - (coffset % 512);
        this.inc(coffset, csize, Use.Compressed, structure, at, times);
        continue;
      }
      if ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0) {
        this.corruption('reserved_bits', structure, at, `L2 entry 0x${hex64(hi, lo)} has reserved bits set`, times);
      }
      const offset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
      const zeroFlag = !this.extL2 && (lo & 1) !== 0;
      if (offset === 0) {
        if (!zeroFlag && allocBits !== 0) this.corruption('invalid_entry', structure, at, 'unallocated cluster with allocated subclusters', times);
        continue;
      }
      if ((zeroBits & allocBits) !== 0) this.corruption('invalid_entry', structure, at, 'a subcluster is marked both allocated and zero', times);
      if (offset % cs !== 0) {
        const hasData = this.extL2 ? allocBits !== 0 : !zeroFlag;
        this.corruption('misaligned', structure, at, `${hasData ? 'data' : 'preallocated zero'} cluster offset ${offset} is not cluster-aligned`, times);
      }
      this.inc(offset, cs, Use.Data, structure, at, times);
    }
  }

  private async walkBitmaps(ext: { nb_bitmaps: number; bitmap_directory_size: number; bitmap_directory_offset: number }): Promise<void> {
    const cs = this.cs;
    this.inc(ext.bitmap_directory_offset, ext.bitmap_directory_size, Use.BitmapDirectory, 'qcow2.bitmap_directory', ext.bitmap_directory_offset);
    let dir;
    try {
      dir = await readQcow2BitmapDirectory(this.file, ext);
    } catch (err) {
      if (!(err instanceof ImgdedupError)) throw err;
      this.corruption('invalid_entry', 'qcow2.bitmap_directory', ext.bitmap_directory_offset, `bitmap directory unreadable: ${err.message}`);
      return;
    }
    for (const [i, bm] of dir.entries()) {
      const structure = `qcow2.bitmap_directory[${i}]`;
      if (bm.bitmap_table_size > MAX_BITMAP_TABLE_ENTRIES || bm.bitmap_table_offset % cs !== 0) {
        this.corruption('invalid_entry', structure, bm.entryOffset, `bitmap "${bm.name}" table (${bm.bitmap_table_size} entries at byte ${bm.bitmap_table_offset}) is misaligned or too large`);
        continue;
      }
      this.inc(bm.bitmap_table_offset, bm.bitmap_table_size * 8, Use.BitmapTable, structure, bm.entryOffset);
      const bytes = await readInFile(this.file, bm.bitmap_table_offset, bm.bitmap_table_size * 8);
      this.spend(bytes.length, 'qcow2.bitmap_table', bm.bitmap_table_offset);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let p = 0; p + 8 <= bytes.length; p += 8) {
        const hi = view.getUint32(p);
        const lo = view.getUint32(p + 4);
        const offset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
        const at = bm.bitmap_table_offset + p;
        // Reserved bits 1-8 and 56-63; "all ones" (bit 0) only without an offset; offsets cluster-aligned.
        if ((hi & 0xff000000) !== 0 || (lo & 0x1fe) !== 0 || (offset !== 0 && ((lo & 1) !== 0 || offset % cs !== 0))) {
          this.corruption('invalid_entry', 'qcow2.bitmap_table', at, `bitmap "${bm.name}" table entry 0x${hex64(hi, lo)} is invalid`);
          continue;
        }
        if (offset !== 0) this.inc(offset, cs, Use.BitmapData, 'qcow2.bitmap_table', at);
      }
    }
  }

  /** Refcount blocks: valid refcount table entries, inside the image, each referenced exactly once. */
  private checkRefcountBlocks(stored: StoredRefcounts): void {
    const cs = this.cs;
    const refmax = 2 ** 2 ** this.h.refcount_order - 1;
    for (let i = 0; i < stored.entries; i++) {
      const { offset, reserved } = stored.entry(i);
      const at = this.h.refcount_table_offset + i * 8;
      const structure = `qcow2.refcount_table[${i}]`;
      if (reserved !== 0) {
        this.corruption('reserved_bits', structure, at, 'refcount table entry has reserved bits set');
        continue;
      }
      if (offset % cs !== 0) {
        this.corruption('misaligned', structure, at, `refcount block offset ${offset} is not cluster-aligned`);
        continue;
      }
      const cluster = Math.floor(offset / cs);
      if (cluster >= this.refs.nb) {
        this.corruption('outside_file', structure, at, `refcount block at byte ${offset} lies outside the image`);
        continue;
      }
      if (offset === 0) continue;
      this.inc(offset, cs, Use.RefcountBlock, structure, at);
      const n = Math.min(this.refs.get(cluster), refmax);
      if (n !== 1) this.corruption('overlap', structure, at, `refcount block at byte ${offset} is referenced ${n} times (it must be used only as this refcount block)`);
    }
  }

  /** Compares computed and stored refcounts over every host cluster; returns the highest cluster in use. */
  private async compare(stored: StoredRefcounts): Promise<{ highest: number }> {
    const cs = this.cs;
    const refmax = 2 ** 2 ** this.h.refcount_order - 1;
    const nb = this.refs.nb;
    let highest = 0;
    for (let blockStart = 0; blockStart < nb; blockStart += stored.perBlock) {
      const block = await stored.block(blockStart / stored.perBlock);
      const end = Math.min(nb, blockStart + stored.perBlock);
      for (let k = blockStart; k < end; k++) {
        const total = this.refs.counts[k] === 0 ? 0 : this.refs.get(k);
        // Refcounts behind a misaligned refcount block cannot be read (reported by the refcount block check).
        if (block === 'unreadable') continue;
        const have = block === null ? 0 : stored.value(block, k - blockStart);
        if (have === 0 && total === 0) continue;
        highest = k;
        let want = total;
        if (total > refmax) {
          // qemu counts every reference past the maximum as a corruption.
          this.corruption('refcount_overflow', 'qcow2.refcount_block', k * cs, `host cluster at byte ${k * cs} has ${total} references, more than the refcount width allows (${refmax})`, total - refmax);
          want = refmax;
        }
        if (have === want) continue;
        if (have < want) {
          this.col.add({
            kind: have === 0 ? 'referenced_free' : 'refcount_mismatch',
            structure: 'qcow2.refcount_block',
            offset: k * cs,
            detail: `host cluster at byte ${k * cs} (${useName(this.refs.uses[k]!)}) has refcount ${have} but ${want} references`,
            counts: 'corruption',
          });
        } else {
          this.col.add({
            kind: 'leak',
            structure: 'qcow2.refcount_block',
            offset: k * cs,
            detail: want === 0 ? `host cluster at byte ${k * cs} has refcount ${have} but is not used` : `host cluster at byte ${k * cs} (${useName(this.refs.uses[k]!)}) has refcount ${have} but only ${want} references`,
            counts: 'leak',
          });
        }
      }
    }
    return { highest };
  }

  /** OFLAG_COPIED in the active L1 and L2 tables must say "refcount == 1" exactly when it is. */
  private async checkCopiedFlags(stored: StoredRefcounts): Promise<void> {
    const cs = this.cs;
    const entryBytes = this.extL2 ? 16 : 8;
    for (const [l2Offset, a] of this.activeL2) {
      const rc = await stored.get(Math.floor(l2Offset / cs));
      if (rc !== undefined) {
        // Count each L1 entry whose flag disagrees (a corrupt L1 may point at one table several times).
        const wrong = rc === 1 ? a.notCopied : a.copied;
        if (wrong > 0) this.corruption('copied_flag', 'qcow2.l1_table', a.entryOffset, `OFLAG_COPIED of the L1 entry for the L2 table at byte ${l2Offset} disagrees with its refcount ${rc}`, wrong);
      }
      const bytes = await readInFile(this.file, l2Offset, cs);
      this.spend(bytes.length, 'qcow2.l2_table', l2Offset);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let pos = 0; pos + entryBytes <= bytes.length; pos += entryBytes) {
        const hi = view.getUint32(pos);
        const lo = view.getUint32(pos + 4);
        if (hi & 0x40000000) continue; // compressed: never OFLAG_COPIED, refcounts shared
        const offset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
        if (offset === 0) continue;
        const drc = await stored.get(Math.floor(offset / cs));
        if (drc === undefined) continue;
        if ((drc === 1) !== ((hi & 0x80000000) !== 0)) {
          this.corruption('copied_flag', 'qcow2.l2_table', l2Offset + pos, `OFLAG_COPIED of the entry for the data cluster at byte ${offset} disagrees with its refcount ${drc}`, a.n);
        }
      }
    }
  }
}

const REFCOUNT_KINDS: ReadonlySet<CheckErrorKind> = new Set(['refcount_mismatch', 'referenced_free', 'leak', 'copied_flag']);

/** On a dirty image, refcount findings are expected staleness (lazy refcounts), not damage. */
function markStale(e: CheckError): CheckError {
  return REFCOUNT_KINDS.has(e.kind) ? { ...e, kind: 'stale_refcount', detail: `stale refcounts (dirty image): ${e.detail}` } : e;
}

function useName(u: number): string {
  return u === CONFLICT ? 'used as several structures' : u === 0 ? 'unused' : KIND_NAMES[u as Use];
}

function hex64(hi: number, lo: number): string {
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}
