/**
 * VMDK constants, named after VMware's "Virtual Disk Format 5.0" (VMDK 5.0),
 * sections "Hosted Sparse Extent Header", "Grain Directories and Grain Tables",
 * "Stream-Optimized Compressed Sparse Extents" and "The Descriptor File".
 */

/** Sector size: every offset and size in the header and descriptor counts 512-byte sectors. */
export const VMDK_SECTOR_SIZE = 512;
/** magicNumber 'KDMV' read as a little-endian uint32 (SparseExtentHeader). */
export const VMDK4_MAGIC = 0x564d444b;
/** 'COWD': the ESX Server 2.x sparse extent (VMDK 5.0, "ESX Server Sparse Extent Header"), not supported. */
export const VMDK_COWD_MAGIC = 0x44574f43;
/** Header versions we know: 1 (the spec), 2 (zeroed-grain GTEs), 3 (streamOptimized). */
export const VMDK4_MAX_VERSION = 3;
/** Size of SparseExtentHeader on disk. */
export const VMDK4_HEADER_SIZE = 512;

/** flags bit 0: valid new line detection test (singleEndLineChar ... are meaningful). */
export const VMDK4_FLAG_NL_DETECT = 1 << 0;
/** flags bit 1: redundant grain table will be used. */
export const VMDK4_FLAG_RGD = 1 << 1;
/** flags bit 2: GTE value 1 means "grain reads as zeros" (zeroed-grain GTE). */
export const VMDK4_FLAG_ZERO_GRAIN = 1 << 2;
/** flags bit 16: grains are compressed. */
export const VMDK4_FLAG_COMPRESS = 1 << 16;
/** flags bit 17: there are markers (stream-optimized). */
export const VMDK4_FLAG_MARKER = 1 << 17;
/** Bits we understand; others are refused as UNSUPPORTED_FEATURE. */
export const VMDK4_FLAGS_KNOWN = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD | VMDK4_FLAG_ZERO_GRAIN | VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER;

/** compressAlgorithm: 0 none, 1 deflate (RFC 1951, wrapped as zlib RFC 1950). */
export const VMDK4_COMPRESSION_NONE = 0;
export const VMDK4_COMPRESSION_DEFLATE = 1;

/** gdOffset value meaning "the grain directory is found through the footer" (stream-optimized). */
export const VMDK4_GD_AT_END = 0xffffffffffffffffn;

/** numGTEsPerGT: the spec fixes it at 512. */
export const VMDK4_GTES_PER_GT = 512;
/** Bytes per grain directory / grain table entry. */
export const VMDK4_GDE_SIZE = 4;
/** GTE 0: grain not allocated (read from the parent, or zeros in a base). */
export const VMDK4_GTE_UNALLOCATED = 0;
/** GTE 1 with VMDK4_FLAG_ZERO_GRAIN: grain reads as zeros. */
export const VMDK4_GTE_ZEROED = 1;
/** grainSize: a power of two, at least 8 sectors (4 KiB); qemu refuses above 128 MiB. */
export const VMDK4_MIN_GRAIN_SECTORS = 8;
export const VMDK4_MAX_GRAIN_SECTORS = 256 * 1024;

/** Stream-optimized marker types ("Stream-Optimized Compressed Sparse Extents"). */
export const VMDK_MARKER_EOS = 0;
export const VMDK_MARKER_GT = 1;
export const VMDK_MARKER_GD = 2;
export const VMDK_MARKER_FOOTER = 3;
/** A grain marker: lba (u64) + size (u32) precede the compressed data. */
export const VMDK_GRAIN_MARKER_HEADER_SIZE = 12;

/** Line-ending test characters written at bytes 73-76 (singleEndLineChar, nonEndLineChar, doubleEndLineChar1/2). */
export const VMDK4_NL_TEST = [0x0a, 0x20, 0x0d, 0x0a] as const;

/** parentCID of a disk without a parent ("CID ... parentCID ... ffffffff"). */
export const VMDK_CID_NOPARENT = 0xffffffff;
/** The first line of every descriptor. */
export const VMDK_DESCRIPTOR_SIGNATURE = '# Disk DescriptorFile';
/** Descriptors larger than this are refused (they are a few hundred bytes; bounds memory). */
export const VMDK_MAX_DESCRIPTOR_BYTES = 1024 * 1024;
/** Sectors qemu and VMware reserve for an embedded descriptor. */
export const VMDK_EMBEDDED_DESCRIPTOR_SECTORS = 20;

/** createType values we read (VMDK 5.0, "Disk Database"/createType table). */
export const VMDK_CREATE_TYPES_SUPPORTED = [
  'monolithicSparse',
  'monolithicFlat',
  'twoGbMaxExtentSparse',
  'twoGbMaxExtentFlat',
  'streamOptimized',
  'vmfs',
  'vmfsPreallocated',
  'vmfsEagerZeroedThick',
  'vmfsThin',
] as const;
/** createType values we recognise and refuse by name. */
export const VMDK_CREATE_TYPES_UNSUPPORTED = [
  'vmfsSparse',
  'seSparse',
  'vmfsRDM',
  'vmfsRDMP',
  'vmfsRaw',
  'fullDevice',
  'partitionedDevice',
  'custom',
] as const;

/** Extent types we read. VMFS is a flat extent on a VMFS datastore. */
export const VMDK_EXTENT_TYPES_SUPPORTED = ['SPARSE', 'FLAT', 'ZERO', 'VMFS'] as const;
/** Extent access modes. */
export const VMDK_EXTENT_ACCESS = ['RW', 'RDONLY', 'NOACCESS'] as const;
