import { describe, expect, it } from 'vitest';
import { decodeSparseHeader, encodeSparseHeader, type SparseExtentHeader } from '../../../src/diskimage/vmdk/sparseHeader.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const header: SparseExtentHeader = {
  magicNumber: 0x564d444b,
  version: 3,
  flags: 0x30001,
  capacity: 16384,
  grainSize: 128,
  descriptorOffset: 1,
  descriptorSize: 20,
  numGTEsPerGT: 512,
  rgdOffset: 0,
  gdOffset: undefined,
  overHead: 128,
  uncleanShutdown: false,
  compressAlgorithm: 1,
};

describe('SparseExtentHeader', () => {
  it('round-trips decode(encode(h)) and encode(decode(bytes))', () => {
    const bytes = encodeSparseHeader(header);
    expect(Buffer.from(bytes.subarray(0, 4)).toString('latin1')).toBe('KDMV');
    expect([...bytes.subarray(73, 77)]).toEqual([0x0a, 0x20, 0x0d, 0x0a]);
    expect(decodeSparseHeader(bytes, { file: 'x' })).toEqual(header);
    expect(encodeSparseHeader(decodeSparseHeader(bytes, { file: 'x' }))).toEqual(bytes);
  });

  it.each([
    ['magicNumber', 0, (v: DataView) => v.setUint32(0, 0x12345678, true), 'CORRUPT_IMAGE'],
    ['version', 4, (v: DataView) => v.setUint32(4, 4, true), 'CORRUPT_IMAGE'],
    ['flags', 8, (v: DataView) => v.setUint32(8, 0x30001 | (1 << 5), true), 'UNSUPPORTED_FEATURE'],
    ['grainSize', 20, (v: DataView) => v.setBigUint64(20, 100n, true), 'CORRUPT_IMAGE'],
    ['numGTEsPerGT', 44, (v: DataView) => v.setUint32(44, 128, true), 'CORRUPT_IMAGE'],
    ['compressAlgorithm', 77, (v: DataView) => v.setUint16(77, 7, true), 'UNSUPPORTED_FEATURE'],
  ] as const)('refuses a bad %s at byte %d', async (field, offset, patch, code) => {
    const bytes = encodeSparseHeader(header);
    patch(new DataView(bytes.buffer));
    await expectImgError(() => decodeSparseHeader(bytes, { file: 'x', base: 0 }), code, { structure: `vmdk.header.${field}`, offset });
  });

  it('reports a truncated header as TRUNCATED', async () => {
    await expectImgError(() => decodeSparseHeader(encodeSparseHeader(header).subarray(0, 40), { file: 'x' }), 'TRUNCATED');
  });
});
