/**
 * qcow2 reader (qemu docs/interop/qcow2.rst): versions 2 and 3, cluster sizes
 * 512 B to 2 MiB, standard and extended L2 entries (subclusters), zero clusters,
 * deflate and zstd compressed clusters. One layer of a chain: ranges this image
 * does not store read as zeros here and are answered by ChainDevice from below.
 */
import { LruCache } from '../LruCache.js';
import type { ByteRange, Extent } from '../BlockDevice.js';
import type { BackingRef, DiskImage, FormatDetails } from '../DiskImage.js';
import { ImageFile } from '../ImageFile.js';
import { ByteReader } from '../ByteReader.js';
import { mergeExtents, normalizeRange } from '../extents.js';
import { THREAD_POOL_REQUESTS, runLimited } from '../runLimited.js';
import { CorruptImageError } from '../../errors.js';
import {
  QCOW2_COMPAT_LAZY_REFCOUNTS,
  QCOW2_COMPRESSION_ZSTD,
  QCOW2_INCOMPAT_DIRTY,
  QCOW2_INCOMPAT_EXTL2,
  QCOW2_MAX_L1_SIZE_BYTES,
  QCOW2_MAX_REFTABLE_SIZE_BYTES,
  QCOW2_SUBCLUSTERS_PER_CLUSTER,
} from './constants.js';
import { zstdFrameLength } from './zstdFrame.js';
import { zstdDecompressOffThread } from './zstdPool.js';
import { decodeQcow2Extensions, decodeQcow2Header, describeFeatures, type Qcow2Extensions, type Qcow2Header } from './header.js';

const TWO_32 = 0x1_0000_0000;
/** Clusters decoded per batch of extents (bounds the batch's memory). */
const EXTENT_BATCH_CLUSTERS = 2048;
/** Most compressed bytes fetched by one file read. */
const COMPRESSED_BATCH_BYTES = 4 * 1024 * 1024;
/** Unused bytes between two compressed clusters that one file read still spans. */
const COMPRESSED_GAP_BYTES = 4096;
/** zlib, loaded with the first compressed cluster (most images have none: not at startup). */
let zlib: Promise<typeof import('node:zlib')> | undefined;

/**
 * A deflate-compressed cluster's data (at most `clusterSize` bytes): one output chunk per
 * cluster; Z_SYNC_FLUSH because padding may follow the data.
 */
async function inflateCluster(raw: Uint8Array, clusterSize: number): Promise<Buffer> {
  const z = await (zlib ??= import('node:zlib'));
  const options = { maxOutputLength: clusterSize, chunkSize: Math.max(z.constants.Z_MIN_CHUNK, clusterSize), finishFlush: z.constants.Z_SYNC_FLUSH };
  return new Promise((resolve, reject) => z.inflateRaw(raw, options, (err, out) => (err ? reject(err) : resolve(out))));
}

/** What one guest cluster (or subcluster) maps to. */
export type Qcow2Mapping =
  | { readonly type: 'unallocated' }
  | { readonly type: 'zero'; readonly hostOffset?: number }
  | { readonly type: 'data'; readonly hostOffset: number }
  | { readonly type: 'compressed'; readonly hostOffset: number; readonly hostLength: number };

interface InternalExtent extends Extent {
  /** For compressed clusters: where the compressed bytes are, and the guest cluster start. */
  readonly comp?: { readonly hostOffset: number; readonly hostLength: number; readonly guestCluster: number };
}

export class Qcow2Image implements DiskImage {
  readonly format = 'qcow2' as const;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  /** L2 entries per table. */
  readonly l2Entries: number;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  readonly l2EntryBytes: number;
  readonly subclusterSize: number;
  readonly backing: BackingRef | undefined;
  readonly warnings: string[] = [];
  /** L2 tables read, charged to the budget all caches share. */
  private readonly l2Cache: LruCache<number, Uint8Array>;
  private compressedCache: { guestCluster: number; data: Uint8Array } | undefined;

