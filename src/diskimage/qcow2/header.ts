/**
 * qcow2 header and header extensions (qcow2.rst, "Header" and "Header extensions").
 * decode validates everything that does not need the file size; Qcow2Image.open
 * checks the rest (tables inside the file).
 */
import { ByteReader } from '../ByteReader.js';
import { CorruptImageError, UnsupportedError } from '../../errors.js';
import {
  QCOW2_COMPRESSION_DEFLATE,
  QCOW2_COMPRESSION_ZSTD,
  QCOW2_EXT_BACKING_FORMAT,
  QCOW2_EXT_BITMAPS,
  QCOW2_EXT_END,
  QCOW2_EXT_EXTERNAL_DATA_FILE,
  QCOW2_EXT_FEATURE_NAME_TABLE,
  QCOW2_EXT_FULL_DISK_ENCRYPTION,
  QCOW2_INCOMPAT_COMPRESSION,
  QCOW2_INCOMPAT_CORRUPT,
  QCOW2_INCOMPAT_DATA_FILE,
  QCOW2_INCOMPAT_KNOWN,
  QCOW2_MAGIC,
  QCOW2_MAX_BACKING_FILE_SIZE,
  QCOW2_MAX_CLUSTER_BITS,
  QCOW2_MIN_CLUSTER_BITS,
  QCOW2_V2_HEADER_LENGTH,
  QCOW2_V3_HEADER_LENGTH,
} from './constants.js';

/** The header, with the spec's field names. */
export interface Qcow2Header {
  readonly magic: number;
  readonly version: 2 | 3;
  readonly backing_file_offset: number;
  readonly backing_file_size: number;
  readonly cluster_bits: number;
  readonly size: number;
  readonly crypt_method: number;
  readonly l1_size: number;
  readonly l1_table_offset: number;
  readonly refcount_table_offset: number;
  readonly refcount_table_clusters: number;
  readonly nb_snapshots: number;
  readonly snapshots_offset: number;
  readonly incompatible_features: bigint;
  readonly compatible_features: bigint;
  readonly autoclear_features: bigint;
  readonly refcount_order: number;
  readonly header_length: number;
  /** 0 deflate, 1 zstd (byte 104, only when header_length > 104). */
  readonly compression_type: number;
}

export interface Qcow2FeatureName {
  readonly type: 'incompatible' | 'compatible' | 'autoclear';
  readonly bit: number;
  readonly name: string;
}

export interface Qcow2BitmapsExtension {
  readonly nb_bitmaps: number;
  readonly bitmap_directory_size: number;
  readonly bitmap_directory_offset: number;
}

export interface Qcow2Extensions {
  readonly backingFormat?: string;
  readonly featureNames: readonly Qcow2FeatureName[];
  readonly bitmaps?: Qcow2BitmapsExtension;
  readonly externalDataFile?: string;
  /** Types we do not know; the spec says to ignore them. */
  readonly unknown: readonly number[];
  /** Byte offset just past the end-of-extensions marker. */
  readonly endOffset: number;
}

const FEATURE_NAMES_BUILTIN: Record<number, string> = {
  0: 'dirty bit',
  1: 'corrupt bit',
  2: 'external data file',
  3: 'compression type',
  4: 'extended L2 entries',
};

/**
 * Decodes and validates a qcow2 header from the start of the file.
 * Throws CORRUPT_IMAGE/TRUNCATED (bad magic, version, lengths), UNSUPPORTED_FEATURE
 * (unknown incompatible bits, external data file), ENCRYPTED, IMAGE_MARKED_CORRUPT (unless
 * `allowCorruptBit`, for the checker).
 */
