/**
 * What the writer must not touch (issue: "Refuses, with a typed error naming the reason,
 * a filesystem it must not touch ... and features it cannot keep correct"): the reader's
 * dirty states (a journal to replay, errors, an unclean unmount, orphans), a multi-mount
 * protection block that is not clean, and every feature whose on-disk invariants the
 * writer does not maintain. Refusing costs the user a clear message; writing would cost
 * them a filesystem e2fsck has to repair.
 */
import { CorruptImageError, RefusedError } from '../../errors.js';
import type { Ext4Fs } from './Ext4Fs.js';
import {
  EXT4_GOOD_OLD_INODE_SIZE,
  EXT4_FEATURE_COMPAT_EXCLUDE_BITMAP,
  EXT4_FEATURE_INCOMPAT_CASEFOLD,
  EXT4_FEATURE_INCOMPAT_COMPRESSION,
  EXT4_FEATURE_INCOMPAT_DIRDATA,
  EXT4_FEATURE_INCOMPAT_EA_INODE,
  EXT4_FEATURE_INCOMPAT_ENCRYPT,
  EXT4_FEATURE_INCOMPAT_EXTENTS,
  EXT4_FEATURE_INCOMPAT_JOURNAL_DEV,
  EXT4_FEATURE_INCOMPAT_MMP,
  EXT4_FEATURE_RO_COMPAT_BIGALLOC,
  EXT4_FEATURE_RO_COMPAT_HAS_SNAPSHOT,
  EXT4_FEATURE_RO_COMPAT_PROJECT,
  EXT4_FEATURE_RO_COMPAT_QUOTA,
  EXT4_FEATURE_RO_COMPAT_READONLY,
  EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS,
  EXT4_FEATURE_RO_COMPAT_VERITY,
} from './constants.js';

/** Features the writer cannot keep correct, with why (named in the refusal). */
const REFUSED_FEATURES: ReadonlyArray<{ field: 'compat' | 'incompat' | 'ro_compat'; bit: number; name: string; why: string }> = [
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_QUOTA, name: 'quota', why: 'quota usage would have to be updated for every file written' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_PROJECT, name: 'project', why: 'project quota usage would have to be updated' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_BIGALLOC, name: 'bigalloc', why: 'allocation in clusters of blocks is not implemented' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_HAS_SNAPSHOT, name: 'snapshot', why: 'snapshot metadata is not maintained' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS, name: 'shared_blocks', why: 'a filesystem marked to share blocks must not be written' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_READONLY, name: 'read-only', why: 'the filesystem is marked read-only' },
  { field: 'ro_compat', bit: EXT4_FEATURE_RO_COMPAT_VERITY, name: 'verity', why: 'fs-verity files and their Merkle trees are not maintained' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_CASEFOLD, name: 'casefold', why: 'case-insensitive name hashing is not implemented' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_ENCRYPT, name: 'encrypt', why: 'encrypted names and contents cannot be written' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_EA_INODE, name: 'ea_inode', why: 'xattr values in inodes (and their reference counts) are not maintained' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_COMPRESSION, name: 'compression', why: 'compressed files are not supported' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_DIRDATA, name: 'dirdata', why: 'data in directory entries is not supported' },
  { field: 'incompat', bit: EXT4_FEATURE_INCOMPAT_JOURNAL_DEV, name: 'journal_dev', why: 'this is an external journal device, not a filesystem' },
  { field: 'compat', bit: EXT4_FEATURE_COMPAT_EXCLUDE_BITMAP, name: 'exclude_bitmap', why: 'exclude bitmaps are not maintained' },
];

/** ext4 doc, mmp.rst: mmp_seq of a cleanly unmounted filesystem. */
const EXT4_MMP_SEQ_CLEAN = 0xff4d4d50;
const EXT4_MMP_MAGIC = 0x004d4d50;

