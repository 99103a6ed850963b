/**
 * The client's own settings of its filesystem, carried into the rebased client M (which
 * starts from T's superblock, the base's): what tune2fs and mounting change and nothing
 * else depends on (label, last mount point, error behaviour, mount counts and interval,
 * reserved blocks and their owner, default mount options, mount and write times, the
 * error record, KiB written, RAID stride and stripe width, the test flag, the default
 * directory hash), and the UUID where that can be done without rewriting every checksum. Byte ranges of the superblock, three-way: where the client's bytes differ
 * from the base's, M takes the client's; in the primary and in every backup copy.
 */
import type { BlockDevice, WritableDevice } from '../diskimage/BlockDevice.js';
import { RefusedError } from '../errors.js';
import { EXT4_FEATURE_INCOMPAT_CSUM_SEED, EXT4_FEATURE_RO_COMPAT_GDT_CSUM, EXT4_FEATURE_RO_COMPAT_METADATA_CSUM } from '../fs/ext4/constants.js';
import { groupFirstBlock, groupHasSuper } from '../fs/ext4/groupDescriptors.js';
import { superblockChecksum, type Superblock } from '../fs/ext4/superblock.js';

/** [offset, length] within the superblock (ext4 doc, super.rst). */
const OWNER_FIELDS: ReadonlyArray<readonly [number, number]> = [
  [0x08, 4], // s_r_blocks_count_lo
  [0x154, 4], // s_r_blocks_count_hi
  [0x2c, 4], // s_mtime
  [0x275, 1], // s_mtime_hi
  [0x30, 4], // s_wtime
  [0x274, 1], // s_wtime_hi
  [0x34, 2], // s_mnt_count
  [0x36, 2], // s_max_mnt_count
  [0x3c, 2], // s_errors
  [0x40, 4], // s_lastcheck
  [0x277, 1], // s_lastcheck_hi
  [0x44, 4], // s_checkinterval
  [0x50, 2], // s_def_resuid
  [0x52, 2], // s_def_resgid
  [0x78, 16], // s_volume_name
  [0x88, 64], // s_last_mounted
  [0x100, 4], // s_default_mount_opts
  [0x178, 8], // s_kbytes_written
  [0x194, 0x6c], // s_error_count .. s_last_error_block, the error record
  [0x278, 2], // s_first_error_time_hi, s_last_error_time_hi
  [0x27a, 2], // s_first_error_errcode, s_last_error_errcode
  [0x200, 64], // s_mount_opts
  [0x164, 2], // s_raid_stride (tune2fs -E stride)
  [0x170, 4], // s_raid_stripe_width (tune2fs -E stripe_width)
  [0x166, 2], // s_mmp_update_interval (tune2fs -E mmp_update_interval; the mmp feature itself is layout)
  // s_flags: the test flag (tune2fs -E test_fs); its directory hash flags are layout, and
  // equal by then (requireSameLayout), so the whole word is the client's.
  [0x160, 4],
  // s_def_hash_version (tune2fs -E hash_alg): only the default for directories indexed from
  // now on; each indexed directory records its own (found by a new user: refused as layout).
  [0xfc, 1],
];

/**
 * Fields that fix the filesystem's layout and on-disk formats (ext4 doc, super.rst). M
 * is the base's filesystem with the client's changes: a client that resized its
 * filesystem (resize2fs), or turned features on or off (tune2fs -O, e.g. ^has_journal),
 * cannot be rebased onto it without undoing that, silently: refused.
 */
