/**
 * VMDK writers (VMware "Virtual Disk Format 5.0"):
 * - SparseVmdkWriter: a monolithicSparse extent (embedded descriptor, primary and
 *   redundant grain directories), for standalone bases and for delta children
 *   (parentFileNameHint + parentCID). Grains may be written in any order; memory
 *   grows with the grains written (one map entry each), never with the disk size.
 *   Layout: header | descriptor | RGD | GD | grains in write order | RGTs and GTs
 *   of the grain tables that hold anything.
 * - writeStreamOptimizedVmdk: a streamOptimized extent (deflate grains behind
 *   markers, grain tables and directory after the grains, footer with gdOffset).
 * - writeVmdk: either of them from any BlockDevice, skipping zero grains (and, for
 *   a delta, grains equal to the parent's).
 * Every file goes through AtomicOutput (temp file, fsync, rename).
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { deflateSync } from 'node:zlib';
import type { BlockDevice } from '../BlockDevice.js';
import type { ImageWriter, ImageWriterSummary } from '../ImageWriter.js';
import { AtomicOutput, SizingOutput, type OutputFile } from '../AtomicOutput.js';
import { InternalError, UsageError } from '../../errors.js';
import { encodeDescriptor, type VmdkDescriptorInput } from './descriptor.js';
import { encodeSparseHeader } from './sparseHeader.js';
import {
  VMDK4_COMPRESSION_DEFLATE,
  VMDK4_COMPRESSION_NONE,
  VMDK4_FLAG_COMPRESS,
  VMDK4_FLAG_MARKER,
  VMDK4_FLAG_NL_DETECT,
  VMDK4_FLAG_RGD,
  VMDK4_FLAG_ZERO_GRAIN,
  VMDK4_GTES_PER_GT,
  VMDK4_GTE_ZEROED,
  VMDK4_MAGIC,
  VMDK4_MAX_GRAIN_SECTORS,
  VMDK4_MIN_GRAIN_SECTORS,
  VMDK_CID_NOPARENT,
  VMDK_EMBEDDED_DESCRIPTOR_SECTORS,
  VMDK_GRAIN_MARKER_HEADER_SIZE,
  VMDK_MARKER_FOOTER,
  VMDK_MARKER_GD,
  VMDK_MARKER_GT,
  VMDK_SECTOR_SIZE,
} from './constants.js';

export type VmdkAdapterType = 'ide' | 'lsilogic' | 'buslogic' | 'legacyESX';
export type VmdkSubformat = 'monolithicSparse' | 'streamOptimized';

export interface VmdkDiskOptions {
  /** Grain size in sectors: a power of two from 8 (4 KiB). Default 128 (64 KiB). */
  readonly grainSizeSectors?: number;
  /** ddb.adapterType. Default 'ide'. */
  readonly adapterType?: VmdkAdapterType;
  /** ddb.virtualHWVersion. Default 4. */
  readonly hwVersion?: number;
  /** This disk's CID. Default: random 32 bits. */
  readonly cid?: number;
  /** Replace an existing output. */
  readonly overwrite?: boolean;
  /** Write nothing: commit reports the file that would have been made (see SizingOutput). */
  readonly sizeOnly?: boolean;
}

export interface VmdkParentRef {
  /** parentFileNameHint as stored (relative to the child's directory). */
  readonly fileNameHint: string;
  /** The parent's CID, stored as parentCID. */
  readonly cid: number;
}

export interface SparseVmdkWriterOptions extends VmdkDiskOptions {
  /** Makes a delta child of this parent. */
  readonly parent?: VmdkParentRef;
  /** Allows writeZeroGrain (sets the zeroed-grain flag and header version 2). */
  readonly zeroedGrains?: boolean;
}

function sectorsFor(bytes: number): number {
  return Math.ceil(bytes / VMDK_SECTOR_SIZE);
}

function randomCid(): number {
  // 0xffffffff means "no parent"; never produce it as a CID.
  let cid: number;
  do cid = randomBytes(4).readUInt32LE(0);
  while (cid === VMDK_CID_NOPARENT);
  return cid;
}

