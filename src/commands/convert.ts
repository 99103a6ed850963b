/**
 * `imgdedup convert SRC DST`: copies the guest content of SRC (read through its
 * whole backing chain) into a new standalone qcow2 or sparse raw image, or, with
 * `backing`, into a qcow2 overlay on that file holding only what differs from it
 * (like `qemu-img convert -B`). The output is written atomically.
 */
import { resolve } from 'node:path';
import { ChainDevice } from '../diskimage/ChainDevice.js';
import type { DiskImage } from '../diskimage/DiskImage.js';
import { layerAtPath, openChain, realFilePath, resolveBackingPath, type ImageChain } from '../diskimage/openChain.js';
import { copyDevice } from '../diskimage/convertImage.js';
import { checkOutputPath } from '../diskimage/AtomicOutput.js';
import type { ImageWriter } from '../diskimage/ImageWriter.js';
import { Qcow2Writer } from '../diskimage/qcow2/Qcow2Writer.js';
import { RawWriter } from '../diskimage/raw/RawWriter.js';
import { UsageError } from '../errors.js';
import { formatNamedBy } from './outputImage.js';
import { VmdkImage } from '../diskimage/vmdk/VmdkImage.js';
import { VmdkImageWriter, writeStreamOptimizedVmdk, type VmdkSubformat } from '../diskimage/vmdk/VmdkWriter.js';
import { markOutputsComplete } from '../diskimage/tempFiles.js';

export type ConvertOutputFormat = 'qcow2' | 'raw' | 'vmdk';

