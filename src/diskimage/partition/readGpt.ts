/**
 * Reads a GPT from a device (UEFI 2.10 section 5.3): the primary header at LBA 1
 * and its entry array, falling back to the backup header at the last LBA (and
 * its array) when the primary copy is unusable, as 5.3.2 prescribes. Using the
 * backup, or finding it damaged, is reported in `warnings`.
 */
import type { BlockDevice } from '../BlockDevice.js';
import { CorruptImageError } from '../../errors.js';
import { GPT_PRIMARY_HEADER_LBA } from './constants.js';
import { decodeGptEntries, decodeGptHeader, gptEntryArrayBytes, verifyGptEntryArray, type GptEntry, type GptHeader } from './gpt.js';
import { gptTypeName } from './gptTypes.js';
import { makePartition, type PartitionTable } from './PartitionTable.js';

interface GptCopy {
  readonly header: GptHeader;
  readonly array: Uint8Array;
  readonly arrayBase: number;
}

/** Reads and checks one header + entry array copy. Throws CorruptImageError if either is bad. */
async function readCopy(device: BlockDevice, file: string, lba: number, sectorSize: number, structure: string): Promise<GptCopy> {
  const deviceSectors = Math.floor(device.size / sectorSize);
  if (lba < 0 || lba >= deviceSectors) {
    throw new CorruptImageError('CORRUPT_IMAGE', { file, structure, offset: lba * sectorSize, detail: `GPT header LBA ${lba} is beyond the device end (${deviceSectors} sectors)` });
  }
  const sector = await device.read(lba * sectorSize, sectorSize);
  const header = decodeGptHeader(sector, { file, structure, lba, sectorSize, deviceSectors });
  const arrayBase = header.partition_entry_lba * sectorSize;
  const array = await device.read(arrayBase, gptEntryArrayBytes(header));
  verifyGptEntryArray(array, header, { file, base: arrayBase });
  return { header, array, arrayBase };
}

const isCorrupt = (err: unknown): err is CorruptImageError => err instanceof CorruptImageError;

/** Facts of primary and backup that must agree (the arrays agree if their CRCs do). */
function sameTable(a: GptHeader, b: GptHeader): boolean {
  return (
    a.disk_guid === b.disk_guid &&
    a.first_usable_lba === b.first_usable_lba &&
    a.last_usable_lba === b.last_usable_lba &&
    a.number_of_partition_entries === b.number_of_partition_entries &&
    a.size_of_partition_entry === b.size_of_partition_entry &&
    a.partition_entry_array_crc32 === b.partition_entry_array_crc32
  );
}

/**
 * Reads the GPT of `device` with logical blocks of `sectorSize` bytes.
 * Throws BAD_CHECKSUM or CORRUPT_IMAGE (naming the primary copy's fault, with the
 * backup's in `data.backup`) when neither copy is usable, and CORRUPT_IMAGE for
 * entries that lie outside the usable LBAs or overlap.
 */
export async function readGpt(
  device: BlockDevice,
  context: { file: string },
  options: { sectorSize: number; warnings?: readonly string[] },
): Promise<PartitionTable> {
  const { file } = context;
  const { sectorSize } = options;
  const warnings: string[] = [...(options.warnings ?? [])];
  const lastLba = Math.floor(device.size / sectorSize) - 1;

  let primary: GptCopy | undefined;
  let primaryErr: CorruptImageError | undefined;
  try {
    primary = await readCopy(device, file, GPT_PRIMARY_HEADER_LBA, sectorSize, 'gpt.header');
  } catch (err) {
    if (!isCorrupt(err)) throw err;
    primaryErr = err;
  }

  let chosen: GptCopy;
  if (primary !== undefined) {
    chosen = primary;
    const alt = primary.header.alternate_lba;
    if (alt !== lastLba) {
      warnings.push(`the GPT header names LBA ${alt} for its backup, but the last LBA is ${lastLba} (was the disk resized?)`);
    }
    try {
      const backup = await readCopy(device, file, alt, sectorSize, 'gpt.backup_header');
      if (!sameTable(primary.header, backup.header)) warnings.push(`the backup GPT at LBA ${alt} differs from the primary GPT; the primary was used`);
    } catch (err) {
      if (!isCorrupt(err)) throw err;
      warnings.push(`the backup GPT is unusable (${err.message}); the primary GPT was used`);
    }
  } else {
    try {
      chosen = await readCopy(device, file, lastLba, sectorSize, 'gpt.backup_header');
    } catch (err) {
      if (!isCorrupt(err)) throw err;
      const p = primaryErr!;
      throw new CorruptImageError(p.code as 'CORRUPT_IMAGE', {
        ...p.data,
        detail: `${p.data.detail ?? p.code}; the backup GPT is unusable too (${err.message})`,
        backup: { code: err.code, structure: err.data.structure, offset: err.data.offset },
      });
    }
    warnings.push(`the primary GPT is unusable (${primaryErr!.message}); the backup GPT at LBA ${lastLba} was used`);
  }

  const entries: GptEntry[] = decodeGptEntries(chosen.array, chosen.header, { file, base: chosen.arrayBase });
  const partitions = entries.map((e) =>
    makePartition(
      device,
      {
        index: e.slot + 1,
        startBytes: e.starting_lba * sectorSize,
        lengthBytes: (e.ending_lba - e.starting_lba + 1) * sectorSize,
        typeName: gptTypeName(e.partition_type_guid),
        typeGuid: e.partition_type_guid,
        guid: e.unique_partition_guid,
        name: e.partition_name,
        attributes: e.attributes,
      },
      context,
    ),
  );
  return { scheme: 'gpt', sectorSize, diskGuid: chosen.header.disk_guid, partitions, warnings };
}

