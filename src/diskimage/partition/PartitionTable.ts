/**
 * What readPartitionTable returns: a scheme-neutral list of partitions, each of
 * which can be opened as a BlockDevice slice of the disk.
 */
import type { BlockDevice } from '../BlockDevice.js';
import { SliceDevice } from '../SliceDevice.js';

export type PartitionScheme = 'gpt' | 'mbr' | 'none';

export interface Partition {
  /** The number Linux gives it: GPT slot + 1; MBR primaries 1-4, logicals from 5. */
  readonly index: number;
  /** Byte offset of the first byte on the disk. */
  readonly startBytes: number;
  readonly lengthBytes: number;
  /** Display name of the type ("Linux filesystem", "W95 FAT32 (LBA)", "Unknown"). */
  readonly typeName: string;
  /** GPT: PartitionTypeGUID, upper-case textual form. */
  readonly typeGuid?: string;
  /** GPT: UniquePartitionGUID. */
  readonly guid?: string;
  /** GPT: the partition name (UTF-16LE decoded). */
  readonly name?: string;
  /** GPT: attribute bits as a 64-bit hex string. */
  readonly attributes?: string;
  /** MBR: the OSType byte. */
  readonly mbrType?: number;
  /** MBR: BootIndicator was 0x80. */
  readonly bootable?: boolean;
  /** MBR: primary, extended (a container of logicals) or logical. */
  readonly kind?: 'primary' | 'extended' | 'logical';
  /** The partition as a bounds-checked device (offsets relative to its start). */
  device(): SliceDevice;
}

export interface PartitionTable {
  readonly scheme: PartitionScheme;
  /** Logical block size the table was read with (512, or 4096 for a 4Kn GPT). */
  readonly sectorSize: number;
  /** GPT DiskGUID. */
  readonly diskGuid?: string;
  /** MBR UniqueMBRDiskSignature, as 8 hex digits (what `sfdisk` prints as the label id). */
  readonly diskSignature?: string;
  /** In ascending index order. */
  readonly partitions: readonly Partition[];
  /** Non-fatal findings (e.g. "used the backup GPT"). Never printed by library code. */
  readonly warnings: readonly string[];
}

/** The fields of a Partition other than device(). */
export type PartitionFields = Omit<Partition, 'device'>;

/** Adds device() to decoded partition fields; the slice is created on demand. */
export function makePartition(disk: BlockDevice, fields: PartitionFields, context: { file: string }): Partition {
  return {
    ...fields,
    device: () => new SliceDevice(disk, fields.startBytes, fields.lengthBytes, { file: context.file, structure: `partition ${fields.index}` }),
  };
}