export interface ConvertOptions {
  readonly source: string;
  readonly output: string;
  /** Output format. Default qcow2. */
  readonly outputFormat?: ConvertOutputFormat;
  /** Format of SRC (default: probe). */
  readonly sourceFormat?: string;
  /** Backing file name for the output, recorded as given; relative names are relative to the output's directory. */
  readonly backing?: string;
  /** Format of the backing file (default: probe), recorded in the output. */
  readonly backingFormat?: string;
  /** qcow2 cluster size or VMDK grain size; refused for raw output. Default 64 KiB. */
  readonly clusterSize?: number;
  /** qcow2 extended L2 entries (subclusters). */
  readonly extendedL2?: boolean;
  /** VMDK output subformat. Default monolithicSparse. */
  readonly subformat?: VmdkSubformat;
  /** Replace an existing output. */
  readonly force?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface ConvertResult {
  readonly output: string;
  readonly format: ConvertOutputFormat;
  readonly virtualSize: number;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  readonly backing: string | null;
  readonly backingFormat: string | null;
  /** Size of the output file, in bytes. */
  readonly fileSize: number;
  /** Guest data bytes written. */
  readonly bytesWritten: number;
  /** Output clusters allocated for data (raw: units written). */
  readonly clustersWritten: number;
  /** Allocation units (clusters, or subclusters with extended L2) skipped because they read as zeros. */
  readonly zeroClustersSkipped: number;
  /** Units skipped because they equal the backing file (with backing only). */
  readonly unchangedClusters: number;
  /** Units written as explicit zeros over backing data (with backing only). */
  readonly zeroClustersWritten: number;
  readonly seconds: number;
}

/**
 * Converts SRC into DST. Throws USAGE (options that do not fit the output format,
 * DST naming the backing file, an empty DST), OUTPUT_EXISTS (DST exists without `force`,
 * or is not a regular file), IO (DST's directory missing or unwritable), whatever opening SRC or the backing
 * chain throws (CORRUPT_IMAGE, BACKING_FILE_MISSING, ...), and IO. On failure no
 * output (and no temporary file) is left behind.
 */
export async function convert(options: ConvertOptions): Promise<ConvertResult> {
  const started = performance.now();
  const format = options.outputFormat ?? 'qcow2';
  // Name only the option that was given: each refusal says what to drop.
  if (format === 'raw' && options.backing !== undefined) throw new UsageError('raw output cannot have a backing file (--backing applies to qcow2 and VMDK output)');
  if (format === 'raw' && options.extendedL2) throw new UsageError('raw output has no extended L2 entries (--extended-l2 applies to qcow2 output)');
  if (format === 'raw' && options.clusterSize !== undefined) throw new UsageError('raw output has no clusters (--cluster-size applies to qcow2 and VMDK output)');
  if (options.backingFormat !== undefined && options.backing === undefined) throw new UsageError('--backing-format needs --backing');
  if (options.subformat !== undefined && format !== 'vmdk') throw new UsageError('--subformat applies to VMDK output only');
  if (format === 'vmdk' && options.extendedL2) throw new UsageError('VMDK output has no extended L2 entries');
  if (format === 'vmdk' && options.subformat === 'streamOptimized' && options.backing !== undefined) throw new UsageError('a streamOptimized VMDK cannot have a backing file');
  if (format === 'vmdk' && options.clusterSize !== undefined && options.clusterSize < 4096) throw new UsageError('VMDK grains are at least 4k');
  const clusterSize = options.clusterSize ?? 65536;
  // The output is checked before SRC is read: a bad DST must not cost a whole copy.
  await checkOutputPath(options.output, options.force ? { overwrite: true } : {});
  let src: ImageChain | undefined;
  let base: ImageChain | undefined;
  let writer: ImageWriter | undefined;
  try {
    src = await openChain(options.source, options.sourceFormat !== undefined ? { format: options.sourceFormat } : {});
    let backingFormat: string | undefined;
    if (options.backing !== undefined) {
      const backingPath = resolveBackingPath(resolve(options.output), options.backing);
      if (backingPath === resolve(options.output)) throw new UsageError('the output cannot be its own backing file', { file: options.output });
      base = await openChain(backingPath, options.backingFormat !== undefined ? { format: options.backingFormat } : {});
      backingFormat = options.backingFormat ?? base.layers[0]!.format;
    }
    // DST must not replace a file SRC or the backing file reads (with --force too): every
    // overlay on it would silently change (qemu-img: "Failed to get write lock").
    for (const [chain, what] of [[src, 'SRC'], [base, 'the backing file']] as const) {
      const l = chain === undefined ? undefined : await layerAtPath(chain, options.output);
      if (l !== undefined) {
        throw new UsageError(`the output ${options.output} is ${l === chain!.layers[0] ? `${what} itself` : `in ${what === 'SRC' ? "SRC's" : "the backing file's"} backing chain (${l.path})`}; inputs are never modified`, { file: options.output });
      }
    }
    const size = src.device.size;
    if (format === 'vmdk' && options.subformat === 'streamOptimized') {
      const r = await writeStreamOptimizedVmdk(src.device, options.output, { grainSizeSectors: clusterSize / 512, ...(options.force ? { overwrite: true } : {}) });
      return {
        output: options.output,
        format,
        virtualSize: size,
        clusterSize,
        extendedL2: false,
        backing: null,
        backingFormat: null,
        fileSize: r.fileSize,
        bytesWritten: r.grainsWritten * clusterSize,
        clustersWritten: r.grainsWritten,
        zeroClustersSkipped: Math.ceil(size / clusterSize) - r.grainsWritten,
        unchangedClusters: 0,
        zeroClustersWritten: 0,
        seconds: Math.round(performance.now() - started) / 1000,
      };
    }
    let vmdkParent: { fileNameHint: string; cid: number } | undefined;
    if (format === 'vmdk' && base !== undefined) {
      // A VMDK delta records its parent's CID; only a VMDK parent has one.
      const top = base.layers[0]!;
      if (!(top instanceof VmdkImage)) throw new UsageError(`a VMDK delta needs a VMDK parent (${options.backing} is ${top.format})`);
      vmdkParent = { fileNameHint: options.backing!, cid: top.cid };
      backingFormat = 'vmdk';
    }
    writer =
      format === 'vmdk'
        ? await VmdkImageWriter.create(options.output, size, {
            grainSizeSectors: clusterSize / 512,
            ...(vmdkParent !== undefined ? { parent: vmdkParent } : {}),
            ...(options.force ? { overwrite: true } : {}),
          })
        : format === 'raw'
        ? await RawWriter.create(options.output, { size, unitSize: clusterSize, ...(options.force ? { overwrite: true } : {}) })
        : await Qcow2Writer.create(options.output, {
            size,
            clusterSize,
            extendedL2: options.extendedL2 ?? false,
            ...(options.backing !== undefined ? { backing: { name: options.backing, ...(backingFormat !== undefined ? { format: backingFormat } : {}) } } : {}),
            ...(options.force ? { overwrite: true } : {}),
          });
    const above = base !== undefined ? await layersAbove(src, base) : undefined;
    const stats = await copyDevice(src.device, writer, {
      ...(base !== undefined ? { base: base.device } : {}),
      // SRC sits on the backing file itself: only what its own layers store can differ from it.
      ...(above !== undefined ? { ranges: () => new ChainDevice(above).allocation() } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const summary = await writer.commit();
    markOutputsComplete();
    return {
      output: options.output,
      format,
      virtualSize: size,
      clusterSize,
      extendedL2: options.extendedL2 ?? false,
      backing: options.backing ?? null,
      backingFormat: backingFormat ?? null,
      fileSize: summary.fileSize,
      bytesWritten: summary.bytesWritten,
      clustersWritten: summary.clustersWritten,
      zeroClustersSkipped: stats.zeroUnitsSkipped,
      unchangedClusters: stats.unchangedUnits,
      zeroClustersWritten: stats.zeroUnitsWritten,
      seconds: Math.round(performance.now() - started) / 1000,
    };
  } catch (err) {
    await writer?.abort();
    throw err;
  } finally {
    await src?.close();
    await base?.close();
  }
}

/**
 * A note for an output whose extension names another format than the one written
 * (`convert q.qcow2 o.raw` writes qcow2, the default -O), or undefined. Nothing changes:
 * the format is what -O says.
 */
export function extensionHint(output: string, format: ConvertOutputFormat, defaulted: boolean): string | undefined {
  const named = formatNamedBy(output);
  if (named === undefined || named === format) return undefined;
  return `${output} is written as ${format} (-O ${format}${defaulted ? ', the default' : ''}), although its extension names ${named}`;
}

/** Human-readable summary of a conversion. */
export function formatConvert(r: ConvertResult): string {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const lines = [
    `output:          ${r.output} (${r.format}${r.format === 'qcow2' ? `, cluster ${r.clusterSize}${r.extendedL2 ? ', extended L2' : ''}` : r.format === 'vmdk' ? `, grain ${r.clusterSize}` : ''})`,
    ...(r.backing !== null ? [`backing:         ${r.backing}${r.backingFormat !== null ? ` (${r.backingFormat})` : ''}`] : []),
    `virtual size:    ${r.virtualSize} bytes`,
    `written:         ${r.bytesWritten} bytes in ${r.clustersWritten} clusters; file ${r.fileSize} bytes`,
    `zero skipped:    ${r.zeroClustersSkipped} units`,
    ...(r.backing !== null ? [`same as backing: ${r.unchangedClusters} units; zeroed over backing: ${r.zeroClustersWritten} units`] : []),
    `time:            ${r.seconds.toFixed(2)} s (${r.seconds > 0 ? mib(r.bytesWritten / r.seconds) : '-'} MiB/s written)`,
  ];
  return lines.join('\n');
}

/** Parses a cluster size such as `65536`, `4k`, `64K` or `2M`. Throws USAGE. */
export function parseClusterSize(text: string): number {
  const m = /^(\d+)\s*([kKmM]?)(?:i?[bB])?$/.exec(text.trim());
  const n = m ? Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : 1048576) : NaN;
  if (!Number.isSafeInteger(n) || n < 512 || n > 2 * 1048576 || (n & (n - 1)) !== 0) {
    throw new UsageError(`--cluster-size must be a power of two from 512 to 2M (got "${text}")`);
  }
  return n;
}

/**
 * The layers of SRC above BASE when SRC's chain ends in BASE's very files (the same
 * files in the same order) and every layer has the same size; else undefined. Only those
 * layers can make SRC differ from BASE, so an overlay on BASE costs what they store,
 * not a walk of BASE's whole allocation. (A layer smaller than the disk would hide what
 * lies below its end: then the whole disk is compared.)
 */
async function layersAbove(src: ImageChain, base: ImageChain): Promise<DiskImage[] | undefined> {
  const k = src.layers.length - base.layers.length;
  if (k <= 0) return undefined;
  for (let i = 0; i < base.layers.length; i++) {
    if ((await realFilePath(src.layers[k + i]!.path)) !== (await realFilePath(base.layers[i]!.path))) return undefined;
  }
  if (src.layers.some((l) => l.size !== src.device.size)) return undefined;
  return src.layers.slice(0, k);
}
