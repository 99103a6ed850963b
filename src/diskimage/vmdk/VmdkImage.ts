/**
 * VMDK reader (VMware "Virtual Disk Format 5.0"): hosted sparse extents with an
 * embedded descriptor (monolithicSparse, streamOptimized), separate descriptor
 * files over SPARSE, FLAT, VMFS and ZERO extents (monolithicFlat, twoGbMaxExtent*,
 * vmfs*), and delta disks (parentCID + parentFileNameHint). One layer of a chain:
 * unallocated grains read as zeros here and ChainDevice answers them from the parent.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import type { ByteRange, Extent } from '../BlockDevice.js';
import type { BackingRef, DiskImage, FormatDetails } from '../DiskImage.js';
import { ImageFile } from '../ImageFile.js';
import { mergeExtents, normalizeRange } from '../extents.js';
import { THREAD_POOL_REQUESTS, runLimited } from '../runLimited.js';
import { CorruptImageError, ImgdedupError } from '../../errors.js';
import { decodeSparseHeader } from './sparseHeader.js';
import { formatCid, parseDescriptor, type VmdkDescriptor, type VmdkExtentLine } from './descriptor.js';
import { SparseExtent } from './grainTables.js';
import { VMDK4_HEADER_SIZE, VMDK4_MAGIC, VMDK_CID_NOPARENT, VMDK_COWD_MAGIC, VMDK_MAX_DESCRIPTOR_BYTES, VMDK_SECTOR_SIZE } from './constants.js';

/** One extent of the virtual disk, placed at guest byte `start`. */
type ExtentSpan =
  | { readonly kind: 'sparse'; readonly start: number; readonly length: number; readonly sparse: SparseExtent; readonly own: boolean; readonly line: VmdkExtentLine }
  | { readonly kind: 'flat'; readonly start: number; readonly length: number; readonly file: ImageFile; readonly fileOffset: number; readonly own: boolean; readonly line: VmdkExtentLine }
  | { readonly kind: 'zero'; readonly start: number; readonly length: number; readonly line: VmdkExtentLine };

/** A piece of the disk stored by this layer, with how to read it. */
interface Piece extends Extent {
  readonly span: ExtentSpan;
  /** For data pieces: byte offset in the span's file (sparse or flat). */
  readonly fileOffset?: number;
  /** For compressed grains: grain number within the sparse extent and its host offset. */
  readonly grain?: { readonly index: number; readonly hostOffset: number };
}

/** Decompressed bytes of compressed grains gathered by one read before they are fetched. */
const COMPRESSED_BATCH_BYTES = 16 * 1024 * 1024;

export class VmdkImage implements DiskImage {
  readonly format = 'vmdk' as const;
  readonly size: number;
  readonly backing: BackingRef | undefined;

  private constructor(
    /** The file opened: the descriptor file, or the sparse extent holding the descriptor. */
    private readonly file: ImageFile,
    readonly descriptor: VmdkDescriptor,
    private readonly spans: readonly ExtentSpan[],
    /** Byte offset of the parentCID line, for errors. */
    private readonly parentCidOffset: number,
    readonly warnings: readonly string[],
  ) {
    this.size = spans.reduce((n, s) => n + s.length, 0);
    const hint = descriptor.parentFileNameHint;
    this.backing =
      hint === undefined || hint === ''
        ? undefined
        : { name: hint, format: 'vmdk', structure: 'vmdk.descriptor.parentFileNameHint', offset: descriptor.parentFileNameHintOffset };
  }