const LAYOUT_FIELDS: ReadonlyArray<readonly [offset: number, length: number, name: string]> = [
  [0x00, 4, 's_inodes_count'],
  [0x04, 4, 's_blocks_count_lo'],
  [0x150, 4, 's_blocks_count_hi'],
  [0x14, 4, 's_first_data_block'],
  [0x18, 4, 's_log_block_size'],
  [0x1c, 4, 's_log_cluster_size'],
  [0x20, 4, 's_blocks_per_group'],
  [0x24, 4, 's_clusters_per_group'],
  [0x28, 4, 's_inodes_per_group'],
  [0x4c, 4, 's_rev_level'],
  [0x54, 4, 's_first_ino'],
  [0x58, 2, 's_inode_size'],
  [0x5c, 4, 's_feature_compat'],
  [0x60, 4, 's_feature_incompat'],
  [0x64, 4, 's_feature_ro_compat'],
  [0xce, 2, 's_reserved_gdt_blocks'],
  [0xe0, 4, 's_journal_inum'],
  [0xec, 16, 's_hash_seed'],
  [0xfe, 2, 's_desc_size'],
  [0x104, 4, 's_first_meta_bg'],
  [0x174, 1, 's_log_groups_per_flex'],
  [0x175, 1, 's_checksum_type'],
];
/** s_flags: the signed and unsigned directory hash flags (how htree names hash) must agree; the test flag may not. */
const S_FLAGS = 0x160;
const HASH_FLAGS = 0x3;
const UUID: readonly [number, number] = [0x68, 16];
const SB_BYTES = 1024;
const FEATURE_INCOMPAT = 0x60;
const CHECKSUM_SEED = 0x270;

const differ = (a: Uint8Array, b: Uint8Array, [at, n]: readonly [number, number]): boolean => {
  for (let i = at; i < at + n; i++) if (a[i] !== b[i]) return true;
  return false;
};

/** What carrySuperblock will write: the client's superblock bytes and the fields that differ from the base's. */
export interface SuperblockPlan {
  readonly client: Uint8Array;
  readonly fields: ReadonlyArray<readonly [number, number]>;
  readonly uuid: boolean;
}

/**
 * The client's own superblock settings (see the module comment), found without writing.
 * `sb` is the base's superblock as decoded (M has its geometry, features and checksum
 * seed). Throws SIZE_MISMATCH when the client's filesystem has another layout than the
 * base's (LAYOUT_FIELDS: resized, features changed), WRITE_REFUSED when the client changed
 * its UUID in a way M cannot take without rewriting every checksum (naming the client and
 * what to do): the rebase calls it while validating its inputs, before anything is written.
 */
export async function planSuperblock(base: BlockDevice, client: BlockDevice, sb: Superblock, clientName: string): Promise<SuperblockPlan> {
  const [b, c] = await Promise.all([base.read(SB_BYTES, SB_BYTES), client.read(SB_BYTES, SB_BYTES)]);
  requireSameLayout(b, c, clientName);
  const fields = OWNER_FIELDS.filter((f) => differ(b, c, f));
  let uuid = false;
  if (differ(b, c, UUID)) {
    const metadataCsum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
    const gdtCsum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_GDT_CSUM) !== 0;
    const cv = new DataView(c.buffer, c.byteOffset, c.byteLength);
    const clientSeedKept = (cv.getUint32(FEATURE_INCOMPAT, true) & EXT4_FEATURE_INCOMPAT_CSUM_SEED) !== 0 && cv.getUint32(CHECKSUM_SEED, true) === sb.csumSeed;
    if ((metadataCsum && !clientSeedKept) || (!metadataCsum && gdtCsum)) {
      throw new RefusedError('WRITE_REFUSED', {
        file: clientName,
        structure: 'ext4.superblock.s_uuid',
        offset: SB_BYTES + UUID[0],
        detail: `client ${clientName} changed its filesystem UUID, which changed the seed of every checksum; a rebased client cannot take it over the base's metadata: set the UUID again after the rebase (tune2fs -U), or change it with the metadata_csum_seed feature on (tune2fs -O metadata_csum_seed -U ...)`,
      });
    }
    uuid = true;
  }
  return { client: c, fields, uuid };
}

