/**
 * `imgdedup info IMAGE`: format, sizes, cluster size, the backing chain and the
 * partitions of the image as the guest sees it.
 */
import { openChain } from '../diskimage/openChain.js';
import type { FormatDetails } from '../diskimage/DiskImage.js';
import { formatBytes } from '../ui/format.js';
import { readPartitionTable, type PartitionScheme } from '../diskimage/partition/readPartitionTable.js';
import { detectFilesystem } from '../diskimage/detectFilesystem.js';
import type { BlockDevice } from '../diskimage/BlockDevice.js';

export interface LayerInfo {
  readonly file: string;
  readonly format: string;
  readonly virtualSize: number;
  readonly fileSize: number;
  /** Guest bytes this layer stores (data and zero extents). */
  readonly storedBytes: number;
  readonly clusterSize: number;
  readonly backingFile: string | null;
  readonly backingFormat: string | null;
  readonly details: FormatDetails;
}

export interface InfoResult {
  readonly file: string;
  readonly format: string;
  readonly virtualSize: number;
  readonly fileSize: number;
  readonly storedBytes: number;
  readonly clusterSize: number;
  /** The image itself first, then each backing file. */
  readonly chain: readonly LayerInfo[];
  /** The guest disk's partition table (of the whole chain, as the guest sees it). */
  readonly partitions: PartitionsInfo;
  readonly warnings: readonly string[];
}

export interface PartitionInfo {
  readonly index: number;
  readonly typeName: string;
  /** GPT PartitionTypeGUID. */
  readonly typeGuid?: string;
  /** MBR type byte. */
  readonly mbrType?: number;
  /** GPT partition name. */
  readonly name?: string;
  /** MBR: primary, extended or logical. */
  readonly kind?: string;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** Filesystem by magic number (display only); undefined if not recognised. */
  readonly filesystem?: string;
}

export interface PartitionsInfo {
  readonly scheme: PartitionScheme;
  readonly sectorSize: number;
  readonly diskGuid?: string;
  readonly diskSignature?: string;
  /** With scheme 'none': a filesystem on the whole disk, if one is recognised. */
  readonly filesystem?: string;
  readonly partitions: readonly PartitionInfo[];
}

/**
 * Reads the partition table of the guest disk and names each partition's filesystem.
 * Table warnings are appended to `warnings`. Throws what readPartitionTable throws.
 */
export async function describePartitions(device: BlockDevice, context: { file: string }, warnings: string[]): Promise<PartitionsInfo> {
  const table = await readPartitionTable(device, context);
  warnings.push(...table.warnings);
  const partitions: PartitionInfo[] = [];
  for (const p of table.partitions) {
    // An extended container holds EBRs and logicals, not a filesystem of its own.
    const filesystem = p.kind === 'extended' ? undefined : await detectFilesystem(p.device());
    partitions.push({
      index: p.index,
      typeName: p.typeName,
      ...(p.typeGuid !== undefined ? { typeGuid: p.typeGuid } : {}),
      ...(p.mbrType !== undefined ? { mbrType: p.mbrType } : {}),
      ...(p.name !== undefined ? { name: p.name } : {}),
      ...(p.kind !== undefined ? { kind: p.kind } : {}),
      startBytes: p.startBytes,
      sizeBytes: p.lengthBytes,
      ...(filesystem !== undefined ? { filesystem } : {}),
    });
  }
  const diskFs = table.scheme === 'none' ? await detectFilesystem(device) : undefined;
  return {
    scheme: table.scheme,
    sectorSize: table.sectorSize,
    ...(table.diskGuid !== undefined ? { diskGuid: table.diskGuid } : {}),
    ...(table.diskSignature !== undefined ? { diskSignature: table.diskSignature } : {}),
    ...(diskFs !== undefined ? { filesystem: diskFs } : {}),
    partitions,
  };
}

export interface InfoOptions {
  readonly image: string;
  readonly format?: string;
}