  /**
   * Opens a VMDK (descriptor file or sparse extent with an embedded descriptor) and all its extents.
   * Throws CORRUPT_IMAGE, TRUNCATED, UNSUPPORTED_FORMAT (vmfsSparse, seSparse, COWD, ...),
   * UNSUPPORTED_FEATURE, UNCLEAN_SHUTDOWN, EXTENT_FILE_MISSING, IO.
   */
  static async open(path: string): Promise<VmdkImage> {
    const file = await ImageFile.open(path);
    const opened: ImageFile[] = [];
    try {
      const head = await file.readUpTo(0, VMDK4_HEADER_SIZE);
      const magic = new DataView(head.buffer).getUint32(0, true);
      const warnings: string[] = [];
      let descriptor: VmdkDescriptor;
      let ownSparse: SparseExtent | undefined;
      let embedded = false;
      if (magic === VMDK4_MAGIC || magic === VMDK_COWD_MAGIC) {
        if (file.size < VMDK4_HEADER_SIZE) await file.readExact(0, VMDK4_HEADER_SIZE, 'vmdk.header');
        const h = decodeSparseHeader(head, { file: path });
        if (h.descriptorOffset === 0 || h.descriptorSize === 0) {
          // A bare extent of a multi-extent disk: read it alone, as qemu does.
          ownSparse = await SparseExtent.open(file, { warnings }, head);
          embedded = true;
          descriptor = {
            version: 1,
            CID: 0,
            parentCID: VMDK_CID_NOPARENT,
            parentCIDOffset: 0,
            createType: 'monolithicSparse',
            parentFileNameHint: undefined,
            parentFileNameHintOffset: 0,
            extents: [{ access: 'RW', size: ownSparse.header.capacity, type: 'SPARSE', fileName: path, offset: 0, line: '', lineOffset: 0 }],
            ddb: {},
          };
        } else {
          const length = h.descriptorSize * VMDK_SECTOR_SIZE;
          if (length > VMDK_MAX_DESCRIPTOR_BYTES) {
            throw new CorruptImageError('CORRUPT_IMAGE', { file: path, structure: 'vmdk.header.descriptorSize', offset: 36, detail: 'embedded descriptor larger than 1 MiB', actual: h.descriptorSize });
          }
          const base = h.descriptorOffset * VMDK_SECTOR_SIZE;
          if (base + length > file.size) {
            throw new CorruptImageError('CORRUPT_IMAGE', { file: path, structure: 'vmdk.header.descriptorOffset', offset: 28, detail: `embedded descriptor (${length} bytes at sector ${h.descriptorOffset}) lies outside the file (${file.size} bytes)` });
          }
          descriptor = parseDescriptor(await file.readExact(base, length, 'vmdk.descriptor'), { file: path, base });
          embedded = true;
        }
      } else {
        if (file.size > VMDK_MAX_DESCRIPTOR_BYTES) {
          throw new CorruptImageError('CORRUPT_IMAGE', { file: path, structure: 'vmdk.descriptor', offset: 0, detail: 'descriptor file larger than 1 MiB' });
        }
        descriptor = parseDescriptor(await file.readExact(0, file.size, 'vmdk.descriptor'), { file: path, base: 0 });
      }

      const spans: ExtentSpan[] = [];
      let start = 0;
      const files = new Map<string, ImageFile>([[resolve(path), file]]);
      for (const [i, line] of descriptor.extents.entries()) {
        const length = line.size * VMDK_SECTOR_SIZE;
        if (line.type === 'ZERO') {
          spans.push({ kind: 'zero', start, length, line });
          start += length;
          continue;
        }
        const where = { file: path, structure: `vmdk.descriptor.extent[${i}]`, offset: line.lineOffset, line: line.line };
        let extPath = isAbsolute(line.fileName!) ? line.fileName! : resolve(dirname(path), line.fileName!);
        if (embedded && descriptor.extents.length === 1 && line.type === 'SPARSE') {
          // A descriptor embedded in its only sparse extent describes that very file, whatever
          // name it was given when written (files get renamed; qemu reads them the same way).
          if (extPath !== resolve(path)) warnings.push(`${path}: the embedded descriptor names its extent "${line.fileName}"; reading this file as that extent`);
          extPath = resolve(path);
        }
        let f = files.get(extPath);
        if (f === undefined) {
          try {
            f = await ImageFile.open(extPath);
          } catch (err) {
            if (err instanceof ImgdedupError && err.data.errno === 'ENOENT') {
              throw new CorruptImageError('EXTENT_FILE_MISSING', { ...where, detail: `extent file "${line.fileName}" not found (resolved to ${extPath})`, extentFile: extPath });
            }
            throw err;
          }
          opened.push(f);
          files.set(extPath, f);
        }
        const own = f === file;
        if (line.type === 'SPARSE') {
          const sparse = own && ownSparse !== undefined ? ownSparse : await SparseExtent.open(f, { warnings });
          if (sparse.header.capacity < line.size) {
            throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: `sparse extent holds ${sparse.header.capacity} sectors, the descriptor says ${line.size}` });
          }
          spans.push({ kind: 'sparse', start, length, sparse, own, line });
        } else {
          const fileOffset = line.offset * VMDK_SECTOR_SIZE;
          if (fileOffset + length > f.size) {
            throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: `${line.type} extent (${length} bytes at byte ${fileOffset}) lies outside its file ${extPath} (${f.size} bytes)` });
          }
          spans.push({ kind: 'flat', start, length, file: f, fileOffset, own, line });
        }
        start += length;
      }
      return new VmdkImage(file, descriptor, spans, descriptor.parentCIDOffset, warnings);
    } catch (err) {
      await Promise.allSettled([file, ...opened].map((f) => f.close()));
      throw err;
    }
  }

  get path(): string {
    return this.file.path;
  }
  /** The content ID of this disk. */
  get cid(): number {
    return this.descriptor.CID;
  }
  get parentCid(): number {
    return this.descriptor.parentCID;
  }
  get fileSize(): number {
    const seen = new Set<ImageFile>([this.file]);
    for (const s of this.spans) {
      if (s.kind === 'sparse') seen.add(s.sparse.file);
      else if (s.kind === 'flat') seen.add(s.file);
    }
    let n = 0;
    for (const f of seen) n += f.size;
    return n;
  }
  get clusterSize(): number {
    const sparse = this.spans.find((s) => s.kind === 'sparse');
    return sparse?.kind === 'sparse' ? sparse.sparse.grainBytes : VMDK_SECTOR_SIZE;
  }
  /** The sparse extents, for check and writers. */
  get sparseExtents(): readonly SparseExtent[] {
    return this.spans.flatMap((s) => (s.kind === 'sparse' ? [s.sparse] : []));
  }

  get details(): FormatDetails {
    const d = this.descriptor;
    const sparse = this.sparseExtents[0];
    return {
      createType: d.createType,
      CID: formatCid(d.CID),
      parentCID: formatCid(d.parentCID),
      parentFileNameHint: d.parentFileNameHint ?? null,
      grainSize: sparse !== undefined ? sparse.grainBytes : null,
      sparseVersion: sparse !== undefined ? sparse.header.version : null,
      compressed: sparse !== undefined ? sparse.compressed : false,
      grainDirectory: sparse !== undefined ? sparse.gdSource : null,
      extents: d.extents.map((e) => e.line),
      adapterType: d.ddb['ddb.adapterType'] ?? null,
      hwVersion: d.ddb['ddb.virtualHWVersion'] ?? null,
    };
  }

  /**
   * Refuses a parent whose CID differs from our parentCID, as VMware does.
   * Only VMDK parents carry a CID; other formats are accepted.
   * Throws PARENT_CID_MISMATCH.
   */
  verifyParent(parent: DiskImage): void {
    if (!(parent instanceof VmdkImage)) return;
    if (parent.cid !== this.parentCid) {
      throw new CorruptImageError('PARENT_CID_MISMATCH', {
        file: this.path,
        structure: 'vmdk.descriptor.parentCID',
        offset: this.parentCidOffset,
        detail: `parent ${parent.path} has CID ${formatCid(parent.cid)}, but this disk was made over CID ${formatCid(this.parentCid)} (the parent changed since)`,
        expected: formatCid(this.parentCid),
        actual: formatCid(parent.cid),
      });
    }
  }

  /** Stored pieces within [start, end), in order, unmerged. */
  private async *pieces(start: number, end: number): AsyncGenerator<Piece> {
    for (const span of this.spans) {
      const s = Math.max(start, span.start);
      const e = Math.min(end, span.start + span.length);
      if (e <= s) continue;
      if (span.kind === 'zero') {
        yield { offset: s, length: e - s, kind: 'zero', span };
      } else if (span.kind === 'flat') {
        const fileOffset = span.fileOffset + (s - span.start);
        yield { offset: s, length: e - s, kind: 'data', span, fileOffset, ...(span.own ? { hostOffset: fileOffset } : {}) };
      } else {
        const sp = span.sparse;
        const gb = sp.grainBytes;
        let pos = s - span.start;
        const stop = e - span.start;
        while (pos < stop) {
          const grain = Math.floor(pos / gb);
          const gdIndex = Math.floor(grain / sp.header.numGTEsPerGT);
          const gtEnd = (gdIndex + 1) * sp.gtSpanBytes;
          if (sp.gd[gdIndex] === 0 || gdIndex >= sp.gd.length) {
            pos = Math.min(stop, gtEnd);
            continue;
          }
          const grainEnd = Math.min(stop, (grain + 1) * gb);
          const m = await sp.lookup(grain);
          const off = span.start + pos;
          const len = grainEnd - pos;
          const skip = pos - grain * gb;
          if (m.type === 'zero') yield { offset: off, length: len, kind: 'zero', span };
          else if (m.type === 'data') {
            const fileOffset = m.hostOffset + skip;
            yield { offset: off, length: len, kind: 'data', span, fileOffset, ...(span.own ? { hostOffset: fileOffset } : {}) };
          } else if (m.type === 'compressed') yield { offset: off, length: len, kind: 'data', compressed: true, span, grain: { index: grain, hostOffset: m.hostOffset } };
          pos = grainEnd;
        }
      }
    }
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = normalizeRange(this.size, range);
    if (r.length === 0) return;
    const self = this;
    yield* mergeExtents(
      (async function* () {
        for await (const p of self.pieces(r.offset, r.offset + r.length)) {
          yield {
            offset: p.offset,
            length: p.length,
            kind: p.kind,
            ...(p.hostOffset !== undefined ? { hostOffset: p.hostOffset } : {}),
            ...(p.compressed ? { compressed: true } : {}),
          };
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
   * Fills `target` from guest `offset`. Pieces contiguous in the same file become one
   * file read straight into `target` (up to THREAD_POOL_REQUESTS in flight); compressed
   * grains are fetched in batches; everything else is zeroed.
   */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const r = normalizeRange(this.size, { offset, length: target.length });
    const fileReads: (() => Promise<void>)[] = [];
    let runFile: ImageFile | undefined;
    let runGuest = 0;
    let runHost = 0;
    let runLen = 0;
    const endRun = () => {
      if (runFile !== undefined && runLen > 0) {
        const f = runFile;
        const dest = target.subarray(runGuest - offset, runGuest - offset + runLen);
        const host = runHost;
        fileReads.push(() => f.readExactInto(dest, host, 'vmdk.grain'));
      }
      runFile = undefined;
      runLen = 0;
    };
    // Compressed grains are gathered and read together (one file read per run, inflated
    // concurrently); at most COMPRESSED_BATCH_BYTES of them are held at once.
    let compressed: Piece[] = [];
    const flushCompressed = async () => {
      let i = 0;
      while (i < compressed.length) {
        const span = compressed[i]!.span;
        let j = i + 1;
        while (j < compressed.length && compressed[j]!.span === span) j++;
        if (span.kind === 'sparse') {
          const group = compressed.slice(i, j);
          const datas = await span.sparse.readCompressedGrains(group.map((p) => p.grain!));
          group.forEach((p, k) => {
            const from = p.offset - span.start - p.grain!.index * span.sparse.grainBytes;
            target.set(datas[k]!.subarray(from, from + p.length), p.offset - offset);
          });
        }
        i = j;
      }
      compressed = [];
    };
    // Reads already planned run before an error met later is reported, so the
    // first fault in guest order is the one reported.
    const finish = async () => {
      endRun();
      await flushCompressed();
      await runLimited(fileReads.splice(0), THREAD_POOL_REQUESTS);
    };
    let settled = 0; // target bytes before this are zeroed or have a read planned
    try {
      for await (const p of this.pieces(r.offset, r.offset + r.length)) {
        if (p.kind !== 'data') continue;
        const at = p.offset - offset;
        target.fill(0, settled, at);
        settled = at + p.length;
        if (p.grain !== undefined && p.span.kind === 'sparse') {
          compressed.push(p);
          if (compressed.length * p.span.sparse.grainBytes >= COMPRESSED_BATCH_BYTES) await flushCompressed();
          continue;
        }
        const f = p.span.kind === 'sparse' ? p.span.sparse.file : p.span.kind === 'flat' ? p.span.file : undefined;
        if (f === undefined || p.fileOffset === undefined) {
          target.fill(0, at, settled);
          continue;
        }
        if (runFile === f && runGuest + runLen === p.offset && runHost + runLen === p.fileOffset) {
          runLen += p.length;
        } else {
          endRun();
          runFile = f;
          runGuest = p.offset;
          runHost = p.fileOffset;
          runLen = p.length;
        }
      }
    } catch (err) {
      await finish();
      throw err;
    }
    target.fill(0, settled);
    await finish();
  }

  async close(): Promise<void> {
    const files = new Set<ImageFile>([this.file]);
    for (const s of this.spans) {
      if (s.kind === 'sparse') {
        s.sparse.clearCaches();
        files.add(s.sparse.file);
      } else if (s.kind === 'flat') files.add(s.file);
    }
    for (const f of files) await f.close();
  }
}
