/**
 * A superblock built byte by byte at the spec's offsets (ext4 doc, super.rst) and decoded
 * by decodeSuperblock, for codec tests that need a Superblock but no image.
 */
import { decodeSuperblock, superblockChecksum, type Superblock } from '../../../src/fs/ext4/superblock.js';

export interface SyntheticOptions {
  readonly blockSize: 1024 | 2048 | 4096 | 65536;
  readonly inodeSize: 128 | 256 | 512;
  readonly metadataCsum: boolean;
  readonly gdtCsum?: boolean;
  readonly hugeFile: boolean;
  readonly is64: boolean;
  readonly groups?: number;
}

export const RO_COMPAT_GDT_CSUM = 0x10;
export const RO_COMPAT_HUGE_FILE = 0x8;
export const RO_COMPAT_METADATA_CSUM = 0x400;

/** The 1024 superblock bytes and their decoding. */
export function syntheticSuperblock(o: SyntheticOptions): { bytes: Uint8Array; sb: Superblock } {
  const b = new Uint8Array(1024);
  const v = new DataView(b.buffer);
  const groups = o.groups ?? 4;
  const bpg = Math.min(o.blockSize * 8, 32768);
  const ipg = 256;
  const first = o.blockSize === 1024 ? 1 : 0;
  v.setUint32(0x00, ipg * groups, true);
  v.setUint32(0x04, first + bpg * groups, true);
  v.setUint32(0x0c, 1000, true);
  v.setUint32(0x10, ipg * groups - 11, true);
  v.setUint32(0x14, first, true);
  v.setUint32(0x18, Math.log2(o.blockSize / 1024), true);
  v.setUint32(0x1c, Math.log2(o.blockSize / 1024), true);
  v.setUint32(0x20, bpg, true);
  v.setUint32(0x24, bpg, true);
  v.setUint32(0x28, ipg, true);
  v.setUint16(0x38, 0xef53, true);
  v.setUint16(0x3a, 1, true);
  v.setUint32(0x4c, 1, true);
  v.setUint32(0x54, 11, true);
  v.setUint16(0x58, o.inodeSize, true);
  v.setUint32(0x5c, 0x38, true); // ext_attr, resize_inode, dir_index
  v.setUint32(0x60, 0x2 | 0x40 | (o.is64 ? 0x80 : 0), true); // filetype, extent, 64bit
  const ro = 0x1 | 0x2 | (o.hugeFile ? RO_COMPAT_HUGE_FILE : 0) | (o.metadataCsum ? RO_COMPAT_METADATA_CSUM : o.gdtCsum ? RO_COMPAT_GDT_CSUM : 0);
  v.setUint32(0x64, ro, true);
  for (let i = 0; i < 16; i++) b[0x68 + i] = (i * 29 + 7) & 0xff;
  v.setUint16(0xfe, o.is64 ? 64 : 0, true);
  v.setUint16(0x15c, 32, true);
  v.setUint16(0x15e, 32, true);
  if (o.metadataCsum) {
    b[0x175] = 1;
    v.setUint32(0x3fc, superblockChecksum(b), true);
  }
  return { bytes: b, sb: decodeSuperblock(b, { file: 'synthetic', verifyChecksums: 'error', diagnostics: [] }) };
}
