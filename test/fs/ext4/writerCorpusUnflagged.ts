/**
 * e2fsprogs test images that are damaged (e2fsck -fn finds problems) but that nothing the
 * reader checks flags, and that the writer therefore opens. The writer may stop the update
 * with a typed error (`refusedWhileWriting`: it meets the damage), or write it; then e2fsck
 * must report no kind of problem more often on the output than on the input (the writer
 * does not make them worse). A listed image that becomes clean, flagged or refused at open
 * is reported, so the list follows the reader's and the writer's checks.
 *
 * Found on the shared corpus (197 images; Debian's 1.47.0 source package has 185 of them):
 * 51 such images. 23 stop with a typed error (CORRUPT_IMAGE or BAD_CHECKSUM where the
 * update reads the damaged structure or meets an entry whose type or inode disagrees,
 * NO_SPACE where the damage leaves no free inode or block); 28 are written: some come out
 * strictly clean (the removed file was the damaged one), the others keep exactly their damage. The rest: 55 flagged and refused (the reader's typed error,
 * or DIRTY_FILESYSTEM), 82 refused by a feature the writer does not keep (64 without
 * extents, 10 ea_inode, 5 quota, 2 shared_blocks, 1 verity), 1 refused at open for damage
 * (f_sb_extra_isize), 8 clean images written and strictly clean.
 */
export interface UnflaggedImage {
  /** What e2fsck -fn finds. */
  readonly why: string;
  /** The installed e2fsck (1.47.0) finds it clean; a newer one (the image's expect.1) does not. */
  readonly missedByInstalledFsck?: true;
  /** The typed error the update meets, when it does not write. */
  readonly refusedWhileWriting?: string;
}

