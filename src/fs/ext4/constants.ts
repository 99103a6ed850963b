/**
 * ext4 on-disk constants, named as in the kernel's Documentation/filesystems/ext4/
 * (cited per group as "ext4 doc, <page>").
 */

/** ext4 doc, super.rst: the superblock sits at byte 1024 of the device and is 1024 bytes. */
export const EXT4_SUPERBLOCK_OFFSET = 1024;
export const EXT4_SUPERBLOCK_SIZE = 1024;
/** ext4 doc, super.rst: s_magic. */
export const EXT4_SUPER_MAGIC = 0xef53;

/** ext4 doc, super.rst: s_state bits. */
export const EXT4_VALID_FS = 0x0001;
export const EXT4_ERROR_FS = 0x0002;
export const EXT4_ORPHAN_FS = 0x0004;

/** ext4 doc, super.rst: s_feature_compat. */
export const EXT4_FEATURE_COMPAT_DIR_PREALLOC = 0x0001;
export const EXT4_FEATURE_COMPAT_IMAGIC_INODES = 0x0002;
export const EXT4_FEATURE_COMPAT_HAS_JOURNAL = 0x0004;
export const EXT4_FEATURE_COMPAT_EXT_ATTR = 0x0008;
export const EXT4_FEATURE_COMPAT_RESIZE_INODE = 0x0010;
export const EXT4_FEATURE_COMPAT_DIR_INDEX = 0x0020;
export const EXT4_FEATURE_COMPAT_LAZY_BG = 0x0040;
export const EXT4_FEATURE_COMPAT_EXCLUDE_INODE = 0x0080;
export const EXT4_FEATURE_COMPAT_EXCLUDE_BITMAP = 0x0100;
export const EXT4_FEATURE_COMPAT_SPARSE_SUPER2 = 0x0200;
export const EXT4_FEATURE_COMPAT_FAST_COMMIT = 0x0400;
export const EXT4_FEATURE_COMPAT_STABLE_INODES = 0x0800;
export const EXT4_FEATURE_COMPAT_ORPHAN_FILE = 0x1000;

/** ext4 doc, super.rst: s_feature_ro_compat. */
export const EXT4_FEATURE_RO_COMPAT_SPARSE_SUPER = 0x0001;
export const EXT4_FEATURE_RO_COMPAT_LARGE_FILE = 0x0002;
export const EXT4_FEATURE_RO_COMPAT_BTREE_DIR = 0x0004;
export const EXT4_FEATURE_RO_COMPAT_HUGE_FILE = 0x0008;
export const EXT4_FEATURE_RO_COMPAT_GDT_CSUM = 0x0010;
export const EXT4_FEATURE_RO_COMPAT_DIR_NLINK = 0x0020;
export const EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE = 0x0040;
export const EXT4_FEATURE_RO_COMPAT_HAS_SNAPSHOT = 0x0080;
export const EXT4_FEATURE_RO_COMPAT_QUOTA = 0x0100;
export const EXT4_FEATURE_RO_COMPAT_BIGALLOC = 0x0200;
export const EXT4_FEATURE_RO_COMPAT_METADATA_CSUM = 0x0400;
export const EXT4_FEATURE_RO_COMPAT_REPLICA = 0x0800;
export const EXT4_FEATURE_RO_COMPAT_READONLY = 0x1000;
export const EXT4_FEATURE_RO_COMPAT_PROJECT = 0x2000;
export const EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS = 0x4000;
export const EXT4_FEATURE_RO_COMPAT_VERITY = 0x8000;
export const EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT = 0x10000;

/** ext4 doc, super.rst: s_feature_incompat. */
export const EXT4_FEATURE_INCOMPAT_COMPRESSION = 0x0001;
export const EXT4_FEATURE_INCOMPAT_FILETYPE = 0x0002;
export const EXT4_FEATURE_INCOMPAT_RECOVER = 0x0004;
export const EXT4_FEATURE_INCOMPAT_JOURNAL_DEV = 0x0008;
export const EXT4_FEATURE_INCOMPAT_META_BG = 0x0010;
export const EXT4_FEATURE_INCOMPAT_EXTENTS = 0x0040;
export const EXT4_FEATURE_INCOMPAT_64BIT = 0x0080;
export const EXT4_FEATURE_INCOMPAT_MMP = 0x0100;
export const EXT4_FEATURE_INCOMPAT_FLEX_BG = 0x0200;
export const EXT4_FEATURE_INCOMPAT_EA_INODE = 0x0400;
export const EXT4_FEATURE_INCOMPAT_DIRDATA = 0x1000;
export const EXT4_FEATURE_INCOMPAT_CSUM_SEED = 0x2000;
export const EXT4_FEATURE_INCOMPAT_LARGEDIR = 0x4000;
export const EXT4_FEATURE_INCOMPAT_INLINE_DATA = 0x8000;
export const EXT4_FEATURE_INCOMPAT_ENCRYPT = 0x10000;
export const EXT4_FEATURE_INCOMPAT_CASEFOLD = 0x20000;

