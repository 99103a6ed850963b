/**
 * The image writers `apply` and `rebase` write their outputs with, and how a copy-on-write
 * layer is written into one: a complete image or
 * an overlay, in qcow2, VMDK (monolithicSparse, or a delta with its parent's CID) or
 * sparse raw.
 */
import { InternalError } from '../errors.js';
import type { CowDevice, CowEmitOptions, CowEmitStats } from '../diskimage/cow/CowDevice.js';
import type { DiskImage } from '../diskimage/DiskImage.js';
import type { ImageWriter } from '../diskimage/ImageWriter.js';
import { Qcow2Image } from '../diskimage/qcow2/Qcow2Image.js';
import { Qcow2Writer } from '../diskimage/qcow2/Qcow2Writer.js';
import { RawWriter } from '../diskimage/raw/RawWriter.js';
import { VmdkImageWriter } from '../diskimage/vmdk/VmdkWriter.js';

export type OutputFormat = 'qcow2' | 'vmdk' | 'raw';

export interface OutputWriterOptions {
  /** Write an overlay on this image: its name as recorded (relative to the output's directory), its format, and for VMDK its CID. */
  readonly backing?: { readonly name: string; readonly format: string; readonly cid?: number };
  /** qcow2 cluster size (default 64 KiB); VMDK grains are 4 KiB, raw units 64 KiB. */
  readonly clusterSize?: number;
  /** qcow2: extended L2 entries (subclusters). Default off. */
  readonly extendedL2?: boolean;
  /** Replace an existing regular file. */
  readonly overwrite?: boolean;
  /** Write nothing (qcow2 and VMDK): commit reports the size of the file that would have been made. */
  readonly sizeOnly?: boolean;
}

/**
 * A complete copy's layout as `image` has it: a qcow2's cluster size and extended L2
 * entries (the new base of a rebase, apply's complete output), so the copy does not
 * silently change what its maker chose. Other formats have nothing to keep.
 */
export function layoutOf(image: DiskImage): Pick<OutputWriterOptions, 'clusterSize' | 'extendedL2'> {
  return image instanceof Qcow2Image ? { clusterSize: image.clusterSize, extendedL2: image.extendedL2 } : {};
}

/** Formats that a file name's extension usually names (what qemu users expect to find in such a file). */
const EXTENSION_FORMATS: Readonly<Record<string, OutputFormat>> = { raw: 'raw', img: 'raw', qcow2: 'qcow2', qcow: 'qcow2', vmdk: 'vmdk' };

/** The format the extension of `path` names, if it names one. */
export function formatNamedBy(path: string): OutputFormat | undefined {
  const ext = /\.([A-Za-z0-9]+)$/.exec(path)?.[1]?.toLowerCase();
  return ext !== undefined ? EXTENSION_FORMATS[ext] : undefined;
}

/** A writer of a new `format` image of `size` bytes at `path` (atomic: see AtomicOutput). */
export async function createOutputWriter(format: OutputFormat, path: string, size: number, opts: OutputWriterOptions = {}): Promise<ImageWriter> {
  const over = { ...(opts.overwrite ? { overwrite: true } : {}), ...(opts.sizeOnly ? { sizeOnly: true } : {}) };
  if (format === 'vmdk') {
    return VmdkImageWriter.create(path, size, { grainSizeSectors: 8, ...(opts.backing ? { parent: { fileNameHint: opts.backing.name, cid: opts.backing.cid ?? 0 } } : {}), ...over });
  }
  if (format === 'raw') {
    if (opts.sizeOnly) throw new InternalError('a raw output has no layout to size');
    return RawWriter.create(path, { size, unitSize: 65536, ...(opts.overwrite ? { overwrite: true } : {}) });
  }
  return Qcow2Writer.create(path, {
    size,
    clusterSize: opts.clusterSize ?? 65536,
    extendedL2: opts.extendedL2 ?? false,
    ...(opts.backing ? { backing: { name: opts.backing.name, format: opts.backing.format } } : {}),
    ...over,
  });
}

/**
 * Writes the layer `cow` holds into `writer` (an overlay: what changed; else the whole
 * device) and commits it; on failure the writer is aborted (no file left). Returns the
 * output's size.
 */
export async function emitAndCommit(cow: CowDevice, writer: ImageWriter, options?: CowEmitOptions): Promise<number> {
  return (await emitThenCommit(cow, writer, options)).committed;
}

/**
 * Like emitAndCommit, but returns once the layer is written, with the commit (metadata,
 * fsync, rename) still running: `committed` settles with the output's size, or rejects
 * (the writer aborted: no file left). The caller's next work overlaps the wait on the disk.
 */
export async function emitThenCommit(cow: CowDevice, writer: ImageWriter, options?: CowEmitOptions): Promise<{ readonly committed: Promise<number>; readonly stats: CowEmitStats }> {
  let stats: CowEmitStats;
  try {
    stats = await cow.emitTo(writer, options);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  const committed = writer.commit().then(
    (s) => s.fileSize,
    async (err: unknown) => {
      await writer.abort();
      throw err;
    },
  );
  return { committed, stats };
}