export const CORPUS_UNFLAGGED: Readonly<Record<string, UnflaggedImage>> = {
  f_bad_inode_csum: { why: "e2fsck: Inode 33 has a extra size (65535) which is invalid; Inode 33 passes checks, but checksum does not match inode.", refusedWhileWriting: "NO_SPACE" },
  f_bb_in_bb: { why: "e2fsck: Bad block list says the bad block list inode is bad. Clear inode? no; Root inode is not a directory; aborting. (group 0's bitmap has 494 free blocks, its descriptor says 493)", refusedWhileWriting: 'CORRUPT_IMAGE' },
  f_collapse_extent_tree: { why: "e2fsck: Inode 12 extent tree (at level 1) could be shorter." },
  f_compress_extent_tree_level: { why: "e2fsck: Inode 12 extent tree (at level 1) could be narrower." },
  f_corrupt_dirent_tail: { why: "e2fsck: Directory inode 2, block #0, offset 0: directory has no checksum.; Directory inode 2, block #0, offset 1012: directory corrupted", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_deleted_inode_bad_csum: { why: "e2fsck: Inode 12 passes checks, but checksum does not match inode." },
  f_dir_bad_csum: { why: "e2fsck: Directory inode 12, block #0: directory passes checks but fails checksum.; Directory inode 13, block #0, offset 0: directory has no checksum." },
  f_ea_bad_csum: { why: "e2fsck: Inode 12 has a bad extended attribute block 1074.; Extended attribute in inode 13 has a hash (1631637196) which is invalid", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_ea_value_crash: { why: "e2fsck: Inode 12 has INLINE_DATA_FL flag but extended attribute not found.; Inode 12 extended attribute is corrupt (allocation collision)." },
  f_emptydir: { why: "e2fsck: Inode 12, i_size is 1024, should be 0.; Directory inode 12 has an unallocated block #0." },
  f_ea_inode_no_feature: { why: 'e2fsck after 1.47.0 (expect.1): "Inode 12 references EA inode but superblock is missing EA_INODE feature"', missedByInstalledFsck: true, refusedWhileWriting: 'CORRUPT_IMAGE' },
  f_eofblocks: { why: "e2fsck: Inode 30, i_size is 2048, should be 4096.; Inode 31, i_size is 2048, should be 6144." },
  f_ext_zero_len: { why: "e2fsck: Inode 12 has zero length extent; (invalid logical block 0, physical block 37)", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_extent_bad_node: { why: "e2fsck: Inode 12 has an invalid extent node (blk 22, lblk 0); Inode 12 extent tree (at level 1) could be shorter.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_extent_int_bad_csum: { why: "e2fsck: Inode 12 extent block passes checks, but checksum does not match extent; (logical block 698, physical block 1788, len 1)", refusedWhileWriting: "BAD_CHECKSUM" },
  f_extent_int_bad_extent: { why: "e2fsck: Inode 12 has an invalid extent; (logical block 0, invalid physical block 4294967295, len 168)", refusedWhileWriting: "BAD_CHECKSUM" },
  f_extent_int_bad_magic: { why: "e2fsck: Inode 12 has an invalid extent node (blk 1295, lblk 0); Inode 12 extent tree (at level 1) could be shorter.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_extent_interior_start_lblk: { why: "e2fsck: Interior extent node level 0 of inode 12:; Logical start 0 does not match logical start 2 at next level." },
  f_extent_leaf_bad_csum: { why: "e2fsck: Inode 12 extent block passes checks, but checksum does not match extent; (logical block 7, physical block 1090, len 1)", refusedWhileWriting: "BAD_CHECKSUM" },
  f_extent_leaf_bad_extent: { why: "e2fsck: Inode 12 has an invalid extent; (logical block 2, invalid physical block 4294967295, len 1)", refusedWhileWriting: "BAD_CHECKSUM" },
  f_extent_leaf_bad_magic: { why: "e2fsck: Inode 12 has an invalid extent node (blk 1604, lblk 0); Inode 12 extent tree (at level 1) could be shorter.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_extent_too_deep: { why: "e2fsck: Inode 12 extent tree could be more shallow (7; could be <= 4); Inode 12 extent tree (at level 1) could be shorter.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_extents2: { why: "e2fsck: Inode 12 has out of order extents; (invalid logical block 0, physical block 23, len 12)", refusedWhileWriting: "NO_SPACE" },
  f_fast_symlink_extents: { why: "e2fsck: Fast symlink 13 has EXTENT_FL set.; Symlink /bar (inode #13) is invalid." },
  f_holedir2: { why: "e2fsck: Inode 12, i_size is 0, should be 5120.; Directory inode 13 block 2 should be at block 1." },
  f_holedir3: { why: "e2fsck: Directory inode 12 block 5 should be at block 2.; Directory inode 12 has an unallocated block #2." },
  f_htree_bad_csum: { why: "e2fsck: Problem in HTREE directory inode 12: root node fails checksum.; Clear HTree index? no" },
  f_htree_leaf_csum: { why: "e2fsck: Directory inode 12, block #1: directory passes checks but fails checksum." },
  f_idata_and_extents: { why: "e2fsck: Special (device/socket/fifo) file (inode 19) has extents; or inline-data flag set." },
  f_inlinedir_bad_symlink: { why: "e2fsck: Symlink /a/7 (inode #19) is invalid; Entry '7' in /a (12) has an incorrect filetype (e2fsck 1.47.0 then aborts: double free)" },
  f_inlinedata_dirblocks: { why: "e2fsck: Entry '..' in ??? (12) has invalid inode #: 1752440867.; Directory inode 12, block #0, offset 4: directory corrupted" },
  f_inlinedata_repair: { why: "e2fsck: Inode 12 has INLINE_DATA_FL flag but extended attribute not found.; Inode 16, i_size is 56, should be 60.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_inlinedir_detector: { why: "e2fsck: Special (device/socket/fifo) file (inode 12) has extents; or inline-data flag set.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_inode_ea_collision: { why: "e2fsck: Inode 12 extended attribute is corrupt (allocation collision).; Inode 13 extended attribute is corrupt (allocation collision)." },
  f_invalid_bad_inode: { why: "e2fsck: The bad block inode looks invalid.; Programming error? block #37 claimed for no reason in process_bad_block." },
  f_invalid_extent_symlink: { why: "e2fsck: Symlink /a (inode #12) is invalid.; Entry 'a' in / (2) has an incorrect filetype (was 1, should be 0).", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_jnl_etb_alloc_fail: { why: "e2fsck: Superblock has an invalid journal (inode 8).; Journal superblock is corrupt.", refusedWhileWriting: "NO_SPACE" },
  f_nospc_create_lnf: { why: "e2fsck: Unattached inode 125; Connect to /lost+found? no", refusedWhileWriting: "NO_SPACE" },
  f_preen_htree_csum: { why: 'e2fsck: Problem in HTREE directory inode 12: internal node fails checksum' },
  f_readonly_fsck: { why: "e2fsck: Free blocks count wrong (4294968254, counted=958)." },
  f_rebuild_csum_rootdir: { why: "e2fsck: Directory inode 2, block #0, offset 0: directory corrupted; e2fsck: aborted", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_resize_inode_meta_bg: { why: "e2fsck: Resize_inode and meta_bg features are enabled. Those features are; not compatible. Resize inode should be disabled.", refusedWhileWriting: "CORRUPT_IMAGE" },
  f_toobig_extent_dir: { why: "e2fsck: Inode 12 is too big.; Block #4294967281 (90) causes directory to be too big. IGNORED." },
  f_trunc_dirent_header: { why: "e2fsck: Directory inode 15, block #0, offset 4092: directory corrupted; e2fsck: aborted" },
  f_uninit_dir: { why: "e2fsck: Directory inode 12 has extent marked uninitialized at block 0.; Directory inode 14 has extent marked uninitialized at block 0." },
  f_unused_itable: { why: "e2fsck: Entry 'foo' in / (2) references inode 65 found in group 1's unused inodes area.; Entry 'foo' in / (2) has deleted/unused inode 65.; Free inodes count wrong for group #0 (53, counted=51)", refusedWhileWriting: 'CORRUPT_IMAGE' },
  f_write_ea_no_extra_isize: { why: "e2fsck: Inode 12 has INLINE_DATA_FL flag but extended attribute not found.; Directory inode 12, block #0, offset 4: directory corrupted" },
  f_write_ea_toobig_extra_isize: { why: "e2fsck: Inode 12 has INLINE_DATA_FL flag but extended attribute not found.; Inode 12 has a extra size (126) which is invalid" },
  f_write_ea_toosmall_extra_isize: { why: "e2fsck: Inode 12 has INLINE_DATA_FL flag but extended attribute not found.; Inode 12 has a extra size (1) which is invalid" },
  f_yesall: { why: 'e2fsck: Inode 12 has an invalid extent (physical block 999999999); bg_free_inodes_count 4294967293 in a group of 128 inodes', refusedWhileWriting: 'CORRUPT_IMAGE' },
  f_zeroed_ext_header: { why: "e2fsck: Inode 12 has corrupt extent header. Clear inode? no", refusedWhileWriting: "CORRUPT_IMAGE" },
};
