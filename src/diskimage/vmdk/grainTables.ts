/**
 * One hosted sparse extent (VMDK 5.0, "Hosted Sparse Extent" and
 * "Stream-Optimized Compressed Sparse Extents"): its header, its grain directory
 * (the primary, or the redundant copy when the primary is damaged, with a
 * warning), lazily read grain tables, and grain reads including zlib-compressed
 * grains behind markers. Offsets in the structures count sectors; this module
 * turns them into bytes and checks each against the file size before using it.
 */
import { LruCache } from '../LruCache.js';
import { THREAD_POOL_REQUESTS } from '../runLimited.js';
import { inflate, inflateSync, constants as zlibConstants, type ZlibOptions } from 'node:zlib';
import type { ImageFile } from '../ImageFile.js';
import { CorruptImageError, ImgdedupError, RefusedError } from '../../errors.js';
import { decodeSparseHeader, type SparseExtentHeader } from './sparseHeader.js';
import {
  VMDK4_FLAG_COMPRESS,
  VMDK4_FLAG_MARKER,
  VMDK4_FLAG_RGD,
  VMDK4_GDE_SIZE,
  VMDK4_GTE_UNALLOCATED,
  VMDK4_GTE_ZEROED,
  VMDK4_HEADER_SIZE,
  VMDK_GRAIN_MARKER_HEADER_SIZE,
  VMDK_MARKER_FOOTER,
  VMDK_SECTOR_SIZE,
} from './constants.js';

/** Refuse grain directories larger than this (bounds an allocation a header drives). */
const MAX_GD_BYTES = 64 * 1024 * 1024;

/**
 * Runs of compressed grains are fetched with one file read of at most this many bytes
 * (plus one grain's slack): per-grain reads of a marker and then its data made
 * stream-optimized reads wait on I/O round trips, not on inflation.
 */
const BATCH_READ_BYTES = 4 * 1024 * 1024;
/** Batching applies to grains up to this size; larger grains are read one by one (bounds the slack read). */
const BATCH_MAX_GRAIN_BYTES = 1024 * 1024;

/** A compressed grain to read: its grain number in the extent and the host offset its GTE names. */
export interface CompressedGrainRef {
  readonly index: number;
  readonly hostOffset: number;
}

/** An inflation's outcome, held so that a failure is reported in grain order and never goes unhandled. */
type Inflated = { readonly ok: true; readonly data: Uint8Array } | { readonly ok: false; readonly error: Error };

/**
 * A grain that did not shrink by an eighth is (nearly) all stored deflate blocks, and
 * inflating it is a copy: cheaper here than a hop to the thread pool and back.
 */
const STORED_RATIO = 7 / 8;

function inflateNow(raw: Uint8Array, options: ZlibOptions): Promise<Inflated> {
  try {
    return Promise.resolve({ ok: true, data: inflateSync(raw, options) });
  } catch (error) {
    return Promise.resolve({ ok: false, error: error as Error });
  }
}

function inflateSettled(raw: Uint8Array, options: ZlibOptions): Promise<Inflated> {
  return new Promise((done) => {
    inflate(raw, options, (error, data) => done(error === null ? { ok: true, data } : { ok: false, error }));
  });
}

/** What one grain maps to. `hostOffset` is a byte offset in the extent file. */
export type GrainMapping =
  | { readonly type: 'unallocated' }
  | { readonly type: 'zero' }
  | { readonly type: 'data'; readonly hostOffset: number }
  | { readonly type: 'compressed'; readonly hostOffset: number };

export interface SparseExtentOpenOptions {
  /** Warnings found while opening are appended here. */
  readonly warnings: string[];
}

export class SparseExtent {
  /** Bytes per grain. */
  readonly grainBytes: number;
  /** Guest bytes one grain table covers. */
  readonly gtSpanBytes: number;
  readonly hasMarkers: boolean;
  readonly compressed: boolean;
  /** Grain tables read, charged to the budget all caches share. */
  private readonly gtCache: LruCache<number, Uint32Array>;
  private compressedCache: { grain: number; data: Uint8Array } | undefined;