function checkGrainSize(sectors: number): void {
  if (!Number.isInteger(sectors) || sectors < VMDK4_MIN_GRAIN_SECTORS || sectors > VMDK4_MAX_GRAIN_SECTORS || (sectors & (sectors - 1)) !== 0) {
    throw new UsageError(`VMDK grain size must be a power of two from ${VMDK4_MIN_GRAIN_SECTORS} to ${VMDK4_MAX_GRAIN_SECTORS} sectors (got ${sectors})`);
  }
}

/** The disk database VMware writes: hardware version, BIOS geometry, adapter, uuid and longContentID. */
export function buildDdb(sizeBytes: number, cid: number, options: VmdkDiskOptions): Record<string, string> {
  const adapterType = options.adapterType ?? 'ide';
  // IDE disks use the 16-head geometry; SCSI adapters report 255 heads (as VMware and qemu do).
  const heads = adapterType === 'ide' ? 16 : 255;
  const sectors = 63;
  const cylinders = Math.max(1, Math.min(16383, Math.floor(sizeBytes / (heads * sectors * VMDK_SECTOR_SIZE))));
  const uuid = randomBytes(16);
  const longContentID = randomBytes(12).toString('hex') + (cid >>> 0).toString(16).padStart(8, '0');
  return {
    'ddb.virtualHWVersion': String(options.hwVersion ?? 4),
    'ddb.geometry.cylinders': String(cylinders),
    'ddb.geometry.heads': String(heads),
    'ddb.geometry.sectors': String(sectors),
    'ddb.adapterType': adapterType,
    'ddb.uuid': [...uuid].map((b) => b.toString(16).padStart(2, '0')).join(' '),
    'ddb.longContentID': longContentID,
  };
}

function descriptorBytes(d: VmdkDescriptorInput, sectors: number): Uint8Array {
  const text = new TextEncoder().encode(encodeDescriptor(d));
  if (text.length > sectors * VMDK_SECTOR_SIZE) throw new InternalError('VMDK descriptor does not fit its reserved sectors');
  const buf = new Uint8Array(sectors * VMDK_SECTOR_SIZE);
  buf.set(text);
  return buf;
}

/**
 * Writes a monolithicSparse VMDK grain by grain, in any order.
 * Use: `const w = await SparseVmdkWriter.create(path, size, opts); await w.writeGrain(i, data); ...; await w.commit();`
 */
export class SparseVmdkWriter {
  readonly grainBytes: number;
  readonly cid: number;
  private readonly grains = new Map<number, number>(); // grain index -> sector (1 = zeroed)
  private nextSector: number;
  private readonly gdEntries: number;
  private readonly gdSectors: number;
  private readonly rgdSector: number;
  private readonly gdSector: number;
  private readonly overHead: number;
  private done = false;

  private constructor(
    private readonly out: OutputFile,
    readonly size: number,
    private readonly options: SparseVmdkWriterOptions,
  ) {
    const grainSize = options.grainSizeSectors ?? 128;
    this.grainBytes = grainSize * VMDK_SECTOR_SIZE;
    this.cid = options.cid ?? randomCid();
    const capacity = size / VMDK_SECTOR_SIZE;
    this.gdEntries = Math.ceil(capacity / (grainSize * VMDK4_GTES_PER_GT));
    this.gdSectors = sectorsFor(this.gdEntries * 4);
    this.rgdSector = 1 + VMDK_EMBEDDED_DESCRIPTOR_SECTORS;
    this.gdSector = this.rgdSector + this.gdSectors;
    // Grains start grain-aligned after the metadata, as qemu and VMware lay them out.
    this.overHead = Math.ceil((this.gdSector + this.gdSectors) / grainSize) * grainSize;
    this.nextSector = this.overHead;
  }

