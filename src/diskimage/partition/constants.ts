/**
 * On-disk constants of the partition tables we read.
 * GPT: UEFI Specification 2.10, chapter 5 ("GUID Partition Table (GPT) Disk Layout").
 * MBR: UEFI 2.10 section 5.2.1 ("Legacy Master Boot Record") plus the de-facto
 * extended-partition (EBR) convention used by DOS, Windows and Linux.
 */

/** Logical block sizes we probe for a GPT, smallest first (UEFI 5.3.1: the header sits at LBA 1). */
export const GPT_SECTOR_SIZES = [512, 4096] as const;
/** MBR and EBR sectors are 512 bytes (UEFI 5.2.1, table 5-1). */
export const MBR_SECTOR_SIZE = 512;

// --- MBR (UEFI 5.2.1, table 5-1 "Legacy MBR"; table 5-2 "Legacy MBR Partition Record") ---
/** UniqueMBRDiskSignature: 4 bytes at offset 440. */
export const MBR_DISK_SIGNATURE_OFFSET = 440;
/** PartitionRecord[4]: 4 × 16 bytes at offset 446. */
export const MBR_PARTITION_TABLE_OFFSET = 446;
export const MBR_PARTITION_ENTRY_SIZE = 16;
export const MBR_PARTITION_ENTRIES = 4;
/** Signature: 0x55 at 510, 0xAA at 511 (read little-endian as 0xAA55). */
export const MBR_SIGNATURE_OFFSET = 510;
export const MBR_SIGNATURE = 0xaa55;
/** BootIndicator values: 0x80 bootable, 0x00 not; anything else means this is no MBR. */
export const MBR_BOOT_INDICATOR_ACTIVE = 0x80;
export const MBR_BOOT_INDICATOR_INACTIVE = 0x00;
/** OSType 0xEE: the protective MBR partition that covers a GPT disk (UEFI 5.2.3). */
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** OSType 0x00: unused entry. */
export const MBR_TYPE_EMPTY = 0x00;
/** Extended-partition container types: DOS (CHS) 0x05, Windows (LBA) 0x0F, Linux 0x85. */
export const MBR_EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);
/** Logical partitions are numbered from 5, after the four primary slots, as Linux does. */
export const MBR_FIRST_LOGICAL_INDEX = 5;
/**
 * Most EBRs we follow. Linux stops at 256 partitions per disk (DISK_MAX_PARTS);
 * a longer chain is corrupt, and the bound keeps a crafted chain from running long.
 */
export const MBR_MAX_LOGICAL_PARTITIONS = 256;

// --- GPT header (UEFI 5.3.2, table 5-5 "GPT Header") ---
/** Signature "EFI PART" (0x5452415020494645 little-endian). */
export const GPT_SIGNATURE = 'EFI PART';
/** Revision 1.0 (0x00010000); later minor revisions keep the layout, so only the major is checked. */
export const GPT_REVISION_1_0 = 0x00010000;
/** HeaderSize: at least 92 bytes and at most one logical block. */
export const GPT_HEADER_MIN_SIZE = 92;
/** The primary header lives at LBA 1 (UEFI 5.3.1). */
export const GPT_PRIMARY_HEADER_LBA = 1;
/** Field offsets within the header. */
export const GPT_HEADER = {
  Signature: 0,
  Revision: 8,
  HeaderSize: 12,
  HeaderCRC32: 16,
  Reserved: 20,
  MyLBA: 24,
  AlternateLBA: 32,
  FirstUsableLBA: 40,
  LastUsableLBA: 48,
  DiskGUID: 56,
  PartitionEntryLBA: 72,
  NumberOfPartitionEntries: 80,
  SizeOfPartitionEntry: 84,
  PartitionEntryArrayCRC32: 88,
} as const;

// --- GPT partition entry (UEFI 5.3.3, table 5-6 "GPT Partition Entry") ---
/** SizeOfPartitionEntry must be 128 × 2^n. */
export const GPT_ENTRY_MIN_SIZE = 128;
export const GPT_ENTRY = {
  PartitionTypeGUID: 0,
  UniquePartitionGUID: 16,
  StartingLBA: 32,
  EndingLBA: 40,
  Attributes: 48,
  PartitionName: 56,
} as const;
/** PartitionName: 36 UTF-16LE code units (72 bytes), NUL-terminated if shorter. */
export const GPT_ENTRY_NAME_BYTES = 72;
/**
 * Largest entry array we read (NumberOfPartitionEntries × SizeOfPartitionEntry).
 * The usual array is 128 × 128 = 16 KiB; 4 MiB leaves room for any real table
 * while a forged count cannot make us allocate gigabytes.
 */
export const GPT_MAX_ENTRY_ARRAY_BYTES = 4 * 1024 * 1024;