  private constructor(
    readonly file: ImageFile,
    readonly header: Qcow2Header,
    readonly extensions: Qcow2Extensions,
    /** L1 table: L2 table host offsets (0 = unallocated), flags stripped. */
    readonly l1: Float64Array,
    backingName: string | undefined,
  ) {
    this.clusterSize = 2 ** header.cluster_bits;
    this.extendedL2 = (header.incompatible_features & QCOW2_INCOMPAT_EXTL2) !== 0n;
    this.l2EntryBytes = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.clusterSize / this.l2EntryBytes;
    this.subclusterSize = this.extendedL2 ? this.clusterSize / QCOW2_SUBCLUSTERS_PER_CLUSTER : this.clusterSize;
    this.l2Cache = new LruCache();
    this.backing =
      backingName === undefined
        ? undefined
        : {
            name: backingName,
            structure: 'qcow2.backing_file',
            offset: header.backing_file_offset,
            ...(extensions.backingFormat !== undefined ? { format: extensions.backingFormat } : {}),
          };
    if (header.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
      this.warnings.push(`${file.path}: the dirty bit is set (lazy refcounts were not flushed); refcounts may be stale, data is read as stored`);
    }
  }

  /**
   * Opens a qcow2 image read-only and validates its header and tables.
   * Throws CORRUPT_IMAGE, TRUNCATED, UNSUPPORTED_FEATURE, ENCRYPTED, IMAGE_MARKED_CORRUPT, IO.
   */
  static async open(path: string): Promise<Qcow2Image> {
    const file = await ImageFile.open(path);
    try {
      // Only the bytes the file has: a file cut inside its header is TRUNCATED, not zeros.
      const first = await file.readExact(0, Math.min(4096, file.size), 'qcow2.header');
      const header = decodeQcow2Header(first, path);
      const clusterSize = 2 ** header.cluster_bits;
      const cluster0 = await file.readExact(0, Math.min(clusterSize, file.size), 'qcow2.header');
      const extensions = decodeQcow2Extensions(cluster0, header, path);
      let backingName: string | undefined;
      if (header.backing_file_offset !== 0 && header.backing_file_size > 0) {
        if (header.backing_file_offset < extensions.endOffset - 8) {
          throw new CorruptImageError('CORRUPT_IMAGE', { file: path, structure: 'qcow2.header.backing_file_offset', offset: 8, detail: 'backing file name overlaps the header' });
        }
        const nameBytes = await file.readExact(header.backing_file_offset, header.backing_file_size, 'qcow2.backing_file');
        backingName = new TextDecoder().decode(nameBytes);
      }
      const r = new ByteReader(first, { file: path, structure: 'qcow2.header', base: 0 });
      validateLayout(header, file.size, r);
      const l1 = await readL1(file, header);
      return new Qcow2Image(file, header, extensions, l1, backingName);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  get path(): string {
    return this.file.path;
  }
  get size(): number {
    return this.header.size;
  }
  get fileSize(): number {
    return this.file.size;
  }

  get details(): FormatDetails {
    const h = this.header;
    return {
      version: h.version,
      compat: h.version === 2 ? '0.10' : '1.1',
      clusterSize: this.clusterSize,
      refcountBits: 2 ** h.refcount_order,
      compressionType: h.compression_type === QCOW2_COMPRESSION_ZSTD ? 'zstd' : 'zlib',
      extendedL2: this.extendedL2,
      lazyRefcounts: (h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) !== 0n,
      dirty: (h.incompatible_features & QCOW2_INCOMPAT_DIRTY) !== 0n,
      snapshots: h.nb_snapshots,
      bitmaps: this.extensions.bitmaps?.nb_bitmaps ?? 0,
      incompatibleFeatures: describeFeatures(h.incompatible_features, 'incompatible', this.extensions.featureNames),
      compatibleFeatures: describeFeatures(h.compatible_features, 'compatible', this.extensions.featureNames),
      backingFormat: this.extensions.backingFormat ?? null,
    };
  }

  /** Reads the L2 table that L1 entry `l1Index` points to (undefined if none). Cached. */
  async readL2Table(l1Index: number): Promise<Uint8Array | undefined> {
    const l2Offset = this.l1[l1Index] ?? 0;
    if (l2Offset === 0) return undefined;
    const cached = this.l2Cache.get(l1Index);
    if (cached !== undefined) return cached;
    const table = await this.file.readExact(l2Offset, this.clusterSize, `qcow2.l2_table[${l1Index}]`);
    this.l2Cache.set(l1Index, table);
    return table;
  }

  /**
   * Decodes L2 entry `index` of `table` (at host `tableOffset`) into per-subcluster mappings:
   * 32 with extended L2, except for a compressed cluster, which is one mapping for the whole
   * cluster (it has no subclusters); one without extended L2. Throws CORRUPT_IMAGE naming the
   * entry's byte offset.
   */
  decodeL2Entry(table: Uint8Array, index: number, tableOffset: number): Qcow2Mapping[] {
    const pos = index * this.l2EntryBytes;
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const hi = view.getUint32(pos);
    const lo = view.getUint32(pos + 4);
    const at = { file: this.path, structure: 'qcow2.l2_entry', offset: tableOffset + pos };
    if (hi & 0x40000000) {
      // Compressed: x = 62 - (cluster_bits - 8) bits of offset, then the sector count.
      const x = 70 - this.header.cluster_bits;
      const hiOffsetBits = x - 32;
      const hiOffset = hi & ((1 << hiOffsetBits) - 1);
      if (hiOffset >= 1 << 21) throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: 'compressed cluster offset beyond 2^53' });
      const hostOffset = hiOffset * TWO_32 + lo;
      const sectors = ((hi >>> hiOffsetBits) & ((1 << (this.header.cluster_bits - 8)) - 1)) + 1;
      const hostLength = sectors * 512 - (hostOffset % 512);
      if (hostOffset >= this.file.size) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `compressed cluster at byte ${hostOffset} lies outside the file (${this.file.size} bytes)` });
      }
      if (this.extendedL2 && view.getBigUint64(pos + 8) !== 0n) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: 'compressed cluster with a non-zero subcluster bitmap' });
      }
      // "Extended L2 Entries": compressed clusters have no subclusters; the bitmap is unused
      // (and must be zero, checked above), the whole cluster is the compressed data.
      return [{ type: 'compressed', hostOffset, hostLength: Math.min(hostLength, this.file.size - hostOffset) }];
    }
    const hostOffset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
    if (hostOffset % this.clusterSize !== 0) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `cluster offset ${hostOffset} is not aligned to the cluster size ${this.clusterSize}` });
    }
    if (hostOffset !== 0 && hostOffset >= this.file.size) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `data cluster at byte ${hostOffset} lies outside the file (${this.file.size} bytes)` });
    }
    if (!this.extendedL2) {
      if (lo & 1 && this.header.version === 3) return [hostOffset === 0 ? { type: 'zero' } : { type: 'zero', hostOffset }];
      return [hostOffset === 0 ? { type: 'unallocated' } : { type: 'data', hostOffset }];
    }
    const allocBits = view.getUint32(pos + 12);
    const zeroBits = view.getUint32(pos + 8);
    if ((allocBits & zeroBits) !== 0) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, offset: at.offset + 8, detail: 'a subcluster is marked both allocated and zero' });
    }
    if (hostOffset === 0 && allocBits !== 0) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, offset: at.offset + 8, detail: 'allocated subclusters in an unallocated cluster' });
    }
    const out: Qcow2Mapping[] = [];
    for (let i = 0; i < QCOW2_SUBCLUSTERS_PER_CLUSTER; i++) {
      if (allocBits & (1 << i)) out.push({ type: 'data', hostOffset: hostOffset + i * this.subclusterSize });
      else if (zeroBits & (1 << i)) out.push(hostOffset === 0 ? { type: 'zero' } : { type: 'zero', hostOffset: hostOffset + i * this.subclusterSize });
      else out.push({ type: 'unallocated' });
    }
    return out;
  }

  /**
   * Extents stored by this layer within [start, end), in order, in arrays of at most
   * EXTENT_BATCH_CLUSTERS clusters: the per-cluster work is synchronous, and only a
   * table read awaits. Neighbours that are contiguous in the guest and on the host
   * are merged (compressed clusters never are), so a run is one extent.
   */
  private async *rawExtentBatches(start: number, end: number): AsyncGenerator<InternalExtent[]> {
    const cs = this.clusterSize;
    const span = cs * this.l2Entries; // guest bytes per L2 table
    let pos = start;
    while (pos < end) {
      const l1Index = Math.floor(pos / span);
      const spanEnd = Math.min(end, (l1Index + 1) * span);
      const table = l1Index < this.l1.length ? await this.readL2Table(l1Index) : undefined;
      if (table === undefined) {
        pos = spanEnd;
        continue;
      }
      while (pos < spanEnd) {
        const batchEnd = Math.min(spanEnd, (Math.floor(pos / cs) + EXTENT_BATCH_CLUSTERS) * cs);
        yield this.tableExtents(table, l1Index, pos, batchEnd);
        pos = batchEnd;
      }
    }
  }

  /** The extents that L2 table `l1Index` maps within [start, end), a part of its span. */
  private tableExtents(table: Uint8Array, l1Index: number, start: number, end: number): InternalExtent[] {
    const cs = this.clusterSize;
    const tableOffset = this.l1[l1Index]!;
    // Each extent pushed is a fresh literal, so a merge may grow it in place.
    const out: { -readonly [K in keyof InternalExtent]: InternalExtent[K] }[] = [];
    /** A data or zero run: grows the last extent when it continues it in the guest and on the host (no object then), else a new extent. Compressed extents are never merged. */
    const pushRun = (offset: number, length: number, kind: 'data' | 'zero', host: number | undefined): void => {
      const last = out[out.length - 1];
      const continues =
        last !== undefined && last.comp === undefined && last.kind === kind && last.offset + last.length === offset && (host === undefined ? last.hostOffset === undefined : last.hostOffset !== undefined && last.hostOffset + last.length === host);
      if (continues) last.length += length;
      else out.push(host === undefined ? { offset, length, kind } : { offset, length, kind, hostOffset: host });
    };
    // Standard entries (no extended L2, not compressed) are decoded in place: one per cluster
    // of every read, without the mapping objects decodeL2Entry makes. An entry that fails
    // a check goes through decodeL2Entry, which throws naming it.
    const view = this.extendedL2 ? undefined : new DataView(table.buffer, table.byteOffset, table.byteLength);
    const zeroFlag = this.header.version === 3 ? 1 : 0;
    const fileSize = this.file.size;
    let pos = start;
    while (pos < end) {
      const cluster = Math.floor(pos / cs);
      const clusterStart = cluster * cs;
      const index = cluster - l1Index * this.l2Entries;
      if (view !== undefined) {
        const hi = view.getUint32(index * 8);
        const lo = view.getUint32(index * 8 + 4);
        const hostOffset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
        if ((hi & 0x40000000) === 0 && hostOffset % cs === 0 && (hostOffset === 0 || hostOffset < fileSize)) {
          const e = Math.min(end, clusterStart + cs);
          const zero = (lo & zeroFlag) !== 0;
          if (zero || hostOffset !== 0) pushRun(pos, e - pos, zero ? 'zero' : 'data', hostOffset === 0 ? undefined : hostOffset + (pos - clusterStart));
          pos = e;
          continue;
        }
      }
      const maps = this.decodeL2Entry(table, index, tableOffset);
      const unit = cs / maps.length;
      for (let i = 0; i < maps.length; i++) {
        const s = Math.max(pos, clusterStart + i * unit);
        const e = Math.min(end, clusterStart + (i + 1) * unit);
        if (e <= s) continue;
        const m = maps[i]!;
        const skip = s - (clusterStart + i * unit);
        if (m.type === 'data') pushRun(s, e - s, 'data', m.hostOffset + skip);
        else if (m.type === 'zero') pushRun(s, e - s, 'zero', m.hostOffset !== undefined ? m.hostOffset + skip : undefined);
        else if (m.type === 'compressed') {
          out.push({ offset: s, length: e - s, kind: 'data', compressed: true, comp: { hostOffset: m.hostOffset, hostLength: m.hostLength, guestCluster: clusterStart } });
          break; // one compressed extent covers the whole cluster
        }
      }
      pos = Math.min(end, clusterStart + cs);
    }
    return out;
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = normalizeRange(this.size, range);
    if (r.length === 0) return;
    const self = this;
    yield* mergeExtents(
      (async function* () {
        for await (const batch of self.rawExtentBatches(r.offset, r.offset + r.length)) {
          for (const e of batch) {
            const { comp: _comp, ...pub } = e;
            yield pub;
          }
        }
      })(),
    );
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(out, offset);
    return out;
  }

  /**
   * Fills `target` from guest `offset`: each host-contiguous run is one file read
   * straight into `target`, up to THREAD_POOL_REQUESTS of them in flight; compressed
   * clusters are fetched in batches; everything else is zeroed.
   */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const r = normalizeRange(this.size, { offset, length: target.length });
    const fileReads: (() => Promise<void>)[] = [];
    const compressed: InternalExtent[] = [];
    let settled = 0; // target bytes before this are zeroed or have a read planned
    // L2 table by L2 table (a read is bounded by its target, so each table's extents are
    // taken at once): no generator, and a cached table without waiting.
    const span = this.clusterSize * this.l2Entries;
    const end = r.offset + r.length;
    for (let pos = r.offset; pos < end; ) {
      const l1Index = Math.floor(pos / span);
      const spanEnd = Math.min(end, (l1Index + 1) * span);
      const table = l1Index >= this.l1.length ? undefined : (this.l2Cache.get(l1Index) ?? (await this.readL2Table(l1Index)));
      if (table !== undefined) {
        for (const e of this.tableExtents(table, l1Index, pos, spanEnd)) {
          if (e.kind !== 'data') continue;
          const at = e.offset - offset;
          target.fill(0, settled, at);
          settled = at + e.length;
          if (e.comp !== undefined) compressed.push(e);
          else {
            const dest = target.subarray(at, settled);
            const host = e.hostOffset!;
            fileReads.push(() => this.readData(dest, host));
          }
        }
      }
      pos = spanEnd;
    }
    target.fill(0, settled);
    if (compressed.length === 0) return runLimited(fileReads, THREAD_POOL_REQUESTS);
    // Both settle before a failure is reported, so nothing writes into `target` after this returns.
    const results = await Promise.allSettled([runLimited(fileReads, THREAD_POOL_REQUESTS), this.readCompressed(compressed, target, offset)]);
    for (const res of results) if (res.status === 'rejected') throw res.reason;
  }

  /** Reads a data run; bytes past the end of the file read as zeros. */
  private async readData(dest: Uint8Array, hostOffset: number): Promise<void> {
    const avail = Math.max(0, Math.min(dest.length, this.file.size - hostOffset));
    if (avail > 0) await this.file.readInto(dest.subarray(0, avail), hostOffset);
    if (avail < dest.length) dest.fill(0, avail);
  }

  /**
   * Decompresses `extents` (compressed, ascending) into `target`. Clusters stored back
   * to back, as qemu writes them, are fetched by one file read of at most
   * COMPRESSED_BATCH_BYTES; deflate clusters are inflated on the thread pool, up to
   * THREAD_POOL_REQUESTS at once, so both cores work. The first failure in guest order
   * is reported.
   */
  private async readCompressed(extents: readonly InternalExtent[], target: Uint8Array, offset: number): Promise<void> {
    let i = 0;
    while (i < extents.length) {
      const first = extents[i]!.comp!;
      let hostEnd = first.hostOffset + first.hostLength;
      let j = i + 1;
      for (; j < extents.length; j++) {
        const c = extents[j]!.comp!;
        const end = Math.max(hostEnd, c.hostOffset + c.hostLength);
        if (c.hostOffset < first.hostOffset || c.hostOffset > hostEnd + COMPRESSED_GAP_BYTES || end - first.hostOffset > COMPRESSED_BATCH_BYTES) break;
        hostEnd = end;
      }
      const cached = this.compressedCache;
      const needRead = j - i > 1 || cached?.guestCluster !== first.guestCluster;
      const raw = needRead ? await this.file.readExact(first.hostOffset, hostEnd - first.hostOffset, 'qcow2.compressed_cluster') : undefined;
      const batch = extents.slice(i, j);
      const failures: unknown[] = [];
      let last: { guestCluster: number; data: Uint8Array } | undefined;
      await runLimited(
        batch.map((e, k) => async () => {
          const c = e.comp!;
          try {
            const data =
              cached?.guestCluster === c.guestCluster
                ? cached.data
                : await this.decompressCluster(c, raw!.subarray(c.hostOffset - first.hostOffset, c.hostOffset - first.hostOffset + c.hostLength));
            const from = e.offset - c.guestCluster;
            target.set(data.subarray(from, from + e.length), e.offset - offset);
            if (k === batch.length - 1) last = { guestCluster: c.guestCluster, data };
          } catch (err) {
            failures[k] = err;
          }
        }),
        THREAD_POOL_REQUESTS,
      );
      const failure = failures.find((f) => f !== undefined);
      if (failure !== undefined) throw failure;
      // Kept for the next read: callers often read a cluster piece by piece.
      if (last !== undefined) this.compressedCache = last;
      i = j;
    }
  }

  /** Decompresses one cluster from its stored bytes `raw`. Throws CORRUPT_IMAGE. */
  private async decompressCluster(comp: { hostOffset: number; hostLength: number; guestCluster: number }, raw: Uint8Array): Promise<Uint8Array> {
    const at = { file: this.path, structure: 'qcow2.compressed_cluster', offset: comp.hostOffset };
    let data: Uint8Array;
    try {
      if (this.header.compression_type === QCOW2_COMPRESSION_ZSTD) {
        const frameLength = zstdFrameLength(raw);
        if (frameLength === undefined) throw new Error('not a complete zstd frame');
        data = await zstdDecompressOffThread(raw.subarray(0, frameLength), this.clusterSize);
      } else {
        data = await inflateCluster(raw, this.clusterSize);
      }
    } catch (err) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `compressed cluster does not decompress: ${(err as Error).message}` });
    }
    if (data.length !== this.clusterSize) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: 'compressed cluster decompresses to the wrong size', expected: this.clusterSize, actual: data.length });
    }
    return data;
  }

  async close(): Promise<void> {
    this.l2Cache.clear();
    await this.file.close();
  }
}