  /**
   * Creates the output (a temp file until commit). Throws USAGE (size not a multiple of
   * 512, bad grain size), OUTPUT_EXISTS, IO.
   */
  static async create(path: string, size: number, options: SparseVmdkWriterOptions = {}): Promise<SparseVmdkWriter> {
    checkGrainSize(options.grainSizeSectors ?? 128);
    if (!Number.isSafeInteger(size) || size <= 0 || size % VMDK_SECTOR_SIZE !== 0) {
      throw new UsageError(`VMDK virtual size must be a positive multiple of 512 bytes (got ${size})`);
    }
    const out = options.sizeOnly ? new SizingOutput(path) : await AtomicOutput.create(path, options.overwrite ? { overwrite: true } : {});
    return new SparseVmdkWriter(out, size, options);
  }

  /** Grains can be marked as reading zeros (writeZeroGrain). */
  get zeroedGrains(): boolean {
    return this.options.zeroedGrains === true;
  }

  /** True for a delta child. */
  get hasParent(): boolean {
    return this.options.parent !== undefined;
  }

  get grainCount(): number {
    return Math.ceil(this.size / this.grainBytes);
  }

  private checkIndex(grain: number): void {
    if (this.done) throw new InternalError('SparseVmdkWriter used after commit/abort');
    if (!Number.isInteger(grain) || grain < 0 || grain >= this.grainCount) throw new InternalError(`grain ${grain} outside the disk (${this.grainCount} grains)`);
  }

  /**
   * Stores `data` (grainBytes long; shorter only for the last, partial grain) as grain `grain`.
   * Writing a grain again replaces its content in place. Throws IO.
   */
  async writeGrain(grain: number, data: Uint8Array): Promise<void> {
    this.checkIndex(grain);
    const expected = Math.min(this.grainBytes, this.size - grain * this.grainBytes);
    if (data.length !== expected && data.length !== this.grainBytes) throw new InternalError(`grain ${grain} must be ${expected} bytes, got ${data.length}`);
    let sector = this.grains.get(grain);
    if (sector === undefined || sector === VMDK4_GTE_ZEROED) {
      sector = this.nextSector;
      this.nextSector += this.grainBytes / VMDK_SECTOR_SIZE;
      this.grains.set(grain, sector);
    }
    await this.out.write(sector * VMDK_SECTOR_SIZE, data);
  }

  /** Marks grain `grain` as reading zeros (GTE 1) without storing data. Needs `zeroedGrains`. */
  writeZeroGrain(grain: number): void {
    this.checkIndex(grain);
    if (!this.options.zeroedGrains) throw new InternalError('writeZeroGrain needs the zeroedGrains option');
    this.grains.set(grain, VMDK4_GTE_ZEROED);
  }

