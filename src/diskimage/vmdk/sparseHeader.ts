/**
 * SparseExtentHeader of hosted sparse extents (VMDK 5.0, "Hosted Sparse Extent
 * Header"): 512 little-endian bytes at the start of a sparse extent and, for
 * stream-optimized extents, again in the footer. decode validates every field
 * that does not need the file size; VmdkImage/SparseExtent check the rest.
 */
import { ByteReader } from '../ByteReader.js';
import { CorruptImageError, UnsupportedError } from '../../errors.js';
import {
  VMDK4_COMPRESSION_DEFLATE,
  VMDK4_COMPRESSION_NONE,
  VMDK4_FLAGS_KNOWN,
  VMDK4_FLAG_COMPRESS,
  VMDK4_GD_AT_END,
  VMDK4_GTES_PER_GT,
  VMDK4_HEADER_SIZE,
  VMDK4_MAGIC,
  VMDK4_MAX_GRAIN_SECTORS,
  VMDK4_MAX_VERSION,
  VMDK4_NL_TEST,
  VMDK_COWD_MAGIC,
} from './constants.js';

/** The header, with the spec's field names. Offsets and sizes are in sectors. */
export interface SparseExtentHeader {
  readonly magicNumber: number;
  readonly version: number;
  readonly flags: number;
  readonly capacity: number;
  readonly grainSize: number;
  readonly descriptorOffset: number;
  readonly descriptorSize: number;
  readonly numGTEsPerGT: number;
  readonly rgdOffset: number;
  /** undefined when the field holds GD_AT_END (the footer has it). */
  readonly gdOffset: number | undefined;
  readonly overHead: number;
  readonly uncleanShutdown: boolean;
  readonly compressAlgorithm: number;
}

/**
 * Decodes and validates a SparseExtentHeader found at byte `base` of `file`.
 * Throws CORRUPT_IMAGE (bad magic, version, grain size, numGTEsPerGT), TRUNCATED,
 * UNSUPPORTED_FORMAT (COWD extents), UNSUPPORTED_FEATURE (unknown flags or compression).
 */
export function decodeSparseHeader(bytes: Uint8Array, ctx: { file: string; base?: number; structure?: string }): SparseExtentHeader {
  const r = new ByteReader(bytes, { file: ctx.file, structure: ctx.structure ?? 'vmdk.header', base: ctx.base ?? 0 });
  const magicNumber = r.u32le(0, 'magicNumber');
  if (magicNumber === VMDK_COWD_MAGIC) {
    throw new UnsupportedError('UNSUPPORTED_FORMAT', {
      ...r.at(0, 'magicNumber'),
      detail: 'COWD (ESX Server 2.x / vmfsSparse) sparse extents are not supported',
    });
  }
  if (magicNumber !== VMDK4_MAGIC) {
    r.fail(0, 'magicNumber', 'not a hosted sparse extent', { expected: '0x564d444b (KDMV)', actual: `0x${magicNumber.toString(16).padStart(8, '0')}` });
  }
  const version = r.u32le(4, 'version');
  if (version < 1 || version > VMDK4_MAX_VERSION) r.fail(4, 'version', 'unsupported sparse extent version', { expected: `1..${VMDK4_MAX_VERSION}`, actual: version });
  const flags = r.u32le(8, 'flags');
  if ((flags & ~VMDK4_FLAGS_KNOWN) >>> 0 !== 0) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(8, 'flags'), detail: `unknown flag bits 0x${((flags & ~VMDK4_FLAGS_KNOWN) >>> 0).toString(16)}` });
  }
  const capacity = r.u64le(12, 'capacity');
  const grainSize = r.u64le(20, 'grainSize');
  // The spec requires a power of two greater than 8 sectors; qemu and VMware accept 8 (4 KiB).
  if (grainSize < 1 || grainSize > VMDK4_MAX_GRAIN_SECTORS || (grainSize & (grainSize - 1)) !== 0) {
    r.fail(20, 'grainSize', 'grain size must be a power of two of at most 128 MiB', { actual: grainSize });
  }
  const descriptorOffset = r.u64le(28, 'descriptorOffset');
  const descriptorSize = r.u64le(36, 'descriptorSize');
  const numGTEsPerGT = r.u32le(44, 'numGTEsPerGT');
  if (numGTEsPerGT !== VMDK4_GTES_PER_GT) r.fail(44, 'numGTEsPerGT', 'the spec fixes numGTEsPerGT at 512', { expected: VMDK4_GTES_PER_GT, actual: numGTEsPerGT });
  const rgdOffset = r.u64le(48, 'rgdOffset');
  const gdRaw = r.u64leBig(56, 'gdOffset');
  const gdOffset = gdRaw === VMDK4_GD_AT_END ? undefined : r.u64le(56, 'gdOffset');
  const overHead = r.u64le(64, 'overHead');
  const unclean = r.u8(72, 'uncleanShutdown');
  const compressAlgorithm = r.u16le(77, 'compressAlgorithm');
  if (compressAlgorithm !== VMDK4_COMPRESSION_NONE && compressAlgorithm !== VMDK4_COMPRESSION_DEFLATE) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(77, 'compressAlgorithm'), detail: `unknown compression algorithm ${compressAlgorithm}` });
  }
  if ((flags & VMDK4_FLAG_COMPRESS) !== 0 && compressAlgorithm !== VMDK4_COMPRESSION_DEFLATE) {
    r.fail(77, 'compressAlgorithm', 'compressed grains flagged but no compression algorithm named', { expected: VMDK4_COMPRESSION_DEFLATE, actual: compressAlgorithm });
  }
  return {
    magicNumber,
    version,
    flags,
    capacity,
    grainSize,
    descriptorOffset,
    descriptorSize,
    numGTEsPerGT,
    rgdOffset,
    gdOffset,
    overHead,
    uncleanShutdown: unclean !== 0,
    compressAlgorithm,
  };
}

/** Encodes a header into 512 bytes (the line-ending test bytes included). */
export function encodeSparseHeader(h: SparseExtentHeader): Uint8Array {
  const buf = new Uint8Array(VMDK4_HEADER_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint32(0, h.magicNumber, true);
  v.setUint32(4, h.version, true);
  v.setUint32(8, h.flags, true);
  v.setBigUint64(12, BigInt(h.capacity), true);
  v.setBigUint64(20, BigInt(h.grainSize), true);
  v.setBigUint64(28, BigInt(h.descriptorOffset), true);
  v.setBigUint64(36, BigInt(h.descriptorSize), true);
  v.setUint32(44, h.numGTEsPerGT, true);
  v.setBigUint64(48, BigInt(h.rgdOffset), true);
  v.setBigUint64(56, h.gdOffset === undefined ? VMDK4_GD_AT_END : BigInt(h.gdOffset), true);
  v.setBigUint64(64, BigInt(h.overHead), true);
  v.setUint8(72, h.uncleanShutdown ? 1 : 0);
  buf.set(VMDK4_NL_TEST, 73);
  v.setUint16(77, h.compressAlgorithm, true);
  return buf;
}

/** Throws CORRUPT_IMAGE unless `sector * 512` lies within a file of `fileSize` bytes. */
export function checkSectorInFile(sector: number, lengthBytes: number, fileSize: number, at: { file: string; structure: string; offset: number }, what: string): void {
  if (sector * 512 + lengthBytes > fileSize) {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `${what} (${lengthBytes} bytes at sector ${sector}) lies outside the file (${fileSize} bytes)` });
  }
}