/** Writes the planned client settings into M's primary superblock and every backup copy. Returns how many fields it carried. */
export async function carrySuperblock(plan: SuperblockPlan, merged: WritableDevice, sb: Superblock): Promise<number> {
  const { client: c, fields, uuid } = plan;
  if (fields.length === 0 && !uuid) return 0;
  const bs = sb.blockSize;
  const csum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  // The primary at byte 1024, and a copy at the start of every group that has one.
  const places = [SB_BYTES];
  for (let g = 1; g < sb.groupCount; g++) if (groupHasSuper(sb, g)) places.push(groupFirstBlock(sb, g) * bs);
  for (const at of places) {
    const m = (await merged.read(at, SB_BYTES)).slice();
    const mv = new DataView(m.buffer, m.byteOffset, m.byteLength);
    for (const [off, n] of fields) m.set(c.subarray(off, off + n), off);
    if (uuid) {
      m.set(c.subarray(UUID[0], UUID[0] + UUID[1]), UUID[0]);
      if (csum) {
        // The seed stays M's (the client kept it too): recorded, with the feature that says so.
        mv.setUint32(FEATURE_INCOMPAT, mv.getUint32(FEATURE_INCOMPAT, true) | EXT4_FEATURE_INCOMPAT_CSUM_SEED, true);
        mv.setUint32(CHECKSUM_SEED, sb.csumSeed, true);
      }
    }
    if (csum) mv.setUint32(0x3fc, superblockChecksum(m), true);
    await merged.write(at, m);
  }
  return fields.length + (uuid ? 1 : 0);
}

/** Throws SIZE_MISMATCH naming the first layout field (LAYOUT_FIELDS, the hash flags) in which the client's superblock `c` differs from the base's `b`. */
function requireSameLayout(b: Uint8Array, c: Uint8Array, clientName: string): void {
  const hex = (x: Uint8Array, [at, n]: readonly [number, number]): string => Buffer.from(x.subarray(at, at + n)).reverse().toString('hex');
  // metadata_csum_seed turned on by the client is the client's own: carrySuperblock sets it in
  // M with the client's UUID (planSuperblock checks the seed). Turned off, it would come back.
  const u32 = (x: Uint8Array, at: number): number => new DataView(x.buffer, x.byteOffset, x.byteLength).getUint32(at, true);
  const seedAdded = (u32(c, FEATURE_INCOMPAT) & ~u32(b, FEATURE_INCOMPAT) & EXT4_FEATURE_INCOMPAT_CSUM_SEED) !== 0;
  const layoutDiffers = ([at, n]: readonly [number, number]): boolean =>
    at === FEATURE_INCOMPAT ? ((u32(b, at) ^ u32(c, at)) & ~(seedAdded ? EXT4_FEATURE_INCOMPAT_CSUM_SEED : 0)) !== 0 : differ(b, c, [at, n]);
  const differs: Array<readonly [number, number, string]> = LAYOUT_FIELDS.filter(([at, n]) => layoutDiffers([at, n]));
  if (((b[S_FLAGS]! ^ c[S_FLAGS]!) & HASH_FLAGS) !== 0) differs.push([S_FLAGS, 1, 's_flags (directory hash signedness)']);
  if (differs.length === 0) return;
  const [at, n, name] = differs[0]!;
  const resized = differs.some(([, , f]) => f.startsWith('s_blocks_count') || f === 's_inodes_count');
  const features = differs.some(([, , f]) => f.startsWith('s_feature'));
  throw new RefusedError('SIZE_MISMATCH', {
    file: clientName,
    structure: `ext4.superblock.${name}`,
    offset: SB_BYTES + at,
    expected: `0x${hex(b, [at, n])} (the base's)`,
    actual: `0x${hex(c, [at, n])}`,
    fields: differs.map(([, , f]) => f),
    detail: `the root filesystem of client ${clientName} no longer has the base's layout (${differs.map(([, , f]) => f).join(', ')} differ${differs.length === 1 ? 's' : ''})${resized ? ': it was resized (resize2fs)' : features ? ': its features were changed (tune2fs -O)' : ''} after it was cloned; a rebased client is the base's filesystem with the client's changes and would silently lose that: rebase this client after undoing it, or rebuild it from the new base`,
  });
}
