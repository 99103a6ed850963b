import { describe, expect, it } from 'vitest';
import { encodeDescriptor, parseDescriptor, type VmdkDescriptorInput } from '../../../src/diskimage/vmdk/descriptor.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('VMDK descriptor', () => {
  const input: VmdkDescriptorInput = {
    CID: 0x0badcafe,
    parentCID: 0x12345678,
    createType: 'twoGbMaxExtentSparse',
    parentFileNameHint: '../base.vmdk',
    extents: [
      { access: 'RW', size: 4192256, type: 'SPARSE', fileName: 'd-s001.vmdk' },
      { access: 'RDONLY', size: 2048, type: 'FLAT', fileName: 'd-f.vmdk', offset: 128 },
      { access: 'NOACCESS', size: 8, type: 'ZERO' },
    ],
    ddb: { 'ddb.adapterType': 'lsilogic', 'ddb.virtualHWVersion': '6' },
  };

  it('round-trips encode -> parse, keeping line offsets', () => {
    const text = encodeDescriptor(input);
    const d = parseDescriptor(enc(text), { file: 'd.vmdk', base: 512 });
    expect(d).toMatchObject({ CID: 0x0badcafe, parentCID: 0x12345678, createType: 'twoGbMaxExtentSparse', parentFileNameHint: '../base.vmdk', ddb: input.ddb });
    expect(d.extents.map((e) => [e.access, e.size, e.type, e.fileName, e.offset])).toEqual([
      ['RW', 4192256, 'SPARSE', 'd-s001.vmdk', 0],
      ['RDONLY', 2048, 'FLAT', 'd-f.vmdk', 128],
      ['NOACCESS', 8, 'ZERO', undefined, 0],
    ]);
    expect(d.extents[1]!.lineOffset).toBe(512 + text.indexOf('RDONLY'));
    expect(d.parentCIDOffset).toBe(512 + text.indexOf('parentCID'));
    expect(encodeDescriptor({ ...input, extents: d.extents.map((e) => ({ access: e.access, size: e.size, type: e.type, ...(e.fileName ? { fileName: e.fileName } : {}), offset: e.offset })) })).toBe(text);
  });

  it('stops at the first NUL and accepts CRLF line ends', () => {
    const text = encodeDescriptor(input).replace(/\n/g, '\r\n');
    const bytes = new Uint8Array(4096);
    bytes.set(enc(text));
    expect(parseDescriptor(bytes, { file: 'x', base: 0 }).extents).toHaveLength(3);
  });

  it('accepts CIDs without zero padding, as qemu-img writes them (CID=508dc1a)', () => {
    const text = encodeDescriptor(input).replace('CID=0badcafe', 'CID=508dc1a').replace('parentCID=12345678', 'parentCID=1f');
    expect(text).toContain('\nCID=508dc1a\nparentCID=1f\n');
    const d = parseDescriptor(enc(text), { file: 'x', base: 0 });
    expect([d.CID, d.parentCID, d.parentCIDOffset]).toEqual([0x508dc1a, 0x1f, text.indexOf('parentCID')]);
  });

  it('refuses an unknown extent type by name', async () => {
    const text = encodeDescriptor(input).replace('RW 4192256 SPARSE', 'RW 4192256 VMFSSPARSE');
    await expectImgError(() => parseDescriptor(enc(text), { file: 'x', base: 0 }), 'UNSUPPORTED_FORMAT', { structure: 'vmdk.descriptor.extent[0]', offset: text.indexOf('RW 4192256') });
  });

  it('refuses a descriptor without createType or extents', async () => {
    await expectImgError(() => parseDescriptor(enc('# Disk DescriptorFile\nversion=1\nRW 8 ZERO\n'), { file: 'x', base: 0 }), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor.createType' });
    await expectImgError(() => parseDescriptor(enc('# Disk DescriptorFile\ncreateType="monolithicFlat"\n'), { file: 'x', base: 0 }), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor.extent' });
    await expectImgError(() => parseDescriptor(enc('# Disk DescriptorFile\ncreateType="vmfs"\nRW 8 FLAT\n'), { file: 'x', base: 0 }), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor.extent[0]', offset: 40 });
  });
});
