/**
 * Reads an MBR partition table (UEFI 2.10 section 5.2.1) with its extended
 * partitions: each extended container (types 0x05, 0x0F, 0x85) holds a chain of
 * EBRs, each describing one logical partition (record 0, relative to the EBR)
 * and linking to the next EBR (an extended-type record, relative to the
 * container's start). Logical partitions are numbered from 5, as Linux does.
 */
import type { BlockDevice } from '../BlockDevice.js';
import { CorruptImageError } from '../../errors.js';
import {
  MBR_BOOT_INDICATOR_ACTIVE,
  MBR_EXTENDED_TYPES,
  MBR_FIRST_LOGICAL_INDEX,
  MBR_MAX_LOGICAL_PARTITIONS,
  MBR_SECTOR_SIZE,
  MBR_SIGNATURE_OFFSET,
  MBR_TYPE_EMPTY,
} from './constants.js';
import { decodeMbr, hasMbrSignature, mbrRecordFieldOffset, type Mbr } from './mbr.js';
import { mbrTypeName } from './mbrTypes.js';
import { makePartition, type PartitionFields, type PartitionTable } from './PartitionTable.js';

interface Span {
  readonly index: number;
  readonly startLba: number;
  readonly sizeLba: number;
  /** Device offset of the record's starting_lba field, for errors. */
  readonly recordOffset: number;
  readonly structure: string;
}

/** Throws CORRUPT_IMAGE at the later of two overlapping spans. */
function checkOverlaps(spans: readonly Span[], file: string): void {
  const sorted = [...spans].sort((a, b) => a.startLba - b.startLba || a.index - b.index);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.startLba < prev.startLba + prev.sizeLba) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file,
        structure: `${cur.structure}.starting_lba`,
        offset: cur.recordOffset,
        detail: `partition ${cur.index} (LBAs ${cur.startLba}..${cur.startLba + cur.sizeLba - 1}) overlaps partition ${prev.index} (LBAs ${prev.startLba}..${prev.startLba + prev.sizeLba - 1})`,
      });
    }
  }
}

const isUsed = (r: { os_type: number; size_in_lba: number }): boolean => r.os_type !== MBR_TYPE_EMPTY && r.size_in_lba !== 0;

/**
 * Builds the partition table from a decoded MBR (sector 0, already judged to be
 * an MBR) and the EBR chains it points to.
 * Throws CORRUPT_IMAGE, at the device offset of the offending record, for a
 * partition beyond the disk or outside its extended container, overlapping
 * partitions, an EBR without its 0x55AA signature, an EBR chain that loops or
 * leaves its container, and a chain longer than 256 logical partitions.
 */
