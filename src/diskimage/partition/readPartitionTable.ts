/**
 * Finds and reads the partition table of a disk: GPT (UEFI 2.10 section 5.3,
 * behind a protective MBR, 5.2.3), MBR with extended partitions (5.2.1), or none.
 * A sector 0 that carries 0x55AA but is a FAT/exFAT/NTFS boot sector is a
 * filesystem on the whole disk, not an MBR.
 */
import type { BlockDevice } from '../BlockDevice.js';
import { detectBootSectorFilesystem } from '../detectFilesystem.js';
import {
  GPT_PRIMARY_HEADER_LBA,
  GPT_SECTOR_SIZES,
  GPT_SIGNATURE,
  MBR_BOOT_INDICATOR_ACTIVE,
  MBR_BOOT_INDICATOR_INACTIVE,
  MBR_SECTOR_SIZE,
  MBR_TYPE_EMPTY,
  MBR_TYPE_GPT_PROTECTIVE,
} from './constants.js';
import { decodeMbr, hasMbrSignature } from './mbr.js';
import type { PartitionTable } from './PartitionTable.js';
import { readGpt } from './readGpt.js';
import { readMbr } from './readMbr.js';

export type { Partition, PartitionScheme, PartitionTable } from './PartitionTable.js';

async function hasGptSignatureAt(device: BlockDevice, byteOffset: number): Promise<boolean> {
  if (byteOffset < 0 || byteOffset + 8 > device.size) return false;
  const b = await device.read(byteOffset, 8);
  return new TextDecoder('latin1').decode(b) === GPT_SIGNATURE;
}

/**
 * The logical block size of the GPT on `device`: the first size whose primary
 * header (LBA 1), or failing that whose backup header (last LBA), carries the
 * signature; undefined if none does.
 */
async function probeGptSectorSize(device: BlockDevice): Promise<number | undefined> {
  for (const ss of GPT_SECTOR_SIZES) {
    if (await hasGptSignatureAt(device, GPT_PRIMARY_HEADER_LBA * ss)) return ss;
  }
  for (const ss of GPT_SECTOR_SIZES) {
    if (await hasGptSignatureAt(device, (Math.floor(device.size / ss) - 1) * ss)) return ss;
  }
  return undefined;
}

const none = (warnings: string[] = []): PartitionTable => ({ scheme: 'none', sectorSize: MBR_SECTOR_SIZE, partitions: [], warnings });

/**
 * Reads the partition table of `device`. `context.file` names the image in
 * errors; error offsets are byte offsets within the device (the guest disk).
 * Returns scheme 'none' for a disk without a table (blank, or a filesystem on
 * the whole disk). Findings that did not stop the read are in `warnings`.
 * Throws BAD_CHECKSUM / CORRUPT_IMAGE when both GPT copies are unusable, and
 * CORRUPT_IMAGE for partitions that overlap, lie beyond the disk or their
 * container, and for looping EBR chains; TRUNCATED and IO from the device.
 */
export async function readPartitionTable(device: BlockDevice, context: { file: string }): Promise<PartitionTable> {
  if (device.size < 2 * MBR_SECTOR_SIZE) return none();
  const sector0 = await device.read(0, MBR_SECTOR_SIZE);
  const isMbr = hasMbrSignature(sector0) && detectBootSectorFilesystem(sector0) === undefined;
  const mbr = isMbr ? decodeMbr(sector0, { file: context.file, structure: 'mbr', base: 0 }) : undefined;
  const gptSectorSize = await probeGptSectorSize(device);

  if (mbr !== undefined && mbr.partition_record.some((r) => r.os_type === MBR_TYPE_GPT_PROTECTIVE)) {
    const warnings: string[] = [];
    const others = mbr.partition_record.filter((r) => r.os_type !== MBR_TYPE_EMPTY && r.os_type !== MBR_TYPE_GPT_PROTECTIVE);
    if (others.length > 0) warnings.push(`hybrid MBR: ${others.length} MBR partition(s) besides the protective one were ignored; the GPT was used`);
    // With no signature anywhere, reading at 512 fails with the primary header's fault.
    return readGpt(device, context, { sectorSize: gptSectorSize ?? MBR_SECTOR_SIZE, warnings });
  }
  if (mbr === undefined) {
    if (gptSectorSize !== undefined) {
      return readGpt(device, context, { sectorSize: gptSectorSize, warnings: ['the disk has a GPT but no protective MBR'] });
    }
    return none();
  }
  // UEFI 5.2.1: BootIndicator is 0x00 or 0x80; other values mean sector 0 is not an MBR.
  if (mbr.partition_record.some((r) => r.boot_indicator !== MBR_BOOT_INDICATOR_ACTIVE && r.boot_indicator !== MBR_BOOT_INDICATOR_INACTIVE)) {
    return none();
  }
  const table = await readMbr(device, context, mbr);
  if (gptSectorSize !== undefined) {
    return { ...table, warnings: [...table.warnings, 'a GPT signature is present but the MBR has no protective partition; the MBR was used'] };
  }
  return table;
}