/** Names of feature bits, for messages and `ls`/`info` output (as dumpe2fs spells them). */
export const COMPAT_NAMES: Readonly<Record<number, string>> = {
  0x1: 'dir_prealloc', 0x2: 'imagic_inodes', 0x4: 'has_journal', 0x8: 'ext_attr', 0x10: 'resize_inode',
  0x20: 'dir_index', 0x40: 'lazy_bg', 0x80: 'exclude_inode', 0x100: 'exclude_bitmap', 0x200: 'sparse_super2',
  0x400: 'fast_commit', 0x800: 'stable_inodes', 0x1000: 'orphan_file',
};
export const RO_COMPAT_NAMES: Readonly<Record<number, string>> = {
  0x1: 'sparse_super', 0x2: 'large_file', 0x4: 'btree_dir', 0x8: 'huge_file', 0x10: 'uninit_bg',
  0x20: 'dir_nlink', 0x40: 'extra_isize', 0x80: 'snapshot', 0x100: 'quota', 0x200: 'bigalloc',
  0x400: 'metadata_csum', 0x800: 'replica', 0x1000: 'read-only', 0x2000: 'project', 0x4000: 'shared_blocks',
  0x8000: 'verity', 0x10000: 'orphan_present',
};
export const INCOMPAT_NAMES: Readonly<Record<number, string>> = {
  0x1: 'compression', 0x2: 'filetype', 0x4: 'needs_recovery', 0x8: 'journal_dev', 0x10: 'meta_bg',
  0x40: 'extent', 0x80: '64bit', 0x100: 'mmp', 0x200: 'flex_bg', 0x400: 'ea_inode', 0x1000: 'dirdata',
  0x2000: 'metadata_csum_seed', 0x4000: 'large_dir', 0x8000: 'inline_data', 0x10000: 'encrypt', 0x20000: 'casefold',
};

/**
 * Incompatible features this reader understands. RECOVER (a dirty journal) is read
 * as is (the journal is not replayed) and makes writeRefusal() refuse. CASEFOLD only
 * changes the htree hash and name comparison; lookups here compare bytes exactly.
 */
export const SUPPORTED_INCOMPAT =
  EXT4_FEATURE_INCOMPAT_FILETYPE |
  EXT4_FEATURE_INCOMPAT_RECOVER |
  EXT4_FEATURE_INCOMPAT_META_BG |
  EXT4_FEATURE_INCOMPAT_EXTENTS |
  EXT4_FEATURE_INCOMPAT_64BIT |
  EXT4_FEATURE_INCOMPAT_MMP |
  EXT4_FEATURE_INCOMPAT_FLEX_BG |
  EXT4_FEATURE_INCOMPAT_CSUM_SEED |
  EXT4_FEATURE_INCOMPAT_LARGEDIR |
  EXT4_FEATURE_INCOMPAT_INLINE_DATA |
  EXT4_FEATURE_INCOMPAT_EA_INODE |
  EXT4_FEATURE_INCOMPAT_CASEFOLD;

/** Read-only-compatible features whose meaning changes block addressing, so a reader must refuse them. */
export const UNSUPPORTED_RO_COMPAT = EXT4_FEATURE_RO_COMPAT_BIGALLOC;

/** ext4 doc, super.rst: s_checksum_type; 1 = crc32c. */
export const EXT4_CRC32C_CHKSUM = 1;

/** ext4 doc, group_descr.rst: bg_flags. */
export const EXT4_BG_INODE_UNINIT = 0x0001;
export const EXT4_BG_BLOCK_UNINIT = 0x0002;
export const EXT4_BG_INODE_ZEROED = 0x0004;
/** ext4 doc, group_descr.rst: descriptor sizes without / with the 64bit feature. */
export const EXT4_MIN_DESC_SIZE = 32;
export const EXT4_MIN_DESC_SIZE_64BIT = 64;
export const EXT4_MAX_DESC_SIZE = 1024;

/** ext4 doc, special_inodes.rst. */
export const EXT4_BAD_INO = 1;
export const EXT4_ROOT_INO = 2;
export const EXT4_USR_QUOTA_INO = 3;
export const EXT4_GRP_QUOTA_INO = 4;
export const EXT4_BOOT_LOADER_INO = 5;
export const EXT4_UNDEL_DIR_INO = 6;
export const EXT4_RESIZE_INO = 7;
export const EXT4_JOURNAL_INO = 8;
export const EXT4_GOOD_OLD_FIRST_INO = 11;
export const EXT4_GOOD_OLD_INODE_SIZE = 128;

/** ext4 doc, inodes.rst: i_mode file types (S_IF*). */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** ext4 doc, inodes.rst: i_flags. */
export const EXT4_SECRM_FL = 0x1;
export const EXT4_COMPR_FL = 0x4;
export const EXT4_INDEX_FL = 0x1000;
/**
 * The inode flags an owner sets with chattr that carry no on-disk format (Linux
 * ext4.h): secure and undelete (0x1, 0x2), sync, immutable, append-only, nodump, noatime
 * (0x8-0x80), dirsync, topdir (0x10000, 0x20000). What a rebase keeps of a client's file.
 */