export async function readMbr(device: BlockDevice, context: { file: string }, mbr: Mbr): Promise<PartitionTable> {
  const { file } = context;
  const deviceSectors = Math.floor(device.size / MBR_SECTOR_SIZE);
  const fields: PartitionFields[] = [];
  const primaries: Span[] = [];

  mbr.partition_record.forEach((rec, i) => {
    if (!isUsed(rec)) return;
    const structure = `mbr.partition_record[${i}]`;
    if (rec.starting_lba === 0) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file, structure: `${structure}.starting_lba`, offset: mbrRecordFieldOffset(i, 'starting_lba'), detail: 'partition starts at LBA 0 (the MBR itself)' });
    }
    if (rec.starting_lba + rec.size_in_lba > deviceSectors) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file,
        structure: `${structure}.size_in_lba`,
        offset: mbrRecordFieldOffset(i, 'size_in_lba'),
        detail: `partition ${i + 1} (LBAs ${rec.starting_lba}..${rec.starting_lba + rec.size_in_lba - 1}) extends beyond the disk (${deviceSectors} sectors)`,
      });
    }
    primaries.push({ index: i + 1, startLba: rec.starting_lba, sizeLba: rec.size_in_lba, recordOffset: mbrRecordFieldOffset(i, 'starting_lba'), structure });
    const extended = MBR_EXTENDED_TYPES.has(rec.os_type);
    fields.push({
      index: i + 1,
      startBytes: rec.starting_lba * MBR_SECTOR_SIZE,
      lengthBytes: rec.size_in_lba * MBR_SECTOR_SIZE,
      typeName: mbrTypeName(rec.os_type),
      mbrType: rec.os_type,
      bootable: rec.boot_indicator === MBR_BOOT_INDICATOR_ACTIVE,
      kind: extended ? 'extended' : 'primary',
    });
  });
  checkOverlaps(primaries, file);

  let nextIndex = MBR_FIRST_LOGICAL_INDEX;
  for (const ext of primaries.filter((p) => MBR_EXTENDED_TYPES.has(mbr.partition_record[p.index - 1]!.os_type))) {
    const extStart = ext.startLba;
    const extEnd = ext.startLba + ext.sizeLba; // exclusive
    const logicals: Span[] = [];
    const visited = new Set<number>();
    let ebrLba = extStart;
    // Where the pointer to the current EBR is stored, for errors about it.
    let linkStructure = `${ext.structure}.starting_lba`;
    let linkOffset = ext.recordOffset;
    for (;;) {
      if (visited.has(ebrLba)) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file, structure: linkStructure, offset: linkOffset, detail: `EBR chain loops back to LBA ${ebrLba}` });
      }
      if (ebrLba < extStart || ebrLba >= extEnd) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file, structure: linkStructure, offset: linkOffset, detail: `EBR at LBA ${ebrLba} lies outside its extended partition (LBAs ${extStart}..${extEnd - 1})` });
      }
      if (visited.size >= MBR_MAX_LOGICAL_PARTITIONS) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file, structure: linkStructure, offset: linkOffset, detail: `more than ${MBR_MAX_LOGICAL_PARTITIONS} logical partitions` });
      }
      visited.add(ebrLba);
      const base = ebrLba * MBR_SECTOR_SIZE;
      const sector = await device.read(base, MBR_SECTOR_SIZE);
      const structure = `ebr[${ebrLba}]`;
      if (!hasMbrSignature(sector)) {
        throw new CorruptImageError('CORRUPT_IMAGE', { file, structure: `${structure}.signature`, offset: base + MBR_SIGNATURE_OFFSET, detail: 'EBR lacks the 0x55AA signature' });
      }
      const ebr = decodeMbr(sector, { file, structure, base });
      const logical = ebr.partition_record[0]!;
      if (isUsed(logical) && !MBR_EXTENDED_TYPES.has(logical.os_type)) {
        const startLba = ebrLba + logical.starting_lba;
        if (logical.starting_lba === 0 || startLba + logical.size_in_lba > extEnd) {
          throw new CorruptImageError('CORRUPT_IMAGE', {
            file,
            structure: `${structure}.partition_record[0].size_in_lba`,
            offset: base + mbrRecordFieldOffset(0, 'size_in_lba'),
            detail: `logical partition ${nextIndex} (LBAs ${startLba}..${startLba + logical.size_in_lba - 1}) lies outside its extended partition (LBAs ${extStart + 1}..${extEnd - 1})`,
          });
        }
        logicals.push({ index: nextIndex, startLba, sizeLba: logical.size_in_lba, recordOffset: base + mbrRecordFieldOffset(0, 'starting_lba'), structure: `${structure}.partition_record[0]` });
        fields.push({
          index: nextIndex,
          startBytes: startLba * MBR_SECTOR_SIZE,
          lengthBytes: logical.size_in_lba * MBR_SECTOR_SIZE,
          typeName: mbrTypeName(logical.os_type),
          mbrType: logical.os_type,
          bootable: logical.boot_indicator === MBR_BOOT_INDICATOR_ACTIVE,
          kind: 'logical',
        });
        nextIndex++;
      }
      // The link is the first extended-type record after record 0 (normally record 1).
      const linkSlot = ebr.partition_record.findIndex((r, i) => i > 0 && isUsed(r) && MBR_EXTENDED_TYPES.has(r.os_type));
      if (linkSlot < 0) break;
      linkStructure = `${structure}.partition_record[${linkSlot}].starting_lba`;
      linkOffset = base + mbrRecordFieldOffset(linkSlot, 'starting_lba');
      ebrLba = extStart + ebr.partition_record[linkSlot]!.starting_lba;
    }
    checkOverlaps(logicals, file);
  }

  fields.sort((a, b) => a.index - b.index);
  return {
    scheme: 'mbr',
    sectorSize: MBR_SECTOR_SIZE,
    diskSignature: mbr.unique_mbr_disk_signature.toString(16).padStart(8, '0'),
    partitions: fields.map((f) => makePartition(device, f, context)),
    warnings: [],
  };
}