  /** Writes grain tables, directories, descriptor and header, then fsyncs and renames; returns the file size. Throws IO. */
  async commit(): Promise<number> {
    if (this.done) throw new InternalError('SparseVmdkWriter committed twice');
    try {
      const gtSectors = sectorsFor(VMDK4_GTES_PER_GT * 4);
      const gd = new Uint32Array(this.gdEntries);
      const rgd = new Uint32Array(this.gdEntries);
      const byTable = new Map<number, number[]>();
      for (const grain of [...this.grains.keys()].sort((a, b) => a - b)) {
        const t = Math.floor(grain / VMDK4_GTES_PER_GT);
        let list = byTable.get(t);
        if (list === undefined) byTable.set(t, (list = []));
        list.push(grain);
      }
      // Grain tables follow the last grain; the file's end is the last grain table.
      let sector = this.nextSector;
      for (const [t, list] of byTable) {
        const gt = new Uint8Array(gtSectors * VMDK_SECTOR_SIZE);
        const v = new DataView(gt.buffer);
        for (const grain of list) v.setUint32((grain % VMDK4_GTES_PER_GT) * 4, this.grains.get(grain)!, true);
        rgd[t] = sector;
        await this.out.write(sector * VMDK_SECTOR_SIZE, gt);
        sector += gtSectors;
        gd[t] = sector;
        await this.out.write(sector * VMDK_SECTOR_SIZE, gt);
        sector += gtSectors;
      }
      const encodeGd = (d: Uint32Array) => {
        const buf = new Uint8Array(this.gdSectors * VMDK_SECTOR_SIZE);
        const v = new DataView(buf.buffer);
        d.forEach((x, i) => v.setUint32(i * 4, x, true));
        return buf;
      };
      await this.out.write(this.rgdSector * VMDK_SECTOR_SIZE, encodeGd(rgd));
      await this.out.write(this.gdSector * VMDK_SECTOR_SIZE, encodeGd(gd));
      const capacity = this.size / VMDK_SECTOR_SIZE;
      const parent = this.options.parent;
      const desc: VmdkDescriptorInput = {
        CID: this.cid,
        parentCID: parent?.cid ?? VMDK_CID_NOPARENT,
        createType: 'monolithicSparse',
        ...(parent !== undefined ? { parentFileNameHint: parent.fileNameHint } : {}),
        extents: [{ access: 'RW', size: capacity, type: 'SPARSE', fileName: basename(this.out.path) }],
        ddb: buildDdb(this.size, this.cid, this.options),
      };
      await this.out.write(VMDK_SECTOR_SIZE, descriptorBytes(desc, VMDK_EMBEDDED_DESCRIPTOR_SECTORS));
      const zeroed = this.options.zeroedGrains === true;
      await this.out.write(
        0,
        encodeSparseHeader({
          magicNumber: VMDK4_MAGIC,
          version: zeroed ? 2 : 1,
          flags: VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD | (zeroed ? VMDK4_FLAG_ZERO_GRAIN : 0),
          capacity,
          grainSize: this.grainBytes / VMDK_SECTOR_SIZE,
          descriptorOffset: 1,
          descriptorSize: VMDK_EMBEDDED_DESCRIPTOR_SECTORS,
          numGTEsPerGT: VMDK4_GTES_PER_GT,
          rgdOffset: this.rgdSector,
          gdOffset: this.gdSector,
          overHead: this.overHead,
          uncleanShutdown: false,
          compressAlgorithm: VMDK4_COMPRESSION_NONE,
        }),
      );
      const fileSize = Math.max(sector, this.overHead) * VMDK_SECTOR_SIZE;
      await this.out.truncate(fileSize);
      this.done = true;
      await this.out.commit();
      return fileSize;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Removes the temporary file. Never throws. */
  async abort(): Promise<void> {
    this.done = true;
    await this.out.abort();
  }
}

function isZero(buf: Uint8Array): boolean {
  const words = buf.byteLength % 8 === 0 && buf.byteOffset % 8 === 0 ? new BigUint64Array(buf.buffer, buf.byteOffset, buf.byteLength / 8) : undefined;
  if (words !== undefined) {
    for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
    return true;
  }
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Grain runs [first, end) holding anything in any of `devices`, ascending, each at most `maxGrains` long. */
async function* grainRuns(devices: readonly BlockDevice[], grainBytes: number, size: number, maxGrains: number): AsyncGenerator<[number, number]> {
  // Merge the devices' allocation streams into a sorted, coalesced grain cover.
  const iters = devices.map((d) => d.allocation({ offset: 0, length: Math.min(size, d.size) })[Symbol.asyncIterator]());
  const heads = await Promise.all(iters.map((it) => it.next()));
  let runStart = -1;
  let runEnd = -1;
  for (;;) {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i]!;
      if (!h.done && (best === -1 || h.value.offset < heads[best]!.value!.offset)) best = i;
    }
    if (best === -1) break;
    const e = heads[best]!.value!;
    heads[best] = await iters[best]!.next();
    const first = Math.floor(e.offset / grainBytes);
    const end = Math.ceil((e.offset + e.length) / grainBytes);
    if (runStart !== -1 && first <= runEnd) runEnd = Math.max(runEnd, end);
    else {
      if (runStart !== -1) yield* splitRun(runStart, runEnd, maxGrains);
      runStart = first;
      runEnd = end;
    }
  }
  if (runStart !== -1) yield* splitRun(runStart, runEnd, maxGrains);
}

function* splitRun(start: number, end: number, maxGrains: number): Generator<[number, number]> {
  for (let s = start; s < end; s += maxGrains) yield [s, Math.min(end, s + maxGrains)];
}

export interface WriteVmdkOptions extends VmdkDiskOptions {
  /** Default 'monolithicSparse'. */
  readonly subformat?: VmdkSubformat;
  /**
   * Write a delta child of this parent: only grains whose content differs from
   * `device` (the parent as the guest sees it, usually its whole chain) are stored.
   */
  readonly parent?: VmdkParentRef & { readonly device: BlockDevice };
}

export interface WriteVmdkResult {
  readonly cid: number;
  readonly grainsWritten: number;
  readonly fileSize: number;
}

/** Bytes read from the source per batch. */
const BATCH_BYTES = 4 * 1024 * 1024;

/**
 * Writes `device` as a VMDK at `path`: monolithicSparse (standalone, or a delta over
 * `parent`) or streamOptimized. Zero grains are skipped; a delta stores only grains
 * that differ from the parent (zeros over parent data are stored as zero-filled grains).
 * Throws USAGE (bad size/grain size, streamOptimized with a parent), OUTPUT_EXISTS, IO,
 * and whatever reading `device` throws.
 */
export async function writeVmdk(device: BlockDevice, path: string, options: WriteVmdkOptions = {}): Promise<WriteVmdkResult> {
  const size = Math.ceil(device.size / VMDK_SECTOR_SIZE) * VMDK_SECTOR_SIZE;
  if ((options.subformat ?? 'monolithicSparse') === 'streamOptimized') {
    if (options.parent !== undefined) throw new UsageError('a streamOptimized VMDK cannot have a parent');
    return writeStreamOptimizedVmdk(device, path, options);
  }
  const parent = options.parent;
  const w = await SparseVmdkWriter.create(path, size, {
    ...options,
    // A delta marks grains that read as zeros over its parent with zeroed entries, storing nothing.
    ...(parent !== undefined ? { parent: { fileNameHint: parent.fileNameHint, cid: parent.cid }, zeroedGrains: true } : {}),
  });
  let written = 0;
  let fileSize: number;
  try {
    const gb = w.grainBytes;
    const devices = parent !== undefined ? [device, parent.device] : [device];
    for await (const [first, end] of grainRuns(devices, gb, size, Math.max(1, BATCH_BYTES / gb))) {
      const from = first * gb;
      const len = Math.min(size, end * gb) - from;
      const data = await readPadded(device, from, len);
      const base = parent !== undefined ? await readPadded(parent.device, from, len) : undefined;
      for (let g = first; g < end; g++) {
        const chunk = data.subarray((g - first) * gb, Math.min(len, (g - first + 1) * gb));
        if (base !== undefined ? equalBytes(chunk, base.subarray((g - first) * gb, (g - first) * gb + chunk.length)) : isZero(chunk)) continue;
        if (base !== undefined && isZero(chunk)) w.writeZeroGrain(g);
        else await w.writeGrain(g, chunk);
        written++;
      }
    }
    fileSize = await w.commit();
  } catch (err) {
    await w.abort();
    throw err;
  }
  return { cid: w.cid, grainsWritten: written, fileSize };
}

/** Reads [offset, offset+length) of `device`; bytes past its end read as zeros. */
async function readPadded(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const avail = Math.max(0, Math.min(length, device.size - offset));
  if (avail === length) return device.read(offset, length);
  const out = new Uint8Array(length);
  if (avail > 0) out.set(await device.read(offset, avail));
  return out;
}

/** A marker sector: val (u64), size (u32, 0), type (u32). */
function markerSector(val: number, type: number): Uint8Array {
  const buf = new Uint8Array(VMDK_SECTOR_SIZE);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(val), true);
  v.setUint32(12, type, true);
  return buf;
}

