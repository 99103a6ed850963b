/**
 * Names of common MBR partition type bytes (OSType, UEFI 2.10 table 5-2), for
 * display, as partitioning tools conventionally name them.
 */
const MBR_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [0x01, 'FAT12'],
  [0x04, 'FAT16 <32M'],
  [0x05, 'Extended'],
  [0x06, 'FAT16'],
  [0x07, 'HPFS/NTFS/exFAT'],
  [0x0b, 'W95 FAT32'],
  [0x0c, 'W95 FAT32 (LBA)'],
  [0x0e, 'W95 FAT16 (LBA)'],
  [0x0f, "W95 Ext'd (LBA)"],
  [0x27, 'Hidden NTFS WinRE'],
  [0x82, 'Linux swap'],
  [0x83, 'Linux'],
  [0x85, 'Linux extended'],
  [0x8e, 'Linux LVM'],
  [0xa5, 'FreeBSD'],
  [0xa6, 'OpenBSD'],
  [0xa9, 'NetBSD'],
  [0xda, 'Non-FS data'],
  [0xee, 'GPT protective'],
  [0xef, 'EFI (FAT-12/16/32)'],
  [0xfd, 'Linux raid autodetect'],
]);

/** The display name of an MBR type byte, or "Unknown". */
export function mbrTypeName(osType: number): string {
  return MBR_TYPE_NAMES.get(osType) ?? 'Unknown';
}
