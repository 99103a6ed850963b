/**
 * qcow2 writer (qemu docs/interop/qcow2.rst): version 3 images with 16-bit
 * refcounts, any cluster size from 512 B to 2 MiB, optional extended L2 entries
 * (32 subclusters per cluster), an optional backing file with its format recorded.
 *
 * Guest data is appended to the file as it arrives (cluster 0 is kept for the
 * header), in any guest order; only L2 tables that something touched are kept in
 * memory, so memory follows what is written, not the virtual size. commit() plans
 * the metadata after the data (L2 tables, L1 table, refcount table, refcount
 * blocks), writes it while checking the plan, writes the header last, then
 * renames the output into place (AtomicOutput).
 */
import { AtomicOutput, SizingOutput, type OutputFile } from '../AtomicOutput.js';
import type { ImageWriter, ImageWriterSummary } from '../ImageWriter.js';
import { InternalError, UsageError } from '../../errors.js';
import {
  QCOW2_INCOMPAT_EXTL2,
  QCOW2_MAGIC,
  QCOW2_MAX_BACKING_FILE_SIZE,
  QCOW2_MAX_CLUSTER_BITS,
  QCOW2_MAX_L1_SIZE_BYTES,
  QCOW2_MAX_REFTABLE_SIZE_BYTES,
  QCOW2_MIN_CLUSTER_BITS,
  QCOW2_OFLAG_COPIED,
  QCOW2_OFLAG_ZERO,
  QCOW2_SUBCLUSTERS_PER_CLUSTER,
  QCOW2_WRITER_HEADER_LENGTH,
  QCOW2_WRITER_REFCOUNT_ORDER,
  QCOW2_MIN_SUBCLUSTER_SIZE,
} from './constants.js';
import { encodeQcow2Extensions, encodeQcow2Header } from './header.js';
import { planRefcounts } from './refcounts.js';

export interface Qcow2WriterOptions {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Cluster size in bytes, a power of two from 512 B to 2 MiB. Default 64 KiB. */
  readonly clusterSize?: number;
  /** Use extended L2 entries (32 subclusters per cluster; clusters of at least 16 KiB). */
  readonly extendedL2?: boolean;
  /** Backing file: `name` is recorded as given (relative to the output's directory). */
  readonly backing?: { readonly name: string; readonly format?: string };
  /** Replace an existing output. Default: refuse with OUTPUT_EXISTS. */
  readonly overwrite?: boolean;
  /** Write nothing: commit reports the file that would have been made (see SizingOutput). */
  readonly sizeOnly?: boolean;
}

/** Mapping state of the guest clusters covered by one L2 table. */
interface L2State {
  /** Host offset of each cluster (0 = no host cluster). */
  readonly host: Float64Array;
  /** Per cluster, bit i set: unit i holds data at host + i * unitSize. */
  readonly alloc: Uint32Array;
  /** Per cluster, bit i set: unit i reads as zeros. */
  readonly zero: Uint32Array;
}

/** Largest buffer commit() assembles before writing metadata. */
const METADATA_WRITE_BYTES = 8 * 1024 * 1024;

export class Qcow2Writer implements ImageWriter {
  readonly unitSize: number;
  readonly unitsPerCluster: number;
  readonly l2Entries: number;
  readonly hasBacking: boolean;
  private readonly clusterBits: number;
  private readonly l1Size: number;
  private readonly tables = new Map<number, L2State>();
  /** Next free host byte for guest data; cluster 0 holds the header. */
  private hostCursor: number;
  /** Highest host byte written so far (checked against the final layout). */
  private hostWrittenEnd = 0;
  private bytesWritten = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(
    private readonly out: OutputFile,
    readonly size: number,
    readonly clusterSize: number,
    readonly extendedL2: boolean,
    readonly backing: { readonly name: string; readonly format?: string } | undefined,
    /** Bytes of cluster 0: header, extensions, backing file name. */
    private readonly headerArea: { readonly extensions: Uint8Array; readonly backingName: Uint8Array },
  ) {
    this.clusterBits = Math.log2(clusterSize);
    this.unitsPerCluster = extendedL2 ? QCOW2_SUBCLUSTERS_PER_CLUSTER : 1;
    this.unitSize = clusterSize / this.unitsPerCluster;
    this.l2Entries = clusterSize / (extendedL2 ? 16 : 8);
    this.l1Size = Math.ceil(size / (clusterSize * this.l2Entries));
    this.hostCursor = clusterSize;
    this.hasBacking = backing !== undefined;
  }

