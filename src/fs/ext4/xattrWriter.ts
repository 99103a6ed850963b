/**
 * Where the writer puts an inode's xattrs (ext4 doc, attributes.rst): in the inode body
 * after i_extra_isize when they all fit there, else in an xattr block of their own. A
 * shared block (h_refcount > 1) is never edited in place: the inode drops its reference
 * and gets a block of its own, as the kernel does.
 */
import { RefusedError } from '../../errors.js';
import type { Run } from './allocator.js';
import { EXT4_FEATURE_COMPAT_EXT_ATTR, EXT4_FEATURE_RO_COMPAT_METADATA_CSUM, EXT4_GOOD_OLD_INODE_SIZE } from './constants.js';
import type { Ext4Fs } from './Ext4Fs.js';
import type { Inode } from './inode.js';
import type { Superblock } from './superblock.js';
import { decodeInodeXattrs, decodePosixAclXattr, encodeAcl, encodeInodeXattrs, encodeXattrBlock, isInlineDataXattr, xattrBlockChecksum, xattrsFitInBlock, xattrsFitInInode, type XattrEntry } from './xattr.js';

export interface XattrEnv {
  readonly sb: Superblock;
  readonly fs: Ext4Fs;
  allocate(goal: number): Promise<Run[]>;
  free(block: number): Promise<void>;
  writeBlock(block: number, bytes: Uint8Array): Promise<void>;
  readonly goal: number;
}

const ACL_NAMES = new Set(['system.posix_acl_access', 'system.posix_acl_default']);

/**
 * POSIX ACLs come from update sources as Linux passes them to setxattr(2) (version 2);
 * ext4 stores its own shorter form (version 1), as the kernel and e2fsprogs convert it.
 * Values already in ext4's form, or not ACLs, pass unchanged.
 */
function toDiskAcl(name: Uint8Array, value: Uint8Array): Uint8Array {
  if (!ACL_NAMES.has(new TextDecoder().decode(name))) return value;
  const entries = decodePosixAclXattr(value);
  return entries === undefined ? value : encodeAcl(entries);
}

/** Bytes of the in-inode xattr area. */
function areaSize(inode: Inode, sb: Superblock): number {
  return sb.s_inode_size > EXT4_GOOD_OLD_INODE_SIZE ? sb.s_inode_size - EXT4_GOOD_OLD_INODE_SIZE - inode.i_extra_isize : 0;
}

/** The inode's raw bytes with a new in-inode xattr area. */
function withArea(inode: Inode, sb: Superblock, area: Uint8Array): Uint8Array {
  const raw = inode.raw.slice();
  raw.set(area, EXT4_GOOD_OLD_INODE_SIZE + inode.i_extra_isize);
  void sb;
  return raw;
}

/**
 * Where `specs` would go on `inode`: what stays in its in-inode area (system.data, the
 * inline data), the wanted xattrs in ext4's form, that area's size, and whether all fit
 * there (else an xattr block takes the wanted ones).
 */
function placeXattrs(inode: Inode, specs: ReadonlyArray<{ name: Uint8Array; value: Uint8Array }>, sb: Superblock): { kept: XattrEntry[]; wanted: XattrEntry[]; size: number; inInode: boolean } {
  const ctx = { file: '', verifyChecksums: 'error' as const, diagnostics: [] };
  const kept: XattrEntry[] = decodeInodeXattrs(inode.raw, inode.i_extra_isize, ctx, inode.ino, inode.deviceOffset).filter(isInlineDataXattr);
  const wanted: XattrEntry[] = specs.map((s) => ({ name: s.name, value: toDiskAcl(s.name, s.value) }));
  const size = areaSize(inode, sb);
  return { kept, wanted, size, inInode: size > 0 && xattrsFitInInode([...kept, ...wanted], size) };
}

/** Whether writeXattrs would put `specs` in an xattr block (they and the inline data do not all fit in the inode). */
export function needsXattrBlock(inode: Inode, specs: ReadonlyArray<{ name: Uint8Array; value: Uint8Array }>, sb: Superblock): boolean {
  return specs.length > 0 && !placeXattrs(inode, specs, sb).inInode;
}