export function decodeQcow2Header(bytes: Uint8Array, file: string, options: { allowCorruptBit?: boolean } = {}): Qcow2Header {
  const r = new ByteReader(bytes, { file, structure: 'qcow2.header', base: 0 });
  const magic = r.u32be(0, 'magic');
  if (magic !== QCOW2_MAGIC) r.fail(0, 'magic', 'not a qcow2 image', { expected: '0x514649fb', actual: hex(magic) });
  const version = r.u32be(4, 'version');
  if (version !== 2 && version !== 3) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(4, 'version'), detail: `qcow2 version ${version} is not supported (2 and 3 are)`, expected: '2 or 3', actual: version });
  }
  const cluster_bits = r.u32be(20, 'cluster_bits');
  if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
    r.fail(20, 'cluster_bits', 'cluster size must be 512 B to 2 MiB', { expected: '9..21', actual: cluster_bits });
  }
  const backing_file_offset = r.u64be(8, 'backing_file_offset');
  const backing_file_size = r.u32be(16, 'backing_file_size');
  const size = r.u64be(24, 'size');
  const crypt_method = r.u32be(32, 'crypt_method');
  const l1_size = r.u32be(36, 'l1_size');
  const l1_table_offset = r.u64be(40, 'l1_table_offset');
  const refcount_table_offset = r.u64be(48, 'refcount_table_offset');
  const refcount_table_clusters = r.u32be(56, 'refcount_table_clusters');
  const nb_snapshots = r.u32be(60, 'nb_snapshots');
  // As qemu validates it (qcow2_validate_table): aligned to a cluster and below 2^63 even
  // with no snapshots; its value is read only where there are snapshots.
  const snapshotsOffset = r.u64beBig(64, 'snapshots_offset');
  if (snapshotsOffset % (1n << BigInt(cluster_bits)) !== 0n || snapshotsOffset >= 1n << 63n) {
    r.fail(64, 'snapshots_offset', 'snapshot table offset not aligned to a cluster (qemu: "Snapshot table offset invalid")', { actual: `0x${snapshotsOffset.toString(16)}` });
  }
  const snapshots_offset = nb_snapshots > 0 ? r.u64be(64, 'snapshots_offset') : Number(snapshotsOffset);

  let incompatible_features = 0n;
  let compatible_features = 0n;
  let autoclear_features = 0n;
  let refcount_order = 4;
  let header_length = QCOW2_V2_HEADER_LENGTH;
  let compression_type = QCOW2_COMPRESSION_DEFLATE;
  if (version === 3) {
    incompatible_features = r.u64beBig(72, 'incompatible_features');
    compatible_features = r.u64beBig(80, 'compatible_features');
    autoclear_features = r.u64beBig(88, 'autoclear_features');
    refcount_order = r.u32be(96, 'refcount_order');
    header_length = r.u32be(100, 'header_length');
    if (header_length < QCOW2_V3_HEADER_LENGTH || header_length % 8 !== 0 || header_length > 1 << cluster_bits) {
      r.fail(100, 'header_length', 'must be at least 104, a multiple of 8 and within the first cluster', { actual: header_length });
    }
    if (refcount_order > 6) r.fail(96, 'refcount_order', 'refcount width above 64 bits', { expected: '0..6', actual: refcount_order });
    if (header_length > QCOW2_V3_HEADER_LENGTH) compression_type = r.u8(104, 'compression_type');
  }

  if (crypt_method !== 0) {
    throw new UnsupportedError('ENCRYPTED', { ...r.at(32, 'crypt_method'), detail: `encrypted qcow2 images are not supported (crypt_method ${crypt_method})` });
  }
  // A checker must still be able to look at an image qemu marked corrupt; readers refuse it.
  if (incompatible_features & QCOW2_INCOMPAT_CORRUPT && !options.allowCorruptBit) {
    throw new CorruptImageError('IMAGE_MARKED_CORRUPT', { ...r.at(72, 'incompatible_features'), detail: 'the image has the corrupt bit set; repair it with qemu-img check -r all first' });
  }
  if (incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(72, 'incompatible_features'), detail: 'images with an external data file are not supported', feature: 'external data file' });
  }
  const unknown = incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
  if (unknown !== 0n) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(72, 'incompatible_features'), detail: `unknown incompatible feature bits 0x${unknown.toString(16)}`, actual: `0x${incompatible_features.toString(16)}` });
  }
  const hasCompressionType = (incompatible_features & QCOW2_INCOMPAT_COMPRESSION) !== 0n;
  if (hasCompressionType !== (compression_type !== QCOW2_COMPRESSION_DEFLATE)) {
    r.fail(104, 'compression_type', 'the compression type bit and compression_type disagree', { actual: compression_type });
  }
  if (compression_type !== QCOW2_COMPRESSION_DEFLATE && compression_type !== QCOW2_COMPRESSION_ZSTD) {
    throw new UnsupportedError('UNSUPPORTED_FEATURE', { ...r.at(104, 'compression_type'), detail: `unknown compression type ${compression_type}` });
  }
  if (backing_file_offset !== 0) {
    if (backing_file_size > QCOW2_MAX_BACKING_FILE_SIZE || backing_file_offset + backing_file_size > 1 << cluster_bits) {
      r.fail(16, 'backing_file_size', 'backing file name must lie within the first cluster and be at most 1023 bytes', { actual: backing_file_size });
    }
  }
  return {
    magic, version, backing_file_offset, backing_file_size, cluster_bits, size, crypt_method, l1_size, l1_table_offset,
    refcount_table_offset, refcount_table_clusters, nb_snapshots, snapshots_offset, incompatible_features,
    compatible_features, autoclear_features, refcount_order, header_length, compression_type,
  };
}