  /**
   * Creates the temporary output for a new image. Throws USAGE for options qemu
   * could not open (cluster size, extended L2 below 16 KiB clusters, backing name
   * too long for the first cluster, virtual size too large), OUTPUT_EXISTS, IO.
   */
  static async create(path: string, options: Qcow2WriterOptions): Promise<Qcow2Writer> {
    const clusterSize = options.clusterSize ?? 65536;
    const extendedL2 = options.extendedL2 ?? false;
    const bits = Math.log2(clusterSize);
    if (!Number.isInteger(bits) || bits < QCOW2_MIN_CLUSTER_BITS || bits > QCOW2_MAX_CLUSTER_BITS) {
      throw new UsageError(`cluster size must be a power of two from 512 B to 2 MiB (got ${clusterSize})`, { file: path });
    }
    if (extendedL2 && clusterSize / QCOW2_SUBCLUSTERS_PER_CLUSTER < QCOW2_MIN_SUBCLUSTER_SIZE) {
      throw new UsageError(`extended L2 entries need clusters of at least ${QCOW2_MIN_SUBCLUSTER_SIZE * QCOW2_SUBCLUSTERS_PER_CLUSTER} bytes (got ${clusterSize})`, { file: path });
    }
    if (!Number.isSafeInteger(options.size) || options.size < 0) {
      throw new UsageError(`virtual size must be a non-negative integer (got ${options.size})`, { file: path });
    }
    const span = clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
    if (Math.ceil(options.size / span) * 8 > QCOW2_MAX_L1_SIZE_BYTES) {
      throw new UsageError(`virtual size ${options.size} needs an L1 table above 32 MiB with ${clusterSize}-byte clusters`, { file: path });
    }
    const enc = new TextEncoder();
    const backingName = enc.encode(options.backing?.name ?? '');
    if (options.backing !== undefined && (backingName.length === 0 || backingName.length > QCOW2_MAX_BACKING_FILE_SIZE)) {
      throw new UsageError(`backing file name must be 1 to ${QCOW2_MAX_BACKING_FILE_SIZE} bytes`, { file: path });
    }
    const extensions = encodeQcow2Extensions(options.backing?.format !== undefined ? { backingFormat: options.backing.format } : {});
    if (QCOW2_WRITER_HEADER_LENGTH + extensions.length + backingName.length > clusterSize) {
      throw new UsageError(`header, extensions and backing file name do not fit in one ${clusterSize}-byte cluster`, { file: path });
    }
    const out = options.sizeOnly ? new SizingOutput(path) : await AtomicOutput.create(path, options.overwrite ? { overwrite: true } : {});
    return new Qcow2Writer(out, options.size, clusterSize, extendedL2, options.backing, { extensions, backingName });
  }

  get path(): string {
    return this.out.path;
  }

  /** Host clusters allocated so far for guest data. */
  get dataClusters(): number {
    return this.hostCursor / this.clusterSize - 1;
  }