/**
 * Throws why the writer must not write `fs`: DIRTY_FILESYSTEM (needs_recovery, errors,
 * not cleanly unmounted, orphans: "shut the VM down cleanly or fsck it"), WRITE_REFUSED
 * (a feature named in `data.feature`, an MMP block in use, an ext2/ext3 filesystem whose
 * files are mapped by blocks), CORRUPT_IMAGE (extra inode sizes that do not fit the inode).
 * Returns quietly when the writer may proceed.
 */
export async function assertWritable(fs: Ext4Fs, file: string): Promise<void> {
  const dirty = await fs.writeRefusal();
  if (dirty !== undefined) {
    throw new RefusedError('DIRTY_FILESYSTEM', {
      file,
      structure: 'ext4.superblock',
      state: dirty.state,
      detail: `${dirty.reason}: refusing to write; shut the VM down cleanly or run e2fsck on it first`,
    });
  }
  const sb = fs.superblock;
  const fields = { compat: sb.s_feature_compat, incompat: sb.s_feature_incompat, ro_compat: sb.s_feature_ro_compat };
  for (const f of REFUSED_FEATURES) {
    if (fields[f.field] & f.bit) {
      throw new RefusedError('WRITE_REFUSED', { file, structure: 'ext4.superblock', feature: f.name, detail: `refusing to write a filesystem with the ${f.name} feature: ${f.why}` });
    }
  }
  if (!(sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_EXTENTS)) {
    throw new RefusedError('WRITE_REFUSED', {
      file,
      structure: 'ext4.superblock',
      feature: '^extent',
      detail: 'refusing to write an ext2/ext3-style filesystem (no extent feature): files mapped by indirect blocks are not written yet',
    });
  }
  // New inodes get s_want_extra_isize (at least s_min_extra_isize) bytes of extra fields: a
  // value that does not fit the inode (e2fsck: "Bad desired extra isize") would write bad inodes.
  if (sb.s_inode_size > EXT4_GOOD_OLD_INODE_SIZE) {
    const max = sb.s_inode_size - EXT4_GOOD_OLD_INODE_SIZE;
    for (const [field, v] of [['s_min_extra_isize', sb.s_min_extra_isize], ['s_want_extra_isize', sb.s_want_extra_isize]] as const) {
      if (v !== 0 && (v < 4 || v > max || v % 4 !== 0)) {
        throw new CorruptImageError('CORRUPT_IMAGE', {
          file,
          structure: `ext4.superblock.${field}`,
          fsOffset: 1024 + (field === 's_min_extra_isize' ? 0x15c : 0x15e),
          detail: 'extra inode size does not fit the inode (run e2fsck on the filesystem first)',
          expected: `0, or a multiple of 4 from 4 to ${max}`,
          actual: v,
        });
      }
    }
  }
  if (sb.s_feature_incompat & EXT4_FEATURE_INCOMPAT_MMP) {
    const raw = await fs.device.read(1024 + 0x168, 8);
    const v = new DataView(raw.buffer, raw.byteOffset, 8);
    const mmpBlock = v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32;
    if (mmpBlock === 0 || mmpBlock >= sb.s_blocks_count) {
      throw new RefusedError('WRITE_REFUSED', { file, structure: 'ext4.superblock.s_mmp_block', feature: 'mmp', detail: 'multi-mount protection block outside the filesystem', actual: mmpBlock });
    }
    const mmp = await fs.readBlocks(mmpBlock, 1);
    const mv = new DataView(mmp.buffer, mmp.byteOffset, 8);
    const magic = mv.getUint32(0, true);
    const seq = mv.getUint32(4, true);
    if (magic !== EXT4_MMP_MAGIC || seq !== EXT4_MMP_SEQ_CLEAN) {
      throw new RefusedError('WRITE_REFUSED', {
        file,
        structure: 'ext4.mmp',
        feature: 'mmp',
        deviceOffset: mmpBlock * sb.blockSize,
        detail: magic !== EXT4_MMP_MAGIC ? 'multi-mount protection block is damaged' : 'multi-mount protection says the filesystem is in use (mmp_seq is not clean): it may be mounted elsewhere',
        actual: `0x${seq.toString(16)}`,
      });
    }
  }
}