/** Encodes a header (header_length bytes; 72 for version 2). */
export function encodeQcow2Header(h: Qcow2Header): Uint8Array {
  const out = new Uint8Array(h.version === 2 ? QCOW2_V2_HEADER_LENGTH : Math.max(QCOW2_V3_HEADER_LENGTH, h.header_length));
  const v = new DataView(out.buffer);
  v.setUint32(0, h.magic);
  v.setUint32(4, h.version);
  v.setBigUint64(8, BigInt(h.backing_file_offset));
  v.setUint32(16, h.backing_file_size);
  v.setUint32(20, h.cluster_bits);
  v.setBigUint64(24, BigInt(h.size));
  v.setUint32(32, h.crypt_method);
  v.setUint32(36, h.l1_size);
  v.setBigUint64(40, BigInt(h.l1_table_offset));
  v.setBigUint64(48, BigInt(h.refcount_table_offset));
  v.setUint32(56, h.refcount_table_clusters);
  v.setUint32(60, h.nb_snapshots);
  v.setBigUint64(64, BigInt(h.snapshots_offset));
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatible_features);
    v.setBigUint64(80, h.compatible_features);
    v.setBigUint64(88, h.autoclear_features);
    v.setUint32(96, h.refcount_order);
    v.setUint32(100, h.header_length);
    if (h.header_length > QCOW2_V3_HEADER_LENGTH) v.setUint8(104, h.compression_type);
  }
  return out;
}

/**
 * Decodes the header extensions that follow the header in the first cluster.
 * `cluster` is the first cluster, or as much of it as the file holds. Bounded by the
 * cluster: each extension takes at least 8 bytes. Throws CORRUPT_IMAGE, or TRUNCATED
 * where the header or an extension would fit in the cluster but the file ends first.
 */
export function decodeQcow2Extensions(cluster: Uint8Array, header: Qcow2Header, file: string): Qcow2Extensions {
  const r = new ByteReader(cluster, { file, structure: 'qcow2.header_extension', base: 0 });
  const clusterSize = 2 ** header.cluster_bits;
  if (cluster.length < header.header_length) {
    throw new CorruptImageError('TRUNCATED', { file, structure: 'qcow2.header', offset: cluster.length, detail: `the file ends inside the header (header_length ${header.header_length}, file ${cluster.length} bytes)` });
  }
  // Extensions end where the backing file name starts, or at the end of the cluster.
  const area = header.backing_file_offset !== 0 ? Math.min(header.backing_file_offset, clusterSize) : clusterSize;
  const limit = Math.min(area, cluster.length);
  const cut = (at: number, field: string, end: number): never => {
    throw new CorruptImageError('TRUNCATED', { ...r.at(at, field), detail: `the file ends at byte ${cluster.length}, inside the header extensions (which reach byte ${end})` });
  };
  let pos = header.header_length;
  let backingFormat: string | undefined;
  let bitmaps: Qcow2BitmapsExtension | undefined;
  let externalDataFile: string | undefined;
  const featureNames: Qcow2FeatureName[] = [];
  const unknown: number[] = [];
  for (;;) {
    if (pos + 8 > limit) {
      // Version 2 images may omit the end marker when nothing follows.
      if (header.version === 2) return { featureNames, unknown, endOffset: pos, ...(backingFormat !== undefined ? { backingFormat } : {}) };
      if (pos + 8 <= area) cut(pos, 'type', pos + 8);
      r.fail(pos, 'type', 'header extensions run past the end of the header area');
    }
    const type = r.u32be(pos, 'type');
    const len = r.u32be(pos + 4, 'length');
    if (type === QCOW2_EXT_END) break;
    const dataStart = pos + 8;
    if (dataStart + len > limit) {
      if (dataStart + len <= area) cut(pos + 4, 'length', dataStart + len);
      r.fail(pos + 4, 'length', `extension 0x${type.toString(16)} of ${len} bytes runs past the header area`);
    }
    const data = r.sub(dataStart, len, `qcow2.header_extension[0x${type.toString(16)}]`);
    switch (type) {
      case QCOW2_EXT_BACKING_FORMAT:
        backingFormat = decodeText(data.bytes);
        break;
      case QCOW2_EXT_FEATURE_NAME_TABLE:
        for (let i = 0; i + 48 <= len; i += 48) {
          const t = data.u8(i);
          const kind = t === 0 ? 'incompatible' : t === 1 ? 'compatible' : t === 2 ? 'autoclear' : undefined;
          if (kind !== undefined) featureNames.push({ type: kind, bit: data.u8(i + 1), name: decodeText(data.slice(i + 2, 46)) });
        }
        break;
      case QCOW2_EXT_BITMAPS:
        if (len < 24) data.fail(0, 'length', 'bitmaps extension shorter than 24 bytes');
        bitmaps = { nb_bitmaps: data.u32be(0, 'nb_bitmaps'), bitmap_directory_size: data.u64be(8, 'bitmap_directory_size'), bitmap_directory_offset: data.u64be(16, 'bitmap_directory_offset') };
        break;
      case QCOW2_EXT_FULL_DISK_ENCRYPTION:
        throw new UnsupportedError('ENCRYPTED', { ...r.at(pos, 'type'), detail: 'the image carries a full disk encryption header' });
      case QCOW2_EXT_EXTERNAL_DATA_FILE:
        externalDataFile = decodeText(data.bytes);
        break;
      default:
        unknown.push(type);
    }
    pos = dataStart + Math.ceil(len / 8) * 8;
  }
  return {
    featureNames,
    unknown,
    endOffset: pos + 8,
    ...(backingFormat !== undefined ? { backingFormat } : {}),
    ...(bitmaps !== undefined ? { bitmaps } : {}),
    ...(externalDataFile !== undefined ? { externalDataFile } : {}),
  };
}

