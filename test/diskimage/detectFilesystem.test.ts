/**
 * detectFilesystem on magic numbers written in code, for the filesystems whose
 * mkfs is not installed here (XFS, btrfs, LVM2, NTFS, exFAT, ISO 9660); each
 * is placed where its format documentation puts it.
 */
import { describe, expect, it } from 'vitest';
import { detectFilesystem, detectFilesystemInBytes } from '../../src/diskimage/detectFilesystem.js';
import { MemoryDevice } from './partition/MemoryDevice.js';

function withText(size: number, at: number, text: string): Uint8Array {
  const b = new Uint8Array(size);
  b.set(new TextEncoder().encode(text), at);
  return b;
}
function withBootSignature(b: Uint8Array): Uint8Array {
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

describe('detectFilesystem by magic', () => {
  it.each([
    ['xfs', withText(0x11000, 0, 'XFSB')],
    ['btrfs', withText(0x11000, 0x10040, '_BHRfS_M')],
    ['LVM2_member', (() => { const b = withText(0x11000, 512, 'LABELONE'); b.set(new TextEncoder().encode('LVM2 001'), 512 + 24); return b; })()],
    ['swap', withText(0x11000, 8192 - 10, 'SWAPSPACE2')],
    ['swap', withText(0x11000, 65536 - 10, 'SWAP-SPACE')],
    ['ntfs', withBootSignature(withText(0x11000, 3, 'NTFS    '))],
    ['exfat', withBootSignature(withText(0x11000, 3, 'EXFAT   '))],
    ['iso9660', withText(0x11000, 0x8001, 'CD001')],
  ])('%s', async (name, bytes) => {
    expect(await detectFilesystem(new MemoryDevice(bytes))).toBe(name);
  });

  it('needs the LVM2 type after LABELONE, and the boot signature for NTFS', () => {
    expect(detectFilesystemInBytes(withText(0x11000, 512, 'LABELONE'))).toBeUndefined();
    expect(detectFilesystemInBytes(withText(0x11000, 3, 'NTFS    '))).toBeUndefined();
  });

  it('an ext superblock with JOURNAL_DEV is an external journal, not a filesystem', () => {
    const b = new Uint8Array(4096);
    b[1024 + 0x38] = 0x53;
    b[1024 + 0x39] = 0xef;
    b[1024 + 0x60] = 0x08;
    expect(detectFilesystemInBytes(b)).toBe('jbd');
  });

  it('a device smaller than a sector has no filesystem', async () => {
    expect(await detectFilesystem(new MemoryDevice(new Uint8Array(100)))).toBeUndefined();
  });
});