/** Checks that the tables the header names lie inside the file and are sane. */
function validateLayout(h: Qcow2Header, fileSize: number, r: ByteReader): void {
  const cs = 2 ** h.cluster_bits;
  const entryBytes = (h.incompatible_features & QCOW2_INCOMPAT_EXTL2) !== 0n ? 16 : 8;
  const span = cs * (cs / entryBytes);
  const l1Needed = Math.ceil(h.size / span);
  if (h.l1_size < l1Needed) r.fail(36, 'l1_size', 'L1 table too small for the virtual size', { expected: `>= ${l1Needed}`, actual: h.l1_size });
  if (h.l1_size * 8 > QCOW2_MAX_L1_SIZE_BYTES) r.fail(36, 'l1_size', 'L1 table larger than 32 MiB', { actual: h.l1_size });
  if (h.l1_size > 0) {
    if (h.l1_table_offset % cs !== 0) r.fail(40, 'l1_table_offset', 'not aligned to a cluster', { actual: h.l1_table_offset });
    if (h.l1_table_offset === 0 || h.l1_table_offset + h.l1_size * 8 > fileSize) {
      r.fail(40, 'l1_table_offset', `L1 table (${h.l1_size * 8} bytes at byte ${h.l1_table_offset}) lies outside the file (${fileSize} bytes)`);
    }
  }
  if (h.refcount_table_offset % cs !== 0 || h.refcount_table_offset === 0) r.fail(48, 'refcount_table_offset', 'not aligned to a cluster (or zero)', { actual: h.refcount_table_offset });
  if (h.refcount_table_clusters * cs > QCOW2_MAX_REFTABLE_SIZE_BYTES) r.fail(56, 'refcount_table_clusters', 'refcount table larger than 8 MiB', { actual: h.refcount_table_clusters });
  if (h.refcount_table_offset + h.refcount_table_clusters * cs > fileSize) {
    r.fail(48, 'refcount_table_offset', `refcount table lies outside the file (${fileSize} bytes)`);
  }
  if (h.nb_snapshots > 0 && (h.snapshots_offset % cs !== 0 || h.snapshots_offset === 0 || h.snapshots_offset >= fileSize)) {
    r.fail(64, 'snapshots_offset', 'snapshot table not aligned or outside the file', { actual: h.snapshots_offset });
  }
}

/** Reads and validates the L1 table; entries become plain L2 offsets. */
async function readL1(file: ImageFile, h: Qcow2Header): Promise<Float64Array> {
  const l1 = new Float64Array(h.l1_size);
  if (h.l1_size === 0) return l1;
  const cs = 2 ** h.cluster_bits;
  const bytes = await file.readExact(h.l1_table_offset, h.l1_size * 8, 'qcow2.l1_table');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < h.l1_size; i++) {
    const hi = view.getUint32(i * 8);
    const lo = view.getUint32(i * 8 + 4);
    const offset = (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
    if (offset === 0) continue;
    const at = { file: file.path, structure: `qcow2.l1_table[${i}]`, offset: h.l1_table_offset + i * 8 };
    if (offset % cs !== 0) throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `L2 table offset ${offset} is not cluster-aligned` });
    if (offset + cs > file.size) throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `L2 table at byte ${offset} lies outside the file (${file.size} bytes)` });
    l1[i] = offset;
  }
  return l1;
}