  private checkRange(op: string, offset: number, length: number): void {
    if (this.state !== 'open') throw new InternalError(`Qcow2Writer.${op} after ${this.state === 'committed' ? 'commit' : 'abort'}`, { file: this.path });
    const end = offset + length;
    const ok =
      Number.isSafeInteger(offset) &&
      Number.isSafeInteger(length) &&
      offset >= 0 &&
      length > 0 &&
      end <= this.size &&
      offset % this.unitSize === 0 &&
      (length % this.unitSize === 0 || end === this.size);
    if (!ok) {
      throw new InternalError(`Qcow2Writer.${op}: range must lie within the disk and be aligned to ${this.unitSize} bytes`, { file: this.path, guestOffset: offset, length });
    }
  }

  private table(l1Index: number): L2State {
    let t = this.tables.get(l1Index);
    if (t === undefined) {
      t = { host: new Float64Array(this.l2Entries), alloc: new Uint32Array(this.l2Entries), zero: new Uint32Array(this.l2Entries) };
      this.tables.set(l1Index, t);
    }
    return t;
  }

  /** Bit mask of the units of a cluster that [start, end) (guest bytes, within the cluster) covers. */
  private unitMask(clusterStart: number, start: number, end: number): number {
    const first = (start - clusterStart) / this.unitSize;
    const last = Math.ceil((end - clusterStart) / this.unitSize); // exclusive; a tail may end mid-unit
    const count = last - first;
    return count >= 32 ? 0xffffffff : (((1 << count) - 1) << first) >>> 0;
  }

