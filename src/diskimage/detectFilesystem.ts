/**
 * Names the filesystem (or other volume content) on a device by its magic
 * numbers, for display only: nothing is mounted or trusted on this basis.
 * Names follow blkid's TYPE values, except that FAT is reported by variant
 * (blkid says TYPE=vfat with VERSION=FAT12/FAT16/FAT32).
 *
 * Sources: kernel Documentation/filesystems/ext4 (superblock), Microsoft
 * "FAT: General Overview of On-Disk Format" (fatgen103, BPB and FAT type
 * determination), Microsoft exFAT specification (main boot sector), the NTFS
 * boot sector OEM ID, XFS "xfs_sb" (sb_magicnum), btrfs on-disk format
 * (superblock at 64 KiB), Linux mkswap's swap header, LVM2 label format,
 * ECMA-119 (ISO 9660 volume descriptors at 32 KiB).
 */
import type { BlockDevice } from './BlockDevice.js';

export type FilesystemName =
  | 'ext2'
  | 'ext3'
  | 'ext4'
  | 'jbd'
  | 'fat12'
  | 'fat16'
  | 'fat32'
  | 'exfat'
  | 'ntfs'
  | 'xfs'
  | 'btrfs'
  | 'swap'
  | 'LVM2_member'
  | 'iso9660';

/** ext2, ext3 or ext4: what the ext4 reader reads. */
export function isExtFilesystem(name: FilesystemName | undefined): name is 'ext2' | 'ext3' | 'ext4' {
  return name === 'ext2' || name === 'ext3' || name === 'ext4';
}

// ext2/3/4 superblock: at byte 1024; fields per Documentation/filesystems/ext4/super.rst.
const EXT_SUPERBLOCK_OFFSET = 1024;
const EXT_S_MAGIC = 0x38;
const EXT_SUPER_MAGIC = 0xef53;
const EXT_S_FEATURE_COMPAT = 0x5c;
const EXT_S_FEATURE_INCOMPAT = 0x60;
const EXT_S_FEATURE_RO_COMPAT = 0x64;
const EXT3_FEATURE_COMPAT_HAS_JOURNAL = 0x4;
const EXT3_FEATURE_INCOMPAT_JOURNAL_DEV = 0x8;
/** Incompat features ext3 understands: FILETYPE, RECOVER, META_BG. Anything else needs ext4. */
const EXT3_INCOMPAT_SUPPORTED = 0x2 | 0x4 | 0x10;
/** Read-only-compat features ext2/3 understand: SPARSE_SUPER, LARGE_FILE, BTREE_DIR. */
const EXT3_RO_COMPAT_SUPPORTED = 0x1 | 0x2 | 0x4;

// FAT boot sector / BPB (fatgen103, section 3).
const FAT_BPB_BYTS_PER_SEC = 11;
const FAT_BPB_SEC_PER_CLUS = 13;
const FAT_BPB_RSVD_SEC_CNT = 14;
const FAT_BPB_NUM_FATS = 16;
const FAT_BPB_ROOT_ENT_CNT = 17;
const FAT_BPB_TOT_SEC16 = 19;
const FAT_BPB_FAT_SZ16 = 22;
const FAT_BPB_TOT_SEC32 = 32;
const FAT_BPB_FAT_SZ32 = 36;
const FAT_BS_FIL_SYS_TYPE_16 = 54;
const FAT_BS_FIL_SYS_TYPE_32 = 82;
/** fatgen103, "FAT Type Determination": fewer clusters than these means FAT12 / FAT16. */
const FAT12_MAX_CLUSTERS = 4085;
const FAT16_MAX_CLUSTERS = 65525;
const BOOT_SIGNATURE_OFFSET = 510;
/** OEM name / FileSystemName at byte 3 of the boot sector. */
const OEM_NAME_OFFSET = 3;

/** Linux swap: the signature ends the first page; page sizes Linux supports. */
const SWAP_PAGE_SIZES = [4096, 8192, 16384, 32768, 65536];
const SWAP_SIGNATURES = ['SWAPSPACE2', 'SWAP-SPACE'];
/** LVM2: "LABELONE" label in one of the first four 512-byte sectors, type "LVM2 001" at +24. */
const LVM2_LABEL_SECTORS = 4;
const BTRFS_MAGIC_OFFSET = 0x10000 + 0x40;
const ISO9660_MAGIC_OFFSET = 16 * 2048 + 1;
/** Bytes read from the start: enough for the btrfs magic and a 64 KiB-page swap header. */
const PROBE_BYTES = 0x11000;

const ascii = (b: Uint8Array, off: number, len: number): string =>
  off + len <= b.length ? String.fromCharCode(...b.subarray(off, off + len)) : '';