export const EXT4_USER_FLAGS = 0x300fb;
export const EXT4_HUGE_FILE_FL = 0x40000;
export const EXT4_EXTENTS_FL = 0x80000;
export const EXT4_VERITY_FL = 0x100000;
export const EXT4_EA_INODE_FL = 0x200000;
export const EXT4_INLINE_DATA_FL = 0x10000000;
export const EXT4_ENCRYPT_FL = 0x800;
export const EXT4_CASEFOLD_FL = 0x40000000;

/** ext4 doc, inodes.rst: i_block holds 15 block pointers or 60 bytes. */
export const EXT4_N_BLOCKS = 15;
export const EXT4_NDIR_BLOCKS = 12;
export const EXT4_IND_BLOCK = 12;
export const EXT4_DIND_BLOCK = 13;
export const EXT4_TIND_BLOCK = 14;
export const EXT4_I_BLOCK_OFFSET = 0x28;
export const EXT4_I_BLOCK_SIZE = 60;
/** ext4 doc, inline_data.rst: the part of inline data that lives in i_block. */
export const EXT4_MIN_INLINE_DATA_SIZE = 60;

/** ext4 doc, extents.rst. */
export const EXT4_EXT_MAGIC = 0xf30a;
export const EXT4_EXT_HEADER_SIZE = 12;
export const EXT4_EXT_ENTRY_SIZE = 12;
/** ext4 doc, extents.rst: "the maximum depth is 5". */
export const EXT4_EXT_MAX_DEPTH = 5;
/** ext4 doc, extents.rst: ee_len above this marks an unwritten extent. */
export const EXT_INIT_MAX_LEN = 32768;
export const EXT4_EXT_TAIL_SIZE = 4;

/** ext4 doc, directory.rst: ext4_dir_entry_2 file_type. */
export const EXT4_FT_UNKNOWN = 0;
export const EXT4_FT_REG_FILE = 1;
export const EXT4_FT_DIR = 2;
export const EXT4_FT_CHRDEV = 3;
export const EXT4_FT_BLKDEV = 4;
export const EXT4_FT_FIFO = 5;
export const EXT4_FT_SOCK = 6;
export const EXT4_FT_SYMLINK = 7;
/** ext4 doc, directory.rst: the fake dirent that carries a leaf block's checksum. */
export const EXT4_FT_DIR_CSUM = 0xde;
export const EXT4_DIR_TAIL_SIZE = 12;
export const EXT4_NAME_LEN = 255;
/** ext4 doc, directory.rst (hash tree): dx_root_info. */
export const DX_HASH_LEGACY = 0;
export const DX_HASH_HALF_MD4 = 1;
export const DX_HASH_TEA = 2;
export const DX_HASH_SIPHASH = 6;
/** ext4 doc, directory.rst: indirect_levels may be 0..1 (2 with largedir: 3 levels in total). */
export const EXT4_HTREE_LEVEL_COMPAT = 2;
export const EXT4_HTREE_LEVEL = 3;
/** The kernel's EXT4_LINK_MAX: past it a directory's link count (dir_nlink) is no longer kept, but set to 1. */
export const EXT4_LINK_MAX = 65000;
/** ext4 doc, super.rst (s_flags): whether htree hashes read name bytes as signed or unsigned chars. */
export const EXT2_FLAGS_SIGNED_HASH = 0x0001;
export const EXT2_FLAGS_UNSIGNED_HASH = 0x0002;

/** ext4 doc, attributes.rst. */
export const EXT4_XATTR_MAGIC = 0xea020000;
export const EXT4_XATTR_BLOCK_HEADER_SIZE = 32;
export const EXT4_XATTR_ENTRY_HEADER_SIZE = 16;
/** ext4 doc, attributes.rst: e_name_index prefixes. */
export const XATTR_PREFIXES: Readonly<Record<number, string>> = {
  1: 'user.',
  2: 'system.posix_acl_access',
  3: 'system.posix_acl_default',
  4: 'trusted.',
  6: 'security.',
  7: 'system.',
  8: 'system.richacl',
};
/** The name index of `system.` (system.data holds inline data). */
export const EXT4_XATTR_INDEX_SYSTEM = 7;

/** ext4 doc, attributes.rst ("POSIX ACLs"): the on-disk ACL format (version 1, short entries). */
export const EXT4_ACL_VERSION = 0x0001;
export const ACL_USER_OBJ = 0x01;
export const ACL_USER = 0x02;
export const ACL_GROUP_OBJ = 0x04;
export const ACL_GROUP = 0x08;
export const ACL_MASK = 0x10;
export const ACL_OTHER = 0x20;

/** ext4 doc, orphan.rst: the orphan file's block tail magic. */
export const EXT4_ORPHAN_BLOCK_MAGIC = 0x0b10ca04;