  private constructor(
    readonly file: ImageFile,
    /** The header that governs reading (the footer's copy for stream-optimized extents). */
    readonly header: SparseExtentHeader,
    /** Grain directory: grain table sector offsets (0 = no table). */
    readonly gd: Uint32Array,
    /** Absolute byte offset of the grain directory in use. */
    readonly gdByteOffset: number,
    /** Which copy is in use. */
    readonly gdSource: 'primary' | 'redundant',
  ) {
    this.grainBytes = header.grainSize * VMDK_SECTOR_SIZE;
    this.gtSpanBytes = this.grainBytes * header.numGTEsPerGT;
    this.gtCache = new LruCache();
    this.hasMarkers = (header.flags & VMDK4_FLAG_MARKER) !== 0;
    this.compressed = (header.flags & VMDK4_FLAG_COMPRESS) !== 0;
  }

  get path(): string {
    return this.file.path;
  }
  /** Extent size in bytes. */
  get capacityBytes(): number {
    return this.header.capacity * VMDK_SECTOR_SIZE;
  }

  /**
   * Reads and validates the extent's header (and footer) and grain directory.
   * Throws CORRUPT_IMAGE, TRUNCATED, UNCLEAN_SHUTDOWN, UNSUPPORTED_FORMAT, UNSUPPORTED_FEATURE, IO.
   */
  static async open(file: ImageFile, options: SparseExtentOpenOptions, headerBytes?: Uint8Array): Promise<SparseExtent> {
    const first = headerBytes ?? (await file.readExact(0, VMDK4_HEADER_SIZE, 'vmdk.header'));
    let header = decodeSparseHeader(first, { file: file.path });
    if (header.uncleanShutdown) {
      throw new RefusedError('UNCLEAN_SHUTDOWN', {
        file: file.path,
        structure: 'vmdk.header.uncleanShutdown',
        offset: 72,
        detail: 'the extent was not closed cleanly (uncleanShutdown is set); its grain tables may be inconsistent',
      });
    }
    if (header.capacity * VMDK_SECTOR_SIZE > Number.MAX_SAFE_INTEGER) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: file.path, structure: 'vmdk.header.capacity', offset: 12, detail: 'capacity too large' });
    }
    let headerBase = 0;
    if (header.gdOffset === undefined) {
      // GD_AT_END: the footer (a footer marker, a header copy, then end-of-stream) holds the real gdOffset.
      const footerAt = file.size - 3 * VMDK_SECTOR_SIZE;
      const at = { file: file.path, structure: 'vmdk.footer', offset: Math.max(0, footerAt) };
      if ((header.flags & VMDK4_FLAG_MARKER) === 0 || footerAt < VMDK4_HEADER_SIZE) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file: file.path, structure: 'vmdk.header.gdOffset', offset: 56, detail: 'gdOffset is GD_AT_END but the extent has no footer' });
      }
      const marker = await file.readExact(footerAt, VMDK_SECTOR_SIZE, 'vmdk.footer.marker');
      const mv = new DataView(marker.buffer, marker.byteOffset, marker.byteLength);
      if (mv.getUint32(8, true) !== 0 || mv.getUint32(12, true) !== VMDK_MARKER_FOOTER) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: 'no footer marker 1536 bytes before the end of the file', expected: VMDK_MARKER_FOOTER, actual: mv.getUint32(12, true) });
      }
      headerBase = footerAt + VMDK_SECTOR_SIZE;
      header = decodeSparseHeader(await file.readExact(headerBase, VMDK4_HEADER_SIZE, 'vmdk.footer'), { file: file.path, base: headerBase, structure: 'vmdk.footer' });
      if (header.gdOffset === undefined) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file: file.path, structure: 'vmdk.footer.gdOffset', offset: headerBase + 56, detail: 'the footer has no grain directory offset either' });
      }
    }
    const gdEntries = Math.ceil(header.capacity / (header.grainSize * header.numGTEsPerGT));
    const gdBytes = gdEntries * VMDK4_GDE_SIZE;
    if (gdBytes > MAX_GD_BYTES) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: file.path, structure: 'vmdk.header.capacity', offset: headerBase + 12, detail: `grain directory of ${gdBytes} bytes is too large` });
    }
    const gtBytes = header.numGTEsPerGT * VMDK4_GDE_SIZE;
    const tryGd = async (sector: number, fieldOffset: number, name: string): Promise<Uint32Array> => {
      const fieldAt = { file: file.path, structure: `vmdk.header.${name}`, offset: headerBase + fieldOffset };
      if (sector === 0 || sector * VMDK_SECTOR_SIZE + gdBytes > file.size) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...fieldAt, detail: `grain directory (${gdBytes} bytes at sector ${sector}) lies outside the file (${file.size} bytes)` });
      }
      const raw = await file.readExact(sector * VMDK_SECTOR_SIZE, gdBytes, `vmdk.${name === 'gdOffset' ? 'gd' : 'rgd'}`);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const gd = new Uint32Array(gdEntries);
      for (let i = 0; i < gdEntries; i++) {
        const gt = view.getUint32(i * 4, true);
        if (gt !== 0 && gt * VMDK_SECTOR_SIZE + gtBytes > file.size) {
          throw new CorruptImageError('CORRUPT_IMAGE', {
            file: file.path,
            structure: `vmdk.${name === 'gdOffset' ? 'gd' : 'rgd'}[${i}]`,
            offset: sector * VMDK_SECTOR_SIZE + i * 4,
            detail: `grain table (${gtBytes} bytes at sector ${gt}) lies outside the file (${file.size} bytes)`,
          });
        }
        gd[i] = gt;
      }
      return gd;
    };
    try {
      const gd = await tryGd(header.gdOffset, 56, 'gdOffset');
      return new SparseExtent(file, header, gd, header.gdOffset * VMDK_SECTOR_SIZE, 'primary');
    } catch (primaryErr) {
      if (!(primaryErr instanceof ImgdedupError) || (header.flags & VMDK4_FLAG_RGD) === 0 || header.rgdOffset === 0) throw primaryErr;
      let rgd: Uint32Array;
      try {
        rgd = await tryGd(header.rgdOffset, 48, 'rgdOffset');
      } catch {
        throw primaryErr;
      }
      options.warnings.push(`${file.path}: the primary grain directory is damaged (${primaryErr.message}); using the redundant grain directory`);
      return new SparseExtent(file, header, rgd, header.rgdOffset * VMDK_SECTOR_SIZE, 'redundant');
    }
  }

  /** The grain table for GD entry `gdIndex`, or undefined if it has none. Cached. */
  async readGrainTable(gdIndex: number): Promise<Uint32Array | undefined> {
    const sector = this.gd[gdIndex] ?? 0;
    if (sector === 0) return undefined;
    const cached = this.gtCache.get(gdIndex);
    if (cached !== undefined) return cached;
    const n = this.header.numGTEsPerGT;
    const raw = await this.file.readExact(sector * VMDK_SECTOR_SIZE, n * 4, `vmdk.gt[${gdIndex}]`);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const gt = new Uint32Array(n);
    for (let i = 0; i < n; i++) gt[i] = view.getUint32(i * 4, true);
    this.gtCache.set(gdIndex, gt);
    return gt;
  }

  /**
   * Maps grain `grain` (guest byte grain * grainBytes within this extent).
   * Throws CORRUPT_IMAGE naming the GTE's byte offset if it points outside the file.
   */
  async lookup(grain: number): Promise<GrainMapping> {
    const n = this.header.numGTEsPerGT;
    const gdIndex = Math.floor(grain / n);
    const gt = await this.readGrainTable(gdIndex);
    if (gt === undefined) return { type: 'unallocated' };
    const gte = gt[grain % n]!;
    if (gte === VMDK4_GTE_UNALLOCATED) return { type: 'unallocated' };
    if (gte === VMDK4_GTE_ZEROED) return { type: 'zero' };
    const hostOffset = gte * VMDK_SECTOR_SIZE;
    const isCompressed = this.compressed || this.hasMarkers;
    const needed = isCompressed ? VMDK_GRAIN_MARKER_HEADER_SIZE : Math.min(this.grainBytes, this.capacityBytes - grain * this.grainBytes);
    if (hostOffset + needed > this.file.size || gte < 1) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file: this.path,
        structure: `vmdk.gt[${gdIndex}][${grain % n}]`,
        offset: this.gd[gdIndex]! * VMDK_SECTOR_SIZE + (grain % n) * 4,
        detail: `grain at sector ${gte} lies outside the file (${this.file.size} bytes)`,
      });
    }
    return isCompressed ? { type: 'compressed', hostOffset } : { type: 'data', hostOffset };
  }

  /** Decompresses the grain stored at `hostOffset` (a grain marker, or bare zlib data). */
  async readCompressedGrain(grain: number, hostOffset: number): Promise<Uint8Array> {
    if (this.compressedCache?.grain === grain) return this.compressedCache.data;
    const raw = await this.compressedBytes(grain, hostOffset, undefined);
    let data: Uint8Array;
    try {
      data = inflateSync(raw, this.inflateOptions());
    } catch (err) {
      throw this.inflateError(hostOffset, err as Error);
    }
    return this.acceptInflated(grain, hostOffset, data);
  }

  /**
   * Decompresses several grains, in order: a run of grains whose markers follow each
   * other in the file is fetched with one read, and up to THREAD_POOL_REQUESTS grains
   * inflate at once on the thread pool. Returns the same bytes, and throws the same
   * error (the first in the given order), as readCompressedGrain on each in turn.
   */
  async readCompressedGrains(refs: readonly CompressedGrainRef[]): Promise<Uint8Array[]> {
    if (!this.hasMarkers || this.grainBytes > BATCH_MAX_GRAIN_BYTES || refs.length < 2) {
      const out: Uint8Array[] = [];
      for (const r of refs) out.push(await this.readCompressedGrain(r.index, r.hostOffset));
      return out;
    }
    const cached = this.compressedCache;
    const pending: (Promise<Inflated> | Uint8Array)[] = [];
    const settle = async (k: number): Promise<Uint8Array> => {
      const p = pending[k]!;
      if (p instanceof Uint8Array) return p;
      const r = await p;
      if (!r.ok) throw this.inflateError(refs[k]!.hostOffset, r.error);
      return this.acceptInflated(refs[k]!.index, refs[k]!.hostOffset, r.data);
    };
    // Plan the file reads: a run of grains whose markers follow each other in the file,
    // up to BATCH_READ_BYTES (plus one grain's slack past the last marker).
    const record = VMDK_GRAIN_MARKER_HEADER_SIZE + this.grainBytes + VMDK_SECTOR_SIZE;
    const batches: { start: number; end: number }[] = [];
    const batchOf: number[] = [];
    for (let k = 0; k < refs.length; k++) {
      const h = refs[k]!.hostOffset;
      const last = batches[batches.length - 1];
      if (cached?.grain === refs[k]!.index || h + VMDK_GRAIN_MARKER_HEADER_SIZE > this.file.size) batchOf.push(-1);
      else if (last !== undefined && k > 0 && batchOf[k - 1] === batches.length - 1 && h > refs[k - 1]!.hostOffset && h - refs[k - 1]!.hostOffset <= record && h + record - last.start <= BATCH_READ_BYTES) {
        last.end = Math.min(this.file.size, h + record);
        batchOf.push(batches.length - 1);
      } else {
        batches.push({ start: h, end: Math.min(this.file.size, h + record) });
        batchOf.push(batches.length - 1);
      }
    }
    // Each batch's read is started one batch ahead, so the file read overlaps inflation.
    const reads = new Map<number, Promise<Uint8Array>>();
    let nextRead = 0;
    const startReads = (upTo: number) => {
      for (; nextRead <= upTo && nextRead < batches.length; nextRead++) {
        const b = batches[nextRead]!;
        const read = this.file.readExact(b.start, b.end - b.start, 'vmdk.grain');
        read.catch(() => undefined); // reported when (if) awaited, in order
        reads.set(nextRead, read);
      }
    };
    try {
      for (let k = 0; k < refs.length; k++) {
        const ref = refs[k]!;
        if (cached?.grain === ref.index) {
          pending.push(cached.data);
          continue;
        }
        // Bound the work in flight (and so the memory held) to THREAD_POOL_REQUESTS grains.
        if (k >= THREAD_POOL_REQUESTS) await pending[k - THREAD_POOL_REQUESTS];
        const bi = batchOf[k]!;
        let batch: { start: number; bytes: Uint8Array } | undefined;
        if (bi >= 0) {
          startReads(bi + 1);
          reads.delete(bi - 1); // batches are met in order: let the previous one go
          batch = { start: batches[bi]!.start, bytes: await reads.get(bi)! };
        }
        const raw = await this.compressedBytes(ref.index, ref.hostOffset, batch);
        pending.push(raw.length >= STORED_RATIO * this.grainBytes ? inflateNow(raw, this.inflateOptions()) : inflateSettled(raw, this.inflateOptions()));
      }
    } catch (err) {
      // An earlier grain's failure comes first, as if the grains had been read one by one.
      for (let k = 0; k < pending.length; k++) await settle(k);
      throw err;
    }
    const out: Uint8Array[] = [];
    for (let k = 0; k < refs.length; k++) out.push(await settle(k));
    return out;
  }

  private inflateOptions(): ZlibOptions {
    // One output chunk per grain: the default 16 KiB chunks cost a callback and a copy each.
    return { maxOutputLength: this.grainBytes, chunkSize: Math.max(zlibConstants.Z_MIN_CHUNK, this.grainBytes), finishFlush: zlibConstants.Z_SYNC_FLUSH };
  }

  private inflateError(hostOffset: number, err: Error): CorruptImageError {
    return new CorruptImageError('CORRUPT_IMAGE', { file: this.path, structure: 'vmdk.grain', offset: hostOffset, detail: `compressed grain does not decompress: ${err.message}` });
  }

  /** Checks an inflated grain's size and caches it as the last grain read. */
  private acceptInflated(grain: number, hostOffset: number, data: Uint8Array): Uint8Array {
    const expected = Math.min(this.grainBytes, this.capacityBytes - grain * this.grainBytes);
    if (data.length < expected) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: this.path, structure: 'vmdk.grain', offset: hostOffset, detail: 'compressed grain decompresses to the wrong size', expected, actual: data.length });
    }
    this.compressedCache = { grain, data };
    return data;
  }

  /**
   * The compressed bytes of the grain at `hostOffset` (after its marker, if any), validating
   * the marker. Taken from `batch` (bytes read earlier from `batch.start`) when they lie in it.
   */
  private async compressedBytes(grain: number, hostOffset: number, batch: { start: number; bytes: Uint8Array } | undefined): Promise<Uint8Array> {
    const at = { file: this.path, structure: 'vmdk.grain', offset: hostOffset };
    const slice = (offset: number, length: number): Uint8Array | undefined => {
      if (batch === undefined || offset < batch.start || offset + length > batch.start + batch.bytes.length) return undefined;
      return batch.bytes.subarray(offset - batch.start, offset - batch.start + length);
    };
    let dataOffset = hostOffset;
    let dataLength: number;
    if (this.hasMarkers) {
      const m = slice(hostOffset, VMDK_GRAIN_MARKER_HEADER_SIZE) ?? (await this.file.readExact(hostOffset, VMDK_GRAIN_MARKER_HEADER_SIZE, 'vmdk.grain_marker'));
      const mv = new DataView(m.buffer, m.byteOffset, m.byteLength);
      const lba = mv.getBigUint64(0, true);
      dataLength = mv.getUint32(8, true);
      if (lba !== BigInt(grain) * BigInt(this.header.grainSize)) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at, structure: 'vmdk.grain_marker.lba', detail: 'grain marker names another grain', expected: grain * this.header.grainSize, actual: lba.toString() });
      }
      if (dataLength === 0 || dataLength > 2 * this.grainBytes + 4096) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at, structure: 'vmdk.grain_marker.size', offset: hostOffset + 8, detail: 'implausible compressed grain size', actual: dataLength });
      }
      dataOffset = hostOffset + VMDK_GRAIN_MARKER_HEADER_SIZE;
    } else {
      dataLength = Math.min(2 * this.grainBytes + 4096, this.file.size - hostOffset);
    }
    return slice(dataOffset, dataLength) ?? (await this.file.readExact(dataOffset, dataLength, 'vmdk.grain'));
  }

  clearCaches(): void {
    this.gtCache.clear();
    this.compressedCache = undefined;
  }
}
