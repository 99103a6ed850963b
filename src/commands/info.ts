/**
 * `imgdedup info IMAGE`: format, sizes, cluster size, the backing chain and the
 * partitions of the image as the guest sees it.
 */
import { openChain } from '../diskimage/openChain.js';
import type { FormatDetails } from '../diskimage/DiskImage.js';
import { formatBytes } from '../ui/format.js';

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
  readonly warnings: readonly string[];
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
    return {
      file: top.file,
      format: top.format,
      virtualSize: top.virtualSize,
      fileSize: top.fileSize,
      storedBytes: top.storedBytes,
      clusterSize: top.clusterSize,
      chain: layers,
      warnings: chain.warnings,
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
  const lines: string[] = [];
  r.chain.forEach((l, i) => {
    const indent = i === 0 ? '' : '  '.repeat(i);
    if (i > 0) lines.push(`${indent}backing layer ${i}:`);
    lines.push(`${indent}image: ${l.file}`);
    lines.push(`${indent}file format: ${l.format}`);
    lines.push(`${indent}virtual size: ${formatBytes(l.virtualSize)} (${l.virtualSize} bytes)`);
    lines.push(`${indent}file size: ${formatBytes(l.fileSize)} (${l.fileSize} bytes)`);
    lines.push(`${indent}stored by this layer: ${formatBytes(l.storedBytes)} (${l.storedBytes} bytes)`);
    lines.push(`${indent}cluster size: ${l.clusterSize}`);
    if (l.backingFile !== null) lines.push(`${indent}backing file: ${l.backingFile}${l.backingFormat ? ` (format ${l.backingFormat})` : ''}`);
    const d = formatDetails(l.details, `${indent}  `);
    if (d.length > 0) lines.push(`${indent}format specific:`, ...d);
  });
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}
