/** qcow2 header decoding: round trips, and one corrupt-input test per validation. */
import { describe, expect, test } from 'vitest';
import { decodeQcow2Extensions, decodeQcow2Header, encodeQcow2Header, type Qcow2Header } from '../../../src/diskimage/qcow2/header.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const BASE: Qcow2Header = {
  magic: 0x514649fb, version: 3, backing_file_offset: 0, backing_file_size: 0, cluster_bits: 16, size: 1 << 30,
  crypt_method: 0, l1_size: 2, l1_table_offset: 0x30000, refcount_table_offset: 0x10000, refcount_table_clusters: 1,
  nb_snapshots: 0, snapshots_offset: 0, incompatible_features: 0n, compatible_features: 0n, autoclear_features: 0n,
  refcount_order: 4, header_length: 112, compression_type: 0,
};

function bytesOf(h: Partial<Qcow2Header>): Uint8Array {
  const out = new Uint8Array(4096);
  out.set(encodeQcow2Header({ ...BASE, ...h }));
  return out;
}

describe('decodeQcow2Header', () => {
  test('round trip: decode(encode(h)) equals h, for version 3 and version 2', () => {
    expect(decodeQcow2Header(bytesOf({}), 'x')).toEqual(BASE);
    const v2 = { ...BASE, version: 2 as const, header_length: 72, refcount_order: 4 };
    expect(decodeQcow2Header(bytesOf(v2), 'x')).toEqual(v2);
  });

  test('encode(decode(bytes)) equals the bytes', () => {
    const bytes = encodeQcow2Header({ ...BASE, compatible_features: 1n, size: 123456789 * 512 });
    expect(encodeQcow2Header(decodeQcow2Header(bytes, 'x'))).toEqual(bytes);
  });

  test('bad magic', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ magic: 0x12345678 }), 'f.qcow2'), 'CORRUPT_IMAGE', { file: 'f.qcow2', structure: 'qcow2.header.magic', offset: 0 });
  });
  test('unsupported version', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ version: 4 as 3 }), 'f'), 'UNSUPPORTED_FEATURE', { offset: 4 });
  });
  test('cluster_bits out of range', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ cluster_bits: 8 }), 'f'), 'CORRUPT_IMAGE', { offset: 20 });
    await expectImgError(() => decodeQcow2Header(bytesOf({ cluster_bits: 22 }), 'f'), 'CORRUPT_IMAGE', { offset: 20 });
  });
  test('encryption is refused', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ crypt_method: 2 }), 'f'), 'ENCRYPTED', { offset: 32 });
  });
  test('the corrupt bit is refused', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ incompatible_features: 2n }), 'f'), 'IMAGE_MARKED_CORRUPT', { offset: 72 });
  });
  test('an external data file is refused', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ incompatible_features: 4n }), 'f'), 'UNSUPPORTED_FEATURE', { offset: 72 });
  });
  test('unknown incompatible features are refused', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ incompatible_features: 1n << 20n }), 'f'), 'UNSUPPORTED_FEATURE', { offset: 72 });
  });
  test('header_length not a multiple of 8 or too short', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ header_length: 100 }), 'f'), 'CORRUPT_IMAGE', { offset: 100 });
  });
  test('refcount_order above 6', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ refcount_order: 7 }), 'f'), 'CORRUPT_IMAGE', { offset: 96 });
  });
  test('compression type without its incompatible bit', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ compression_type: 1 }), 'f'), 'CORRUPT_IMAGE', { offset: 104 });
  });
  test('backing file name outside the first cluster', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({ backing_file_offset: 65530, backing_file_size: 10 }), 'f'), 'CORRUPT_IMAGE', { offset: 16 });
  });
  test('64-bit fields above 2^53', async () => {
    const b = bytesOf({});
    new DataView(b.buffer).setBigUint64(24, 1n << 60n);
    await expectImgError(() => decodeQcow2Header(b, 'f'), 'CORRUPT_IMAGE', { offset: 24, structure: 'qcow2.header.size' });
  });
  test('a truncated header', async () => {
    await expectImgError(() => decodeQcow2Header(bytesOf({}).subarray(0, 50), 'f'), 'TRUNCATED', { offset: 48, structure: 'qcow2.header.refcount_table_offset' });
  });
});

describe('decodeQcow2Extensions', () => {
  function withExtensions(exts: Array<[number, Uint8Array]>, end = true): { cluster: Uint8Array; header: Qcow2Header } {
    const cluster = bytesOf({});
    const view = new DataView(cluster.buffer);
    let pos = BASE.header_length;
    for (const [type, data] of exts) {
      view.setUint32(pos, type);
      view.setUint32(pos + 4, data.length);
      cluster.set(data, pos + 8);
      pos += 8 + Math.ceil(data.length / 8) * 8;
    }
    if (!end) view.setUint32(pos, 0xdeadbeef), view.setUint32(pos + 4, 0x7fffffff);
    return { cluster, header: decodeQcow2Header(cluster, 'f') };
  }
  test('reads the backing format and skips unknown extensions', () => {
    const { cluster, header } = withExtensions([[0x11111111, new Uint8Array(5)], [0xe2792aca, new TextEncoder().encode('raw')]]);
    const ext = decodeQcow2Extensions(cluster, header, 'f');
    expect(ext.backingFormat).toBe('raw');
    expect(ext.unknown).toEqual([0x11111111]);
  });
  test('an extension longer than the header area', async () => {
    const { cluster, header } = withExtensions([], false);
    await expectImgError(() => decodeQcow2Extensions(cluster, header, 'f'), 'CORRUPT_IMAGE', { offset: BASE.header_length + 4 });
  });
  test('a first cluster cut short by the end of the file: TRUNCATED where a whole cluster would hold it', async () => {
    const { cluster, header } = withExtensions([[0xe2792aca, new TextEncoder().encode('qcow2')]]);
    // Inside the header itself (header_length 112).
    await expectImgError(() => decodeQcow2Extensions(cluster.subarray(0, 108), header, 'f'), 'TRUNCATED', { structure: 'qcow2.header', offset: 108 });
    // Inside an extension's type/length, and inside its data.
    await expectImgError(() => decodeQcow2Extensions(cluster.subarray(0, 116), header, 'f'), 'TRUNCATED', { structure: 'qcow2.header_extension.type', offset: 112 });
    await expectImgError(() => decodeQcow2Extensions(cluster.subarray(0, 122), header, 'f'), 'TRUNCATED', { structure: 'qcow2.header_extension.length', offset: 116 });
    // Before the end marker.
    await expectImgError(() => decodeQcow2Extensions(cluster.subarray(0, 128), header, 'f'), 'TRUNCATED', { structure: 'qcow2.header_extension.type', offset: 128 });
    expect(decodeQcow2Extensions(cluster.subarray(0, 136), header, 'f').backingFormat).toBe('qcow2');
  });
  test('an extension longer than a whole cluster stays CORRUPT_IMAGE even in a cut cluster', async () => {
    const { cluster, header } = withExtensions([], false);
    await expectImgError(() => decodeQcow2Extensions(cluster.subarray(0, 200), header, 'f'), 'CORRUPT_IMAGE', { offset: BASE.header_length + 4 });
  });
  test('an encryption header is refused', async () => {
    const { cluster, header } = withExtensions([[0x0537be77, new Uint8Array(16)]]);
    await expectImgError(() => decodeQcow2Extensions(cluster, header, 'f'), 'ENCRYPTED', { offset: BASE.header_length });
  });
});