/**
 * Gives `inode` exactly the xattrs `specs` (system.data, the inline data, is kept where
 * it is). Returns the new raw inode bytes (its xattr area), the new i_file_acl and the
 * change in blocks held (-1, 0 or +1). The caller writes the inode.
 */
export async function writeXattrs(inode: Inode, specs: ReadonlyArray<{ name: Uint8Array; value: Uint8Array }>, env: XattrEnv): Promise<{ raw: Uint8Array; fileAcl: number; blocksDelta: number }> {
  const { sb } = env;
  const { kept, wanted, size, inInode } = placeXattrs(inode, specs, sb);
  if (wanted.length > 0 && !(sb.s_feature_compat & EXT4_FEATURE_COMPAT_EXT_ATTR)) {
    throw new RefusedError('BAD_UPDATE', { structure: `ext4.inode[${inode.ino}].xattrs`, detail: 'the filesystem has no ext_attr feature, so it cannot hold the xattrs the update gives this file' });
  }
  let blocksDelta = 0;
  let fileAcl = inode.i_file_acl;
  if (fileAcl !== 0) {
    await releaseXattrBlock(fileAcl, env);
    fileAcl = 0;
    blocksDelta--;
  }
  if (inInode) return { raw: withArea(inode, sb, encodeInodeXattrs([...kept, ...wanted], size)), fileAcl, blocksDelta };
  // Not all in the inode: the block takes them all (system.data stays in the inode).
  const area = size > 0 ? encodeInodeXattrs(kept, size) : undefined;
  if (!xattrsFitInBlock(wanted, sb.blockSize)) {
    throw new RefusedError('BAD_UPDATE', { structure: `ext4.inode[${inode.ino}].xattrs`, detail: `xattrs of ${wanted.reduce((n, x) => n + x.name.length + x.value.length, 0)} bytes do not fit the inode and one ${sb.blockSize}-byte block (ea_inode is not supported)` });
  }
  const [run] = await env.allocate(env.goal);
  const blockNo = run!.start;
  const metadataCsum = (sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) !== 0;
  const block = encodeXattrBlock(wanted, { refcount: 1, blockNo, seed: sb.csumSeed, metadataCsum, blockSize: sb.blockSize });
  await env.writeBlock(blockNo, block);
  return { raw: area !== undefined ? withArea(inode, sb, area) : inode.raw, fileAcl: blockNo, blocksDelta: blocksDelta + 1 };
}

/** Drops one reference to xattr block `blockNo`: frees it at the last, else rewrites its h_refcount (and checksum). */
export async function releaseXattrBlock(blockNo: number, env: Pick<XattrEnv, 'fs' | 'sb' | 'free' | 'writeBlock'>): Promise<void> {
  const { header } = await env.fs.readXattrBlock(blockNo);
  if (header.h_refcount <= 1) {
    await env.free(blockNo);
    return;
  }
  const bytes = (await env.fs.readBlocks(blockNo, 1)).slice();
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  v.setUint32(4, header.h_refcount - 1, true);
  if (env.sb.s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) v.setUint32(0x10, xattrBlockChecksum(env.sb.csumSeed, blockNo, bytes), true);
  await env.writeBlock(blockNo, bytes);
}

/** The inode's raw bytes without its system.data xattr (an inline directory made a block directory). */
export function dropInlineData(inode: Inode, sb: Superblock): Uint8Array {
  const size = areaSize(inode, sb);
  if (size === 0) return inode.raw;
  const ctx = { file: '', verifyChecksums: 'error' as const, diagnostics: [] };
  const rest = decodeInodeXattrs(inode.raw, inode.i_extra_isize, ctx, inode.ino, inode.deviceOffset).filter((x) => !isInlineDataXattr(x));
  return withArea(inode, sb, encodeInodeXattrs(rest, size));
}
