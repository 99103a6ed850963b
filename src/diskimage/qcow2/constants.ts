/**
 * qcow2 constants, named after qemu's docs/interop/qcow2.rst ("QCOW2 Image Format").
 */

/** "QFI\xfb" (Header, bytes 0-3). */
export const QCOW2_MAGIC = 0x514649fb;
/** Header length of version 2 images (fields up to snapshots_offset). */
export const QCOW2_V2_HEADER_LENGTH = 72;
/** Minimal header length of version 3 images (up to header_length). */
export const QCOW2_V3_HEADER_LENGTH = 104;
/** Cluster bits: 512 B to 2 MiB ("cluster_bits ... must not be less than 9 ... qemu as of today has an implementation limit of 2 MB"). */
export const QCOW2_MIN_CLUSTER_BITS = 9;
export const QCOW2_MAX_CLUSTER_BITS = 21;
/** Backing file names longer than this are refused ("backing_file_size ... must not be longer than 1023 bytes"). */
export const QCOW2_MAX_BACKING_FILE_SIZE = 1023;
/** qemu's limits on table sizes (QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE): bound allocations driven by a header. */
export const QCOW2_MAX_L1_SIZE_BYTES = 32 * 1024 * 1024;
export const QCOW2_MAX_REFTABLE_SIZE_BYTES = 8 * 1024 * 1024;

/** incompatible_features bits. */
export const QCOW2_INCOMPAT_DIRTY = 1n << 0n;
export const QCOW2_INCOMPAT_CORRUPT = 1n << 1n;
export const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
export const QCOW2_INCOMPAT_COMPRESSION = 1n << 3n;
export const QCOW2_INCOMPAT_EXTL2 = 1n << 4n;
export const QCOW2_INCOMPAT_KNOWN =
  QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2;
/** compatible_features bit 0: lazy refcounts. */
export const QCOW2_COMPAT_LAZY_REFCOUNTS = 1n << 0n;
/** autoclear_features bits: 0 bitmaps extension consistent, 1 raw external data. */
export const QCOW2_AUTOCLEAR_BITMAPS = 1n << 0n;
export const QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

/** compression_type (byte 104). */
export const QCOW2_COMPRESSION_DEFLATE = 0;
export const QCOW2_COMPRESSION_ZSTD = 1;

/** Header extension types ("Header extensions"). */
export const QCOW2_EXT_END = 0x00000000;
export const QCOW2_EXT_BACKING_FORMAT = 0xe2792aca;
export const QCOW2_EXT_FEATURE_NAME_TABLE = 0x6803f857;
export const QCOW2_EXT_BITMAPS = 0x23852875;
export const QCOW2_EXT_FULL_DISK_ENCRYPTION = 0x0537be77;
export const QCOW2_EXT_EXTERNAL_DATA_FILE = 0x44415441;

/** L1/L2 entry bits ("Cluster mapping"). */
export const QCOW2_OFLAG_COPIED = 1n << 63n;
export const QCOW2_OFLAG_COMPRESSED = 1n << 62n;
export const QCOW2_OFLAG_ZERO = 1n;
/** Bits 9-55: host offset of an L2 table or a standard cluster. */
export const QCOW2_OFFSET_MASK = 0x00fffffffffffe00n;
/** Extended L2: 32 subclusters per cluster, 16-byte entries. */
export const QCOW2_SUBCLUSTERS_PER_CLUSTER = 32;

/** Snapshot table entry: fixed part length. */
export const QCOW2_SNAPSHOT_FIXED_LENGTH = 40;

/**
 * Writer choices. header_length 112: the version 3 header plus compression_type
 * and its padding ("Additional fields ... must be padded to a multiple of 8"), as qemu writes it.
 */
export const QCOW2_WRITER_HEADER_LENGTH = 112;
/** refcount_order 4: 16-bit refcounts, qemu's default. */
export const QCOW2_WRITER_REFCOUNT_ORDER = 4;
/** qemu refuses subclusters below 512 bytes, so extended L2 needs clusters of at least 16 KiB. */
export const QCOW2_MIN_SUBCLUSTER_SIZE = 512;

/** qemu's limits on the snapshot table (QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS_SIZE). */
export const QCOW2_MAX_SNAPSHOTS = 65536;
export const QCOW2_MAX_SNAPSHOT_EXTRA_DATA = 1024;
export const QCOW2_MAX_SNAPSHOTS_SIZE_BYTES = 64 * 1024 * 1024;

/** L1/L2 entry reserved bits ("Cluster mapping": L1 bits 0-8 and 56-62; standard L2 bits 1-8 and 56-61). */
export const QCOW2_L1E_RESERVED_MASK = 0x7f000000000001ffn;
export const QCOW2_L2E_STD_RESERVED_MASK = 0x3f000000000001fen;
/** Refcount table entry: bits 0-8 reserved, 9-63 refcount block offset ("Host cluster management"). */
export const QCOW2_REFT_RESERVED_MASK = 0x1ffn;

/** Bitmaps ("Bitmaps" section): directory entry fixed part, name limit, table entry bits. */
export const QCOW2_BITMAP_DIR_ENTRY_FIXED_LENGTH = 24;
export const QCOW2_MAX_BITMAP_NAME_SIZE = 1023;
export const QCOW2_MAX_BITMAPS = 65535;
/** qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE: 1 KiB per bitmap. */
export const QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS;
/** Bitmap table entry: bit 0 "all ones" (only without an offset), bits 1-8 and 56-63 reserved, 9-55 offset. */
export const QCOW2_BME_ALL_ONES = 1n;
export const QCOW2_BME_RESERVED_MASK = 0xff000000000001fen;