/**
 * Writes `device` as a streamOptimized VMDK (for shipping): grains compressed with
 * zlib behind grain markers, each grain table after its grains, then the grain
 * directory, the footer (a header copy holding gdOffset) and the end-of-stream marker.
 * Throws USAGE, OUTPUT_EXISTS, IO.
 */
export async function writeStreamOptimizedVmdk(device: BlockDevice, path: string, options: VmdkDiskOptions = {}): Promise<WriteVmdkResult> {
  const grainSize = options.grainSizeSectors ?? 128;
  checkGrainSize(grainSize);
  const size = Math.ceil(device.size / VMDK_SECTOR_SIZE) * VMDK_SECTOR_SIZE;
  const capacity = size / VMDK_SECTOR_SIZE;
  const gb = grainSize * VMDK_SECTOR_SIZE;
  const cid = options.cid ?? randomCid();
  const gdEntries = Math.ceil(capacity / (grainSize * VMDK4_GTES_PER_GT));
  const gtSectors = sectorsFor(VMDK4_GTES_PER_GT * 4);
  const gdSectors = sectorsFor(gdEntries * 4);
  const descSectors = VMDK_EMBEDDED_DESCRIPTOR_SECTORS;
  const overHead = Math.ceil((1 + descSectors) / grainSize) * grainSize;
  const header = {
    magicNumber: VMDK4_MAGIC,
    version: 3,
    flags: VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER,
    capacity,
    grainSize,
    descriptorOffset: 1,
    descriptorSize: descSectors,
    numGTEsPerGT: VMDK4_GTES_PER_GT,
    rgdOffset: 0,
    gdOffset: undefined as number | undefined,
    overHead,
    uncleanShutdown: false,
    compressAlgorithm: VMDK4_COMPRESSION_DEFLATE,
  };
  const out = await AtomicOutput.create(path, options.overwrite ? { overwrite: true } : {});
  let written = 0;
  try {
    await out.write(0, encodeSparseHeader(header));
    const desc: VmdkDescriptorInput = {
      CID: cid,
      parentCID: VMDK_CID_NOPARENT,
      createType: 'streamOptimized',
      extents: [{ access: 'RW', size: capacity, type: 'SPARSE', fileName: basename(path) }],
      ddb: buildDdb(size, cid, options),
    };
    await out.write(VMDK_SECTOR_SIZE, descriptorBytes(desc, descSectors));
    let sector = overHead;
    const gd = new Uint32Array(gdEntries);
    let gtIndex = -1;
    let gt: DataView | undefined;
    const flushGt = async () => {
      if (gt === undefined) return;
      await out.write(sector * VMDK_SECTOR_SIZE, markerSector(gtSectors, VMDK_MARKER_GT));
      sector += 1;
      gd[gtIndex] = sector;
      await out.write(sector * VMDK_SECTOR_SIZE, new Uint8Array(gt.buffer));
      sector += gtSectors;
      gt = undefined;
    };
    for await (const [first, end] of grainRuns([device], gb, size, Math.max(1, BATCH_BYTES / gb))) {
      const from = first * gb;
      const len = Math.min(size, end * gb) - from;
      const data = await readPadded(device, from, len);
      for (let g = first; g < end; g++) {
        const chunk = data.subarray((g - first) * gb, Math.min(len, (g - first + 1) * gb));
        if (isZero(chunk)) continue;
        const t = Math.floor(g / VMDK4_GTES_PER_GT);
        if (t !== gtIndex) {
          await flushGt();
          gtIndex = t;
          gt = new DataView(new ArrayBuffer(gtSectors * VMDK_SECTOR_SIZE));
        }
        const z = deflateSync(chunk);
        const rec = new Uint8Array(sectorsFor(VMDK_GRAIN_MARKER_HEADER_SIZE + z.length) * VMDK_SECTOR_SIZE);
        const rv = new DataView(rec.buffer);
        rv.setBigUint64(0, BigInt(g * grainSize), true);
        rv.setUint32(8, z.length, true);
        rec.set(z, VMDK_GRAIN_MARKER_HEADER_SIZE);
        gt!.setUint32((g % VMDK4_GTES_PER_GT) * 4, sector, true);
        await out.write(sector * VMDK_SECTOR_SIZE, rec);
        sector += rec.length / VMDK_SECTOR_SIZE;
        written++;
      }
    }
    await flushGt();
    await out.write(sector * VMDK_SECTOR_SIZE, markerSector(gdSectors, VMDK_MARKER_GD));
    sector += 1;
    const gdOffset = sector;
    const gdBuf = new Uint8Array(gdSectors * VMDK_SECTOR_SIZE);
    const gv = new DataView(gdBuf.buffer);
    gd.forEach((x, i) => gv.setUint32(i * 4, x, true));
    await out.write(sector * VMDK_SECTOR_SIZE, gdBuf);
    sector += gdSectors;
    await out.write(sector * VMDK_SECTOR_SIZE, markerSector(1, VMDK_MARKER_FOOTER));
    sector += 1;
    await out.write(sector * VMDK_SECTOR_SIZE, encodeSparseHeader({ ...header, gdOffset }));
    sector += 1;
    await out.write(sector * VMDK_SECTOR_SIZE, new Uint8Array(VMDK_SECTOR_SIZE)); // end-of-stream marker
    sector += 1;
    await out.truncate(sector * VMDK_SECTOR_SIZE);
    await out.commit();
    return { cid, grainsWritten: written, fileSize: sector * VMDK_SECTOR_SIZE };
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/**
 * SparseVmdkWriter seen as an ImageWriter (the interface `convert` copies into):
 * writes at grain granularity; zero ranges are skipped on a base and stored as
 * zero-filled grains on a delta (so they hide the parent's data).
 */
export class VmdkImageWriter implements ImageWriter {
  readonly unitSize: number;
  readonly clusterSize: number;
  readonly hasBacking: boolean;
  private bytesWritten = 0;
  private readonly written = new Set<number>();

  private constructor(private readonly w: SparseVmdkWriter, private readonly path: string) {
    this.unitSize = w.grainBytes;
    this.clusterSize = w.grainBytes;
    this.hasBacking = w.hasParent;
  }

  /** Creates a monolithicSparse output (a delta if `options.parent`). Throws USAGE, OUTPUT_EXISTS, IO. */
  static async create(path: string, size: number, options: SparseVmdkWriterOptions = {}): Promise<VmdkImageWriter> {
    // A delta marks grains that must read as zeros over its parent with zeroed grain-table
    // entries (qemu and VMware read them so), instead of storing grains full of zeros.
    const opts = options.parent !== undefined && options.zeroedGrains === undefined ? { ...options, zeroedGrains: true } : options;
    return new VmdkImageWriter(await SparseVmdkWriter.create(path, Math.ceil(size / VMDK_SECTOR_SIZE) * VMDK_SECTOR_SIZE, opts), path);
  }

  get size(): number {
    return this.w.size;
  }

  /** The content ID the image is written with: a delta on it names it as parentCID. */
  get cid(): number {
    return this.w.cid;
  }

  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    const gb = this.w.grainBytes;
    if (guestOffset % gb !== 0) throw new InternalError(`VMDK write at ${guestOffset} is not grain-aligned (${gb})`);
    for (let pos = 0; pos < data.length; pos += gb) {
      const grain = (guestOffset + pos) / gb;
      let chunk = data.subarray(pos, Math.min(data.length, pos + gb));
      const expected = Math.min(gb, this.w.size - grain * gb);
      if (chunk.length !== expected) {
        const padded = new Uint8Array(expected);
        padded.set(chunk.subarray(0, expected));
        chunk = padded;
      }
      await this.w.writeGrain(grain, chunk);
      if (!this.written.has(grain)) this.written.add(grain);
      this.bytesWritten += chunk.length;
    }
  }

  async writeZeros(offset: number, length: number): Promise<void> {
    if (!this.hasBacking) return; // a base reads unallocated grains as zeros
    const gb = this.w.grainBytes;
    const end = Math.min(offset + length, this.w.size);
    if (!this.w.zeroedGrains) {
      await this.write(offset, new Uint8Array(end - offset));
      return;
    }
    if (offset % gb !== 0) throw new InternalError(`VMDK zero write at ${offset} is not grain-aligned (${gb})`);
    for (let at = offset; at < end; at += gb) {
      const grain = at / gb;
      // The last grain of the disk may be short; a zeroed entry covers it as well.
      this.w.writeZeroGrain(grain);
      this.written.add(grain);
    }
  }

  async commit(): Promise<ImageWriterSummary> {
    const fileSize = await this.w.commit();
    return { path: this.path, fileSize, bytesWritten: this.bytesWritten, clustersWritten: this.written.size };
  }

  async abort(): Promise<void> {
    await this.w.abort();
  }
}