/** Opens IMAGE and its chain and describes them. Throws what openChain throws. */
export async function info(options: InfoOptions): Promise<InfoResult> {
  const chain = await openChain(options.image, options.format !== undefined ? { format: options.format } : {});
  try {
    const layers: LayerInfo[] = [];
    for (const layer of chain.layers) {
      let stored = 0;
      for await (const e of layer.allocation()) stored += e.length;
      layers.push({
        file: layer.path,
        format: layer.format,
        virtualSize: layer.size,
        fileSize: layer.fileSize,
        storedBytes: stored,
        clusterSize: layer.clusterSize,
        backingFile: layer.backing?.name ?? null,
        backingFormat: layer.backing?.format ?? null,
        details: layer.details,
      });
    }
    const top = layers[0]!;
    const warnings = [...chain.warnings];
    const partitions = await describePartitions(chain.device, { file: top.file }, warnings);
    return {
      file: top.file,
      format: top.format,
      virtualSize: top.virtualSize,
      fileSize: top.fileSize,
      storedBytes: top.storedBytes,
      clusterSize: top.clusterSize,
      chain: layers,
      partitions,
      warnings,
    };
  } finally {
    await chain.close();
  }
}

function formatDetails(details: FormatDetails, indent: string): string[] {
  return Object.entries(details).map(([k, v]) => `${indent}${k}: ${Array.isArray(v) ? v.join(', ') || '-' : v === null ? '-' : String(v)}`);
}

/** Human-readable rendering of an InfoResult. */
export function formatInfo(r: InfoResult): string {
  const top = r.chain[0]!;
  const lines: string[] = [
    `image: ${top.file}`,
    `file format: ${top.format}`,
    `virtual size: ${formatBytes(top.virtualSize)} (${top.virtualSize} bytes)`,
    `file size: ${formatBytes(top.fileSize)} (${top.fileSize} bytes)`,
    `stored by this layer: ${formatBytes(top.storedBytes)} (${top.storedBytes} bytes)`,
    `cluster size: ${top.clusterSize}`,
  ];
  if (top.backingFile !== null) lines.push(`backing file: ${top.backingFile}${top.backingFormat ? ` (format ${top.backingFormat})` : ''}`);
  const d = formatDetails(top.details, '  ');
  if (d.length > 0) lines.push('format specific:', ...d);
  if (r.chain.length > 1) {
    lines.push(`backing chain (${r.chain.length - 1} below):`);
    r.chain.slice(1).forEach((l, i) => {
      lines.push(
        `  ${i + 1}: ${l.file} (${l.format}, virtual ${formatBytes(l.virtualSize)}, stores ${formatBytes(l.storedBytes)}, cluster ${l.clusterSize}` +
          `${l.backingFile !== null ? `, backing ${l.backingFile}` : ''})`,
      );
    });
  }
  lines.push(...formatPartitions(r.partitions));
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

/** The partition lines of `info`'s text output. */
export function formatPartitions(p: PartitionsInfo): string[] {
  if (p.scheme === 'none') return [`partition table: none${p.filesystem !== undefined ? ` (whole-disk filesystem: ${p.filesystem})` : ''}`];
  const id = p.diskGuid ?? p.diskSignature;
  const lines = [`partition table: ${p.scheme}${id !== undefined ? ` (disk id ${id})` : ''}, ${p.partitions.length} partition(s), sector size ${p.sectorSize}`];
  for (const e of p.partitions) {
    const type = e.typeGuid !== undefined ? `${e.typeName} {${e.typeGuid}}` : `${e.typeName} (0x${(e.mbrType ?? 0).toString(16).padStart(2, '0')}${e.kind !== undefined ? `, ${e.kind}` : ''})`;
    const name = e.name !== undefined && e.name !== '' ? ` "${e.name}"` : '';
    lines.push(
      `  ${e.index}: start ${e.startBytes} size ${e.sizeBytes} (${formatBytes(e.sizeBytes)}) type ${type}${name} filesystem ${e.filesystem ?? '-'}`,
    );
  }
  return lines;
}