/** Names of the incompatible/compatible bits set, using the image's own table where it has one. */
export function describeFeatures(bits: bigint, type: Qcow2FeatureName['type'], table: readonly Qcow2FeatureName[]): string[] {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if ((bits >> BigInt(bit)) & 1n) {
      const named = table.find((f) => f.type === type && f.bit === bit)?.name;
      names.push(named ?? (type === 'incompatible' ? FEATURE_NAMES_BUILTIN[bit] : type === 'compatible' && bit === 0 ? 'lazy refcounts' : undefined) ?? `bit ${bit}`);
    }
  }
  return names;
}

function decodeText(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return new TextDecoder('utf-8', { fatal: false }).decode(nul >= 0 ? bytes.subarray(0, nul) : bytes);
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/** What encodeQcow2Extensions writes (qcow2.rst, "Header extensions"). */
export interface Qcow2ExtensionsToEncode {
  /** Backing file format name (extension 0xe2792aca). */
  readonly backingFormat?: string;
  /** Feature name table entries (extension 0x6803f857). */
  readonly featureNames?: readonly Qcow2FeatureName[];
}

/**
 * Encodes header extensions followed by the end-of-extensions marker. Each
 * extension's data is padded to a multiple of 8 bytes, as the spec requires.
 */
export function encodeQcow2Extensions(ext: Qcow2ExtensionsToEncode): Uint8Array {
  const parts: Uint8Array[] = [];
  const push = (type: number, data: Uint8Array) => {
    const out = new Uint8Array(8 + Math.ceil(data.length / 8) * 8);
    const v = new DataView(out.buffer);
    v.setUint32(0, type);
    v.setUint32(4, data.length);
    out.set(data, 8);
    parts.push(out);
  };
  if (ext.backingFormat !== undefined) push(QCOW2_EXT_BACKING_FORMAT, new TextEncoder().encode(ext.backingFormat));
  if (ext.featureNames !== undefined && ext.featureNames.length > 0) {
    const table = new Uint8Array(48 * ext.featureNames.length);
    ext.featureNames.forEach((f, i) => {
      table[i * 48] = f.type === 'incompatible' ? 0 : f.type === 'compatible' ? 1 : 2;
      table[i * 48 + 1] = f.bit;
      table.set(new TextEncoder().encode(f.name).subarray(0, 46), i * 48 + 2);
    });
    push(QCOW2_EXT_FEATURE_NAME_TABLE, table);
  }
  parts.push(new Uint8Array(8)); // QCOW2_EXT_END, length 0
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