const u16 = (b: Uint8Array, off: number): number => (off + 2 <= b.length ? b[off]! | (b[off + 1]! << 8) : 0);
const u32 = (b: Uint8Array, off: number): number =>
  off + 4 <= b.length ? (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000 : 0;
const isPow2 = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

function hasBootSignature(b: Uint8Array): boolean {
  return b[BOOT_SIGNATURE_OFFSET] === 0x55 && b[BOOT_SIGNATURE_OFFSET + 1] === 0xaa;
}

/** FAT12/16/32 from a boot sector, if its BPB is sane and it says "FAT". */
function detectFat(b: Uint8Array): 'fat12' | 'fat16' | 'fat32' | undefined {
  if (b.length < 512 || !hasBootSignature(b)) return undefined;
  if (!(b[0] === 0xe9 || (b[0] === 0xeb && b[2] === 0x90))) return undefined;
  if (!ascii(b, FAT_BS_FIL_SYS_TYPE_16, 3).startsWith('FAT') && !ascii(b, FAT_BS_FIL_SYS_TYPE_32, 5).startsWith('FAT32')) return undefined;
  const bytsPerSec = u16(b, FAT_BPB_BYTS_PER_SEC);
  const secPerClus = b[FAT_BPB_SEC_PER_CLUS]!;
  const rsvd = u16(b, FAT_BPB_RSVD_SEC_CNT);
  const numFats = b[FAT_BPB_NUM_FATS]!;
  if (!isPow2(bytsPerSec) || bytsPerSec < 512 || bytsPerSec > 4096 || !isPow2(secPerClus) || rsvd === 0 || numFats === 0) return undefined;
  const fatSz16 = u16(b, FAT_BPB_FAT_SZ16);
  // A FAT32 BPB has BPB_FATSz16 = 0 (its FAT size is in BPB_FATSz32), whatever its cluster count.
  if (fatSz16 === 0) return u32(b, FAT_BPB_FAT_SZ32) !== 0 ? 'fat32' : undefined;
  const rootDirSectors = Math.ceil((u16(b, FAT_BPB_ROOT_ENT_CNT) * 32) / bytsPerSec);
  const totSec = u16(b, FAT_BPB_TOT_SEC16) || u32(b, FAT_BPB_TOT_SEC32);
  const dataSec = totSec - (rsvd + numFats * fatSz16 + rootDirSectors);
  if (dataSec <= 0) return undefined;
  const clusters = Math.floor(dataSec / secPerClus);
  if (clusters < FAT12_MAX_CLUSTERS) return 'fat12';
  if (clusters < FAT16_MAX_CLUSTERS) return 'fat16';
  return undefined; // a 16-bit FAT cannot address more clusters: not a FAT we understand
}

/**
 * The filesystem whose boot sector is `sector` (the device's first 512 bytes):
 * FAT, exFAT or NTFS. These share the 0x55AA signature with an MBR, so the
 * partition-table reader asks this first, as blkid does, to tell them apart.
 */
export function detectBootSectorFilesystem(sector: Uint8Array): 'fat12' | 'fat16' | 'fat32' | 'exfat' | 'ntfs' | undefined {
  if (sector.length < 512 || !hasBootSignature(sector)) return undefined;
  const oem = ascii(sector, OEM_NAME_OFFSET, 8);
  if (oem === 'EXFAT   ') return 'exfat';
  if (oem === 'NTFS    ') return 'ntfs';
  return detectFat(sector);
}

/** Classifies the bytes read from the start of a device (at least the first 68 KiB, if it is that large). */
export function detectFilesystemInBytes(b: Uint8Array): FilesystemName | undefined {
  if (u16(b, EXT_SUPERBLOCK_OFFSET + EXT_S_MAGIC) === EXT_SUPER_MAGIC) {
    const compat = u32(b, EXT_SUPERBLOCK_OFFSET + EXT_S_FEATURE_COMPAT);
    const incompat = u32(b, EXT_SUPERBLOCK_OFFSET + EXT_S_FEATURE_INCOMPAT);
    const roCompat = u32(b, EXT_SUPERBLOCK_OFFSET + EXT_S_FEATURE_RO_COMPAT);
    if (incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV) return 'jbd';
    if ((incompat & ~EXT3_INCOMPAT_SUPPORTED) !== 0 || (roCompat & ~EXT3_RO_COMPAT_SUPPORTED) !== 0) return 'ext4';
    return compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
  }
  if (ascii(b, 0, 4) === 'XFSB') return 'xfs';
  if (ascii(b, BTRFS_MAGIC_OFFSET, 8) === '_BHRfS_M') return 'btrfs';
  for (let s = 0; s < LVM2_LABEL_SECTORS; s++) {
    if (ascii(b, s * 512, 8) === 'LABELONE' && ascii(b, s * 512 + 24, 8) === 'LVM2 001') return 'LVM2_member';
  }
  for (const page of SWAP_PAGE_SIZES) {
    if (SWAP_SIGNATURES.includes(ascii(b, page - 10, 10))) return 'swap';
  }
  const boot = detectBootSectorFilesystem(b.subarray(0, 512));
  if (boot !== undefined) return boot;
  if (ascii(b, ISO9660_MAGIC_OFFSET, 5) === 'CD001') return 'iso9660';
  return undefined;
}

/**
 * The filesystem on `device`, by magic number, or undefined if none is recognised.
 * For display only. Throws what device.read throws.
 */
export async function detectFilesystem(device: BlockDevice): Promise<FilesystemName | undefined> {
  const length = Math.min(device.size, PROBE_BYTES);
  if (length < 512) return undefined;
  return detectFilesystemInBytes(await device.read(0, length));
}
