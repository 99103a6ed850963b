/**
 * Structural check of a VMDK (`imgdedup check`), per hosted sparse extent
 * (VMDK 5.0, "Grain Directories and Grain Tables"): the grain directory and every
 * grain table lie in the file, the redundant grain directory agrees with the
 * primary (same grain table contents), every GTE points inside the file, and no
 * two grains (nor a grain and the metadata) overlap. Flat extents have no metadata.
 */
import { CheckCollector, DEFAULT_MAX_CHECK_ERRORS, type CheckResult } from '../CheckResult.js';
import { VmdkImage } from './VmdkImage.js';
import type { SparseExtent } from './grainTables.js';
import { VMDK4_FLAG_RGD, VMDK4_GTE_UNALLOCATED, VMDK4_GTE_ZEROED, VMDK_SECTOR_SIZE } from './constants.js';

export interface CheckVmdkOptions {
  readonly maxErrors?: number;
}

/**
 * Checks `path`. Returns the findings; throws what VmdkImage.open throws when the
 * image cannot be opened at all (CORRUPT_IMAGE, UNSUPPORTED_FORMAT, ...).
 */
export async function checkVmdk(path: string, options: CheckVmdkOptions = {}): Promise<CheckResult> {
  const img = await VmdkImage.open(path);
  const c = new CheckCollector(options.maxErrors ?? DEFAULT_MAX_CHECK_ERRORS);
  let checked = 0;
  let end = 0;
  try {
    for (const ext of img.sparseExtents) {
      const r = await checkExtent(ext, c);
      checked += r.grains;
      end = Math.max(end, r.end);
    }
    if (img.sparseExtents.length === 0) end = img.fileSize;
  } finally {
    await img.close();
  }
  return {
    file: path,
    format: 'vmdk',
    clean: c.findings === 0,
    dirty: false,
    corruptions: c.corruptions,
    leaks: c.leaks,
    errors: c.errors,
    errorsOmitted: c.omitted,
    checkedClusters: checked,
    imageEndOffset: end,
  };
}

async function checkExtent(ext: SparseExtent, c: CheckCollector): Promise<{ grains: number; end: number }> {
  const h = ext.header;
  const file = ext.file;
  const gtBytes = h.numGTEsPerGT * 4;
  if (ext.gdSource === 'redundant') {
    c.add({ kind: 'outside_file', structure: 'vmdk.gd', offset: 56, detail: `${file.path}: the primary grain directory is unusable; the redundant copy was used`, counts: 'corruption' });
  }
  // The redundant directory must describe the same grains as the primary.
  if (ext.gdSource === 'primary' && (h.flags & VMDK4_FLAG_RGD) !== 0 && h.rgdOffset !== 0) {
    const rgdAt = h.rgdOffset * VMDK_SECTOR_SIZE;
    if (rgdAt + ext.gd.length * 4 > file.size) {
      c.add({ kind: 'outside_file', structure: 'vmdk.header.rgdOffset', offset: 48, detail: 'the redundant grain directory lies outside the file', counts: 'corruption' });
    } else {
      const rgd = await file.readExact(rgdAt, ext.gd.length * 4, 'vmdk.rgd');
      const rv = new DataView(rgd.buffer);
      for (let i = 0; i < ext.gd.length; i++) {
        const rgt = rv.getUint32(i * 4, true);
        const gt = ext.gd[i]!;
        const at = rgdAt + i * 4;
        if ((rgt === 0) !== (gt === 0)) {
          c.add({ kind: 'invalid_entry', structure: `vmdk.rgd[${i}]`, offset: at, detail: 'the redundant grain directory disagrees with the primary about this grain table', counts: 'corruption' });
          continue;
        }
        if (gt === 0) continue;
        if (rgt * VMDK_SECTOR_SIZE + gtBytes > file.size) {
          c.add({ kind: 'outside_file', structure: `vmdk.rgd[${i}]`, offset: at, detail: 'redundant grain table lies outside the file', counts: 'corruption' });
          continue;
        }
        const a = await file.readExact(gt * VMDK_SECTOR_SIZE, gtBytes, 'vmdk.gt');
        const b = await file.readExact(rgt * VMDK_SECTOR_SIZE, gtBytes, 'vmdk.rgt');
        if (!Buffer.from(a).equals(Buffer.from(b))) {
          c.add({ kind: 'invalid_entry', structure: `vmdk.rgt[${i}]`, offset: rgt * VMDK_SECTOR_SIZE, detail: 'redundant grain table differs from the primary', counts: 'corruption' });
        }
      }
    }
  }
  // Every allocated grain, as [startSector, endSector), plus metadata, to find overlaps.
  const grainSectors = ext.compressed || ext.hasMarkers ? 1 : h.grainSize;
  const used: number[] = [];
  let grains = 0;
  let end = 0;
  for (let i = 0; i < ext.gd.length; i++) {
    const gtSector = ext.gd[i]!;
    if (gtSector === 0) continue;
    const gt = await ext.readGrainTable(i);
    if (gt === undefined) continue;
    end = Math.max(end, gtSector * VMDK_SECTOR_SIZE + gtBytes);
    for (let j = 0; j < gt.length; j++) {
      const gte = gt[j]!;
      if (gte === VMDK4_GTE_UNALLOCATED || gte === VMDK4_GTE_ZEROED) continue;
      grains++;
      const at = gtSector * VMDK_SECTOR_SIZE + j * 4;
      if ((gte + grainSectors) * VMDK_SECTOR_SIZE > file.size) {
        c.add({ kind: 'outside_file', structure: `vmdk.gt[${i}][${j}]`, offset: at, detail: `grain at sector ${gte} lies outside the file (${file.size} bytes)`, counts: 'corruption' });
        continue;
      }
      if (gte < h.overHead && !(ext.hasMarkers)) {
        c.add({ kind: 'overlap', structure: `vmdk.gt[${i}][${j}]`, offset: at, detail: `grain at sector ${gte} lies in the metadata area (overHead ${h.overHead} sectors)`, counts: 'corruption' });
      }
      used.push(gte);
      end = Math.max(end, (gte + grainSectors) * VMDK_SECTOR_SIZE);
    }
  }
  used.sort((a, b) => a - b);
  for (let k = 1; k < used.length; k++) {
    if (used[k - 1]! + grainSectors > used[k]!) {
      c.add({ kind: 'overlap', structure: 'vmdk.gt', offset: used[k]! * VMDK_SECTOR_SIZE, detail: `grains at sectors ${used[k - 1]} and ${used[k]} overlap`, counts: 'corruption' });
    }
  }
  return { grains, end };
}
