/**
 * The e2fsprogs test images on which the reader may refuse with a typed error instead of
 * reading the filesystem, each with the exact error (code and structure) and why. Every image
 * not named here must read fully; a listed image that starts to read is reported, so the list
 * only shrinks. The reasons quote what e2fsck finds (the image's expect.1) where it names the
 * same structure; "needs repair" means the data is only recoverable by e2fsck's guesses.
 */
import type { ErrorCode } from '../../../src/errors.js';

export interface AllowedError {
  readonly code: ErrorCode;
  readonly structure: string;
  readonly why: string;
}

const corrupt = (structure: string, why: string): AllowedError => ({ code: 'CORRUPT_IMAGE', structure, why });
const bigalloc = (why: string): AllowedError => ({ code: 'UNSUPPORTED_FEATURE', structure: 'ext4.superblock.s_feature_ro_compat', why: `bigalloc is not supported (DESIGN.md); ${why}` });
const encrypt = (why: string): AllowedError => ({ code: 'UNSUPPORTED_FEATURE', structure: 'ext4.superblock.s_feature_incompat', why: `encryption is not supported; ${why}` });

export const ALLOWED_ERRORS: Readonly<Record<string, AllowedError>> = {
  // Superblock and group descriptors: nothing can be located without repair.
  f_crashdisk: corrupt('ext4.superblock.s_log_block_size', 'the superblock is garbage (e2fsck: "The ext2 superblock is corrupt", falls back to a backup)'),
  f_zero_super: corrupt('ext4.superblock.s_magic', 'the primary superblock is zeroed (e2fsck uses a backup)'),
  f_zero_inode_size: corrupt('ext4.superblock.s_inode_size', 's_inode_size is 0 (e2fsck: superblock corrupt)'),
  f_desc_size_zero: corrupt('ext4.superblock.s_desc_size', 's_desc_size is 0 on a 64bit filesystem (e2fsck: "Block group descriptor size incorrect")'),
  f_first_meta_bg_too_big: corrupt('ext4.superblock.s_first_meta_bg', 's_first_meta_bg lies beyond the descriptor blocks (e2fsck: superblock corrupt)'),
  f_illbbitmap: corrupt('ext4.group_desc[0].bg_block_bitmap', 'group 0 block bitmap outside the filesystem (e2fsck: "bad block for block bitmap")'),
  f_illibitmap: corrupt('ext4.group_desc[0].bg_inode_bitmap', 'group 0 inode bitmap outside the filesystem (e2fsck: "bad block for inode bitmap")'),
  f_illitable: corrupt('ext4.group_desc[0].bg_inode_table', 'group 0 inode table outside the filesystem (e2fsck: "bad block for inode table")'),
  f_illitable_flexbg: corrupt('ext4.group_desc[1].bg_inode_table', 'group 1 inode table is block 0 (e2fsck: "bad block for inode table", uses backup descriptors)'),
  f_misstable: corrupt('ext4.group_desc[1].bg_inode_table', 'group 1 inode table is block 0 (e2fsck: "bad block for inode table", uses backup descriptors)'),
  f_preen: corrupt('ext4.group_desc[0].bg_block_bitmap', 'group 0 bitmaps and table are block 0 (e2fsck relocates them)'),
  f_zero_group: corrupt('ext4.group_desc[0].bg_block_bitmap', 'group 0 descriptor zeroed (e2fsck: "bad block for block bitmap", uses backup descriptors)'),

  // The root or a directory inode is not a directory: the tree cannot be walked.
  f_badroot: corrupt('ext4.inode[2].i_mode', 'e2fsck: "Root inode is not a directory"'),
  f_journal: corrupt('ext4.inode[2].i_mode', 'the root directory is only valid after journal replay, which a read-only reader does not do (e2fsck: "recovering journal")'),
  f_dir_bad_mode: corrupt('ext4.inode[12].i_mode', 'e2fsck: "Inode 12 is a socket but it looks like it is really a directory"'),
  f_orphan_dotdot_ft: corrupt('ext4.inode[12].i_mode', 'a directory entry of type directory names special inode 12 (e2fsck: "Special (device/socket/fifo) inode 12 has non-zero size")'),
  f_inlinedir_detector: corrupt('ext4.inode[13].i_mode', 'a directory entry of type directory names an inode whose mode is not a directory (e2fsck rebuilds it from the inline-data flag)'),

  // Directory blocks.
  f_baddir: corrupt('ext4.dir[12:0].rec_len', 'directory inode 12 block 0 has a rec_len past the block end (e2fsck: directory corrupted)'),
  f_baddir2: corrupt('ext4.dir[12:0].rec_len', 'e2fsck: "Directory inode 12, block #0, offset 60: directory corrupted"'),
  f_dupfsblks: corrupt('ext4.inode[12].i_size', 'directory inode 12 maps 5 blocks but i_size says 4 (e2fsck: "Inode 12, i_size is 4096, should be 5120"); its block 1 is shared with a file (duplicate blocks)'),
  f_salvage_dir: corrupt('ext4.dir[13:0].rec_len', 'e2fsck: "Directory inode 13, block #0, offset 48: directory corrupted"'),
  f_uninit_dir: corrupt('ext4.dir[14:0].rec_len', 'directory block in an uninitialized extent reads as zeros (e2fsck: "has extent marked uninitialized at block 0")'),
  f_dir_bad_csum: corrupt('ext4.dir[13:0].dirent_tail', 'metadata_csum directory block without its checksum tail (e2fsck fixes directory checksums)'),
  f_corrupt_dirent_tail: corrupt('ext4.dir[2:0].dirent_tail', 'e2fsck: "Directory inode 2, block #0, offset 0: directory has no checksum"'),
  f_rebuild_csum_rootdir: corrupt('ext4.dir[2:0].dirent_tail', 'e2fsck: "Directory inode 2, block #0, offset 0: directory corrupted"'),
  f_resize_inode_meta_bg: corrupt('ext4.dir[2:0].dirent_tail', 'root directory block without its checksum tail (e2fsck rewrites it after disabling resize_inode)'),
  f_htree_bad_csum: corrupt('ext4.dx_root[24].dotdot.rec_len', 'htree root of inode 12 is damaged (e2fsck: "root node fails checksum", clears the index)'),
  f_h_badroot: corrupt('ext4.dx_root[26689].hash_version', 'e2fsck: "HTREE directory inode 13345 has an invalid root node"'),
  f_trunc_dirent_header: corrupt('ext4.inode[13].inline_dir.system_data.rec_len', 'directory records truncated at the end of their area (e2fsck: "offset 4092: directory corrupted")'),
  f_inlinedata_dirblocks: corrupt('ext4.inode[12].inline_dir.rec_len', 'inline directory holds garbage (e2fsck: "Entry \'..\' in ??? (12) has invalid inode #")'),
  f_inlinedata_repair: corrupt('ext4.inode[12].i_size', 'an inline symlink of 80 bytes with 60 bytes of inline data (e2fsck: "Symlink /1 (inode #12) is invalid"); inline directories with a missing system.data xattr or bad sizes follow'),
  f_write_ea_no_extra_isize: corrupt('ext4.inode[12].inline_dir.rec_len', 'e2fsck: "Inode 12 has INLINE_DATA_FL flag but extended attribute not found"'),

  // Directories with holes, or blocks past i_size: a listing would miss entries.
  f_emptydir: corrupt('ext4.inode[12].i_size', 'e2fsck: "Inode 12, i_size is 1024, should be 0" and "Directory inode 12 has an unallocated block #0"'),
  f_holedir2: corrupt('ext4.inode[12].block_map', 'e2fsck: "Directory inode 12 has an unallocated block #3"'),
  f_holedir3: corrupt('ext4.inode[12].extent', 'e2fsck: "Directory inode 12 block 5 should be at block 2"'),
  f_toobig_extent_dir: corrupt('ext4.inode[12].extent', 'e2fsck: "Block #4294967281 (90) causes directory to be too big"'),
  f_recnect_bad: corrupt('ext4.inode[15].i_size', 'e2fsck: "Inode 15, i_size is 51539608576, should be 1024"'),

  // Block maps and extent trees.
  f_badjourblks: corrupt('ext4.inode[8].block_map', 'journal inode blocks outside the filesystem (e2fsck: "Superblock has an invalid journal (inode 8)")'),
  f_holedir: corrupt('ext4.inode[11].block_map', 'e2fsck: "Inode 11 has illegal block(s)"'),
  f_lotsbad: corrupt('ext4.inode[12].block_map', 'inode 12 block map holds garbage block numbers (e2fsck: illegal blocks)'),
  f_ind_inode_collision: corrupt('ext4.inode[12].block_map', 'inode 12\'s indirect block is the inode table (e2fsck: "conflicts with critical metadata")'),
  f_hugedir_blocks: corrupt('ext4.inode[12].block_map', 'block map names more blocks than i_blocks allows (e2fsck: "Inode 12 is too big")'),
  f_dup3: corrupt('ext4.inode[16].block_map', 'block map names more blocks than i_blocks allows (e2fsck: "Inode 16, i_blocks is 22, should be 24")'),
  f_ea_inode_fast_symlink: corrupt('ext4.inode[13].block_map', 'a fast symlink whose i_blocks counts its ea_inode xattr value, so its target "foo" is read as a block map, as e2fsck 1.47.0 also does ("Illegal block #0 (7303014)"); newer e2fsprogs read it as fast'),
  f_bad_disconnected_inode: corrupt('ext4.inode[1].extent_root.eh_magic', 'reserved inode 1 carries EXTENTS_FL without an extent header (e2fsck: "Inode 1 has EXTENTS_FL flag set")'),
  f_zeroed_ext_header: corrupt('ext4.inode[12].extent_root.eh_magic', 'e2fsck: "Inode 12 has corrupt extent header"'),
  f_extent_bad_node: corrupt('ext4.extent_block[22].eh_magic', 'e2fsck: "Inode 12 has an invalid extent node (blk 22, lblk 0)"'),
  f_extent_int_bad_magic: corrupt('ext4.extent_block[1295].eh_magic', 'e2fsck: "Inode 12 has an invalid extent node (blk 1295, lblk 0)"'),
  f_extent_leaf_bad_magic: corrupt('ext4.extent_block[1604].eh_magic', 'e2fsck: "Inode 12 has an invalid extent node (blk 1604, lblk 0)"'),
  f_extent_int_bad_extent: corrupt('ext4.inode[12].extent_index.ei_leaf', 'e2fsck: "Inode 12 has an invalid extent (logical block 0, invalid physical block 4294967295)"'),
  f_extent_leaf_bad_extent: corrupt('ext4.inode[12].extent', 'e2fsck: "Inode 12 has an invalid extent (logical block 2, invalid physical block 4294967295)"'),
  f_itable_collision: corrupt('ext4.inode[12].extent', 'extent names block 268435455 (e2fsck: "Illegal block number ... #268435455")'),
  f_extent_too_deep: corrupt('ext4.inode[12].extent_root.eh_depth', 'extent tree of depth 7; the format allows at most 5 (e2fsck shortens it)'),
  f_extents: corrupt('ext4.inode[16].extent_root.entry[2].block', 'inode 16 has extents out of logical order (e2fsck clears several extent inodes)'),
  f_extents2: corrupt('ext4.inode[12].extent_root.entry[1].block', 'e2fsck: "Inode 12 has out of order extents"'),
  f_ext_zero_len: corrupt('ext4.inode[12].extent_root.entry[0].ee_len', 'e2fsck: "Inode 12 has zero length extent"'),

  // Symlinks.
  f_badsymlinks: corrupt('ext4.inode[17].i_size', 'a symlink with an empty target (e2fsck: "Symlink /empty_link (inode #17) is invalid"); symlink sizes of 4 GiB follow'),
  f_invalid_extent_symlink: corrupt('ext4.inode[12].i_size', 'e2fsck: "Symlink /a (inode #12) is invalid"'),

  // Inodes and extended attributes.
  f_bad_inode_csum: corrupt('ext4.inode[33].i_extra_isize', 'e2fsck: "Inode 33 has a extra size (65535) which is invalid"'),
  f_write_ea_toosmall_extra_isize: corrupt('ext4.inode[12].i_extra_isize', 'e2fsck: "Inode 12 has a extra size (1) which is invalid"'),
  f_write_ea_toobig_extra_isize: corrupt('ext4.inode[12].i_extra_isize', 'e2fsck: "Inode 12 has a extra size (126) which is invalid"'),
  f_badinode: corrupt('ext4.xattr_block[39].h_magic', 'inode 12 names a zeroed xattr block (e2fsck clears it)'),
  f_ea_checks: corrupt('ext4.xattr_block[55].h_magic', 'xattr blocks with bad headers (e2fsck: "Inode 13 has a bad extended attribute block")'),
  f_ea_bad_csum: corrupt('ext4.xattr_block[1074].h_magic', 'e2fsck: "Inode 12 has a bad extended attribute block 1074"'),
  f_messy_inode: corrupt('ext4.inode[14].i_size_high', 'a size of 2^32 blocks or more (e2fsck: "i_size is 18446462598732849291, should be 2048"; its i_file_acl is outside the filesystem too)'),
  f_file_acl_high: corrupt('ext4.inode[12].i_file_acl', 'e2fsck: "i_file_acl_hi for inode 12 (/motd) is 2, should be zero"'),
  f_yesall: corrupt('ext4.inode[12].i_file_acl', 'many inodes damaged on purpose (the test answers "yes" to every e2fsck question); inode 12\'s xattr block is outside the filesystem'),
  f_inode_ea_collision: corrupt('ext4.inode[13].xattr.entry', 'e2fsck: "Inode 13 extended attribute is corrupt (allocation collision)"'),
  f_ea_inode: corrupt('ext4.inode', 'e2fsck: "Inode 17 has illegal extended attribute value inode 4008636142"'),
  f_ea_inode_no_feature: corrupt('ext4.inode[12].xattr.e_value_inum', 'e2fsck: "Inode 12 references EA inode but superblock is missing EA_INODE feature"'),
  f_ea_inode_self_ref: corrupt('ext4.xattr_block[20].e_value_size', 'xattr values of absurd sizes (e2fsck: "has a value size ... which is invalid")'),
  f_ea_zero_size: corrupt('ext4.inode[14].i_size', 'e2fsck: "Extended attribute in inode 12 has a value size (0) which is invalid"'),

  // Features the reader refuses.
  f_badcluster: bigalloc('the image tests bad clusters'),
  f_dup_ba: bigalloc('the image tests duplicate clusters'),
  f_holedir4: bigalloc('the image tests directory holes'),
  f_bigalloc_symlink_with_xattr: bigalloc('this image is clean'),
  f_bad_encryption: encrypt('the image tests bad encryption policies'),
  f_badsymlinks2: encrypt('the image tests encrypted symlinks among others'),
  f_dup_de_crypt: encrypt('the image tests duplicate encrypted names'),
  f_encrypted_lpf: encrypt('the image tests an encrypted lost+found'),
  f_short_encrypted_dirent: encrypt('the image tests a too-short encrypted name'),
};