  /**
   * The per-cluster pieces of guest range [start, end): the cluster's L2 state (`t`, `i`),
   * the piece's bounds and the mask of the units it covers.
   */
  private *clusterPieces(start: number, end: number): Generator<{ t: L2State; i: number; clusterStart: number; pos: number; pieceEnd: number; mask: number }> {
    const cs = this.clusterSize;
    let pos = start;
    while (pos < end) {
      const cluster = Math.floor(pos / cs);
      const clusterStart = cluster * cs;
      const pieceEnd = Math.min(end, clusterStart + cs);
      const t = this.table(Math.floor(cluster / this.l2Entries));
      yield { t, i: cluster % this.l2Entries, clusterStart, pos, pieceEnd, mask: this.unitMask(clusterStart, pos, pieceEnd) };
      pos = pieceEnd;
    }
  }

  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    this.checkRange('write', guestOffset, data.length);
    // Coalesce pieces that are contiguous on the host (new clusters are appended in order).
    let runHost = -1;
    let runFrom = 0;
    let runLen = 0;
    for (const { t, i, clusterStart, pos, pieceEnd, mask } of this.clusterPieces(guestOffset, guestOffset + data.length)) {
      if (t.host[i] === 0) {
        t.host[i] = this.hostCursor;
        this.hostCursor += this.clusterSize;
      }
      t.alloc[i] = (t.alloc[i]! | mask) >>> 0;
      t.zero[i] = (t.zero[i]! & ~mask) >>> 0;
      const host = t.host[i]! + (pos - clusterStart);
      if (runLen > 0 && runHost + runLen === host) {
        runLen += pieceEnd - pos;
      } else {
        if (runLen > 0) await this.writeHost(runHost, data.subarray(runFrom, runFrom + runLen));
        runHost = host;
        runFrom = pos - guestOffset;
        runLen = pieceEnd - pos;
      }
    }
    if (runLen > 0) await this.writeHost(runHost, data.subarray(runFrom, runFrom + runLen));
    this.bytesWritten += data.length;
  }

  async writeZeros(offset: number, length: number): Promise<void> {
    this.checkRange('writeZeros', offset, length);
    for (const { t, i, mask } of this.clusterPieces(offset, offset + length)) {
      // A host cluster already given to this guest cluster stays referenced (a
      // "preallocated zero" cluster without extended L2), so nothing leaks.
      t.alloc[i] = (t.alloc[i]! & ~mask) >>> 0;
      t.zero[i] = (t.zero[i]! | mask) >>> 0;
    }
    await Promise.resolve();
  }

  private async writeHost(hostOffset: number, data: Uint8Array): Promise<void> {
    await this.out.write(hostOffset, data);
    this.hostWrittenEnd = Math.max(this.hostWrittenEnd, hostOffset + data.length);
  }

  /** Encodes L2 entry `i` of `t` into `view` at `pos` (qcow2.rst, "Standard Cluster Descriptor", "Extended L2 Entries"). */
  private encodeL2Entry(view: DataView, pos: number, t: L2State, i: number): void {
    const host = t.host[i]!;
    const alloc = t.alloc[i]!;
    const zero = t.zero[i]!;
    // Refcounts are all 1 (nothing is shared), so every host cluster gets COPIED.
    let word = host !== 0 ? BigInt(host) | QCOW2_OFLAG_COPIED : 0n;
    if (this.extendedL2) {
      view.setBigUint64(pos, word);
      // Bitmap: bits 0-31 allocation, bits 32-63 "reads as zeros".
      view.setUint32(pos + 8, zero);
      view.setUint32(pos + 12, alloc);
      return;
    }
    if (alloc === 0 && zero !== 0) word |= QCOW2_OFLAG_ZERO;
    view.setBigUint64(pos, word);
  }

  async commit(): Promise<ImageWriterSummary> {
    if (this.state !== 'open') throw new InternalError(`Qcow2Writer.commit after ${this.state === 'committed' ? 'commit' : 'abort'}`, { file: this.path });
    try {
      const summary = await this.writeMetadata();
      await this.out.commit();
      this.state = 'committed';
      return summary;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  private async writeMetadata(): Promise<ImageWriterSummary> {
    const cs = this.clusterSize;
    // Plan.
    const dataEnd = this.hostCursor;
    const l1Indexes = [...this.tables.keys()].sort((a, b) => a - b);
    const l2Offset = new Map<number, number>();
    l1Indexes.forEach((l1Index, k) => l2Offset.set(l1Index, dataEnd + k * cs));
    const l1TableOffset = this.l1Size > 0 ? dataEnd + l1Indexes.length * cs : 0;
    const l1Clusters = Math.ceil((this.l1Size * 8) / cs);
    const baseClusters = (dataEnd + (l1Indexes.length + l1Clusters) * cs) / cs;
    const rc = planRefcounts(baseClusters, cs, QCOW2_WRITER_REFCOUNT_ORDER);
    if (rc.refcountTableClusters * cs > QCOW2_MAX_REFTABLE_SIZE_BYTES) {
      throw new InternalError('refcount table would exceed 8 MiB', { file: this.path, clusters: rc.refcountTableClusters });
    }
    const refcountTableOffset = baseClusters * cs;
    const refblocksOffset = refcountTableOffset + rc.refcountTableClusters * cs;
    const fileSize = rc.totalClusters * cs;
    if (this.hostWrittenEnd > dataEnd) throw new InternalError('guest data was written past the data area', { file: this.path, actual: this.hostWrittenEnd, expected: dataEnd });

    // Write, checking each section starts where the plan put it.
    let cursor = dataEnd;
    let batch: Uint8Array[] = [];
    let batchStart = cursor;
    let batchBytes = 0;
    const flush = async () => {
      if (batchBytes === 0) return;
      const buf = batch.length === 1 ? batch[0]! : concat(batch, batchBytes);
      await this.writeHost(batchStart, buf);
      batchStart += batchBytes;
      batch = [];
      batchBytes = 0;
    };
    const emit = async (bytes: Uint8Array, structure: string, plannedOffset: number) => {
      if (cursor !== plannedOffset || bytes.length % cs !== 0) {
        throw new InternalError(`qcow2 layout mismatch writing ${structure}`, { file: this.path, expected: plannedOffset, actual: cursor });
      }
      batch.push(bytes);
      batchBytes += bytes.length;
      cursor += bytes.length;
      if (batchBytes >= METADATA_WRITE_BYTES) await flush();
    };

    const entryBytes = this.extendedL2 ? 16 : 8;
    for (const l1Index of l1Indexes) {
      const t = this.tables.get(l1Index)!;
      const table = new Uint8Array(cs);
      const view = new DataView(table.buffer);
      for (let i = 0; i < this.l2Entries; i++) {
        if (t.host[i] !== 0 || t.alloc[i] !== 0 || t.zero[i] !== 0) this.encodeL2Entry(view, i * entryBytes, t, i);
      }
      await emit(table, `l2_table[${l1Index}]`, l2Offset.get(l1Index)!);
    }
    if (this.l1Size > 0) {
      const l1 = new Uint8Array(l1Clusters * cs);
      const view = new DataView(l1.buffer);
      for (const [l1Index, offset] of l2Offset) view.setBigUint64(l1Index * 8, BigInt(offset) | QCOW2_OFLAG_COPIED);
      await emit(l1, 'l1_table', l1TableOffset);
    }
    const reftable = new Uint8Array(rc.refcountTableClusters * cs);
    const reftableView = new DataView(reftable.buffer);
    for (let b = 0; b < rc.refcountBlocks; b++) reftableView.setBigUint64(b * 8, BigInt(refblocksOffset + b * cs));
    await emit(reftable, 'refcount_table', refcountTableOffset);
    // Every host cluster below the end is used exactly once: refcount 1 (16-bit entries).
    const entriesPerBlock = cs / 2;
    for (let b = 0; b < rc.refcountBlocks; b++) {
      const block = new Uint8Array(cs);
      const n = Math.min(entriesPerBlock, rc.totalClusters - b * entriesPerBlock);
      for (let k = 0; k < n; k++) block[k * 2 + 1] = 1;
      await emit(block, `refcount_block[${b}]`, refblocksOffset + b * cs);
    }
    await flush();
    if (cursor !== fileSize) throw new InternalError('qcow2 layout mismatch at the end of the metadata', { file: this.path, expected: fileSize, actual: cursor });

    // Header last: cluster 0 holds header, extensions, then the backing file name.
    const { extensions, backingName } = this.headerArea;
    const backingOffset = this.backing !== undefined ? QCOW2_WRITER_HEADER_LENGTH + extensions.length : 0;
    const header = encodeQcow2Header({
      magic: QCOW2_MAGIC,
      version: 3,
      backing_file_offset: backingOffset,
      backing_file_size: backingName.length,
      cluster_bits: this.clusterBits,
      size: this.size,
      crypt_method: 0,
      l1_size: this.l1Size,
      l1_table_offset: l1TableOffset,
      refcount_table_offset: refcountTableOffset,
      refcount_table_clusters: rc.refcountTableClusters,
      nb_snapshots: 0,
      snapshots_offset: 0,
      incompatible_features: this.extendedL2 ? QCOW2_INCOMPAT_EXTL2 : 0n,
      compatible_features: 0n,
      autoclear_features: 0n,
      refcount_order: QCOW2_WRITER_REFCOUNT_ORDER,
      header_length: QCOW2_WRITER_HEADER_LENGTH,
      compression_type: 0,
    });
    if (header.length !== QCOW2_WRITER_HEADER_LENGTH) throw new InternalError('qcow2 header length mismatch', { file: this.path, expected: QCOW2_WRITER_HEADER_LENGTH, actual: header.length });
    const cluster0 = new Uint8Array(cs);
    cluster0.set(header, 0);
    cluster0.set(extensions, header.length);
    cluster0.set(backingName, backingOffset);
    await this.writeHost(0, cluster0);
    if (this.hostWrittenEnd !== fileSize) throw new InternalError('qcow2 file does not end where planned', { file: this.path, expected: fileSize, actual: this.hostWrittenEnd });
    return { path: this.path, fileSize, bytesWritten: this.bytesWritten, clustersWritten: this.dataClusters };
  }

  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    this.tables.clear();
    await this.out.abort();
  }
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
