/**
 * detectForeignFormat: each foreign format is recognised by its full magic at its exact
 * offset, from hand-built heads and tails; near misses and ordinary disk heads are not.
 */
import { describe, expect, test } from 'vitest';
import { detectForeignFormat, foreignFormatByName, FOREIGN_PROBE_BYTES } from '../../src/diskimage/foreignFormats.js';
import { mulberry32 } from '../../fixtures/prng.mjs';

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** A 512-byte head with `parts` written at their offsets. */
function block(...parts: [number, Uint8Array][]): Uint8Array {
  const b = new Uint8Array(FOREIGN_PROBE_BYTES);
  for (const [at, bytes] of parts) b.set(bytes, at);
  return b;
}
const u32le = (v: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); return b; };
const u32be = (v: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, false); return b; };
const u16be = (v: number) => { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v, false); return b; };

const SIZE = 1 << 20;
const EMPTY = new Uint8Array(0);
const ZERO_TAIL = new Uint8Array(FOREIGN_PROBE_BYTES);

describe('detectForeignFormat recognises', () => {
  test.each([
    ['VHD (dynamic: footer copy at 0)', block([0, latin1('conectix')]), 'VHD', 'vhd.footer.cookie', 0],
    ['VHDX', block([0, latin1('vhdxfile')]), 'VHDX', 'vhdx.file_identifier.signature', 0],
    ['VDI', block([0, latin1('<<< Oracle VM VirtualBox Disk Image >>>\n')], [0x40, u32le(0xbeda107f)]), 'VDI', 'vdi.header.signature', 0x40],
    ['QED', block([0, latin1('QED\0')], [4, u32le(65536)]), 'QED', 'qed.header.magic', 0],
    ['Parallels (old)', block([0, latin1('WithoutFreeSpace')]), 'Parallels', 'parallels.header.magic', 0],
    ['Parallels (ext)', block([0, latin1('WithouFreSpacExt')]), 'Parallels', 'parallels.header.magic', 0],
    ['Bochs', block([0, latin1('Bochs Virtual HD Image\0')], [32, latin1('Redolog\0')]), 'Bochs', 'bochs.header.magic', 0],
    ['cloop', block([0, latin1('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')]), 'cloop', 'cloop.header.preamble', 0],
    ['LUKS1', block([0, latin1('LUKS\xba\xbe')], [6, u16be(1)]), 'LUKS1', 'luks.header.magic', 0],
    ['LUKS2', block([0, latin1('LUKS\xba\xbe')], [6, u16be(2)]), 'LUKS2', 'luks.header.magic', 0],
    ['qcow version 1', block([0, latin1('QFI\xfb')], [4, u32be(1)]), 'QCOW (version 1)', 'qcow.header.version', 4],
  ])('%s', (_label, head, name, structure, offset) => {
    expect(detectForeignFormat(head, ZERO_TAIL, SIZE)).toEqual({ name, structure, offset });
  });

  test('a fixed VHD by its footer in the last 512 bytes', () => {
    const tail = block([0, latin1('conectix')], [12, u32be(0x00010000)]);
    expect(detectForeignFormat(new Uint8Array(512), tail, SIZE)).toEqual({ name: 'VHD', structure: 'vhd.footer.cookie', offset: SIZE - 512 });
  });

  test('a dmg by its koly trailer (headerSize 512) in the last 512 bytes', () => {
    const tail = block([0, latin1('koly')], [4, u32be(4)], [8, u32be(512)]);
    expect(detectForeignFormat(new Uint8Array(512), tail, SIZE)).toEqual({ name: 'DMG', structure: 'dmg.koly.signature', offset: SIZE - 512 });
  });
});

describe('detectForeignFormat does not refuse ordinary disks or near misses', () => {
  const rnd = mulberry32(0x5eed);
  const random = Uint8Array.from({ length: 512 }, () => Math.floor(rnd() * 256));
  test.each([
    ['all zeros', block()],
    ['seeded random bytes', random],
    ['an MBR (boot signature 55 aa)', block([0, Uint8Array.of(0xeb, 0x63, 0x90)], [446, Uint8Array.of(0x80, 0, 2, 0, 0x83)], [510, Uint8Array.of(0x55, 0xaa)])],
    ['"conectix" one byte late', block([1, latin1('conectix')])],
    ['"vhdxfil" (7 of 8 bytes)', block([0, latin1('vhdxfil')])],
    ['"QED" without its NUL', block([0, latin1('QEDX')])],
    ['VDI signature without the "<<< " text', block([0x40, u32le(0xbeda107f)])],
    ['VDI text without the signature', block([0, latin1('<<< Oracle VM VirtualBox Disk Image >>>\n')])],
    ['VDI signature one byte off', block([0, latin1('<<< ')], [0x41, u32le(0xbeda107f)])],
    ['"WithoutFreeSpac" (15 of 16 bytes)', block([0, latin1('WithoutFreeSpac!')])],
    ['"Bochs Virtual HD Image" continued (no NUL)', block([0, latin1('Bochs Virtual HD Images')])],
    ['"LUKS\\xba" (5 of 6 bytes)', block([0, latin1('LUKS\xba\x00')])],
    ['a shell script that is not cloop', block([0, latin1('#!/bin/sh\necho hello\n')])],
    ['qcow2 (version 3) is ours, not foreign', block([0, latin1('QFI\xfb')], [4, u32be(3)])],
  ])('%s', (_label, head) => {
    expect(detectForeignFormat(head, ZERO_TAIL, SIZE)).toBeUndefined();
  });

  test.each([
    ['"conectix" 513 bytes from the end', (() => { const t = new Uint8Array(512); t.set(latin1('onectix'), 0); return t; })()],
    ['"koly" with another header size', block([0, latin1('koly')], [8, u32be(4096)])],
    ['"koly" one byte into the last sector', block([1, latin1('koly')], [9, u32be(512)])],
  ])('tail: %s', (_label, tail) => {
    expect(detectForeignFormat(new Uint8Array(512), tail, SIZE)).toBeUndefined();
  });

  test('a file shorter than its magic is not matched (no zero padding)', () => {
    expect(detectForeignFormat(latin1('QED'), EMPTY, 3)).toBeUndefined();
    expect(detectForeignFormat(latin1('LUKS\xba\xbe'), EMPTY, 6)).toEqual({ name: 'LUKS', structure: 'luks.header.magic', offset: 0 });
  });
});

describe('foreignFormatByName', () => {
  test('maps qemu driver names (as recorded backing formats) to the formats', () => {
    expect(['vpc', 'vhdx', 'vdi', 'qed', 'parallels', 'bochs', 'cloop', 'dmg', 'luks', 'qcow'].map(foreignFormatByName)).toEqual(
      ['VHD', 'VHDX', 'VDI', 'QED', 'Parallels', 'Bochs', 'cloop', 'DMG', 'LUKS', 'QCOW (version 1)'],
    );
    expect(foreignFormatByName('raw')).toBeUndefined();
    expect(foreignFormatByName('toString')).toBeUndefined();
  });
});
