/**
 * Disk image formats we recognise but do not read. Probing them as raw would hand the
 * caller the container's bytes as if they were the guest disk, a wrong answer without
 * an error; so the probe names them and refuses (UNSUPPORTED_FORMAT).
 *
 * Every match is a full magic string at its exact offset, from each format's
 * specification, so an ordinary raw disk (MBR, GPT, a bare file system) never matches.
 */
import { UnsupportedError } from '../errors.js';

/** A recognised foreign format and where its magic sits in the file. */
export interface ForeignFormat {
  /** Display name, e.g. "VHDX". */
  readonly name: string;
  /** The field whose magic matched, e.g. `vhdx.file_identifier.signature`. */
  readonly structure: string;
  /** Byte offset of that field in the file. */
  readonly offset: number;
}

/** How many bytes of the head and of the tail of a file detectForeignFormat looks at. */
export const FOREIGN_PROBE_BYTES = 512;

const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** Magic strings at fixed offsets from the start of the file. */
const HEAD_MAGICS: readonly { name: string; structure: string; offset: number; magic: Uint8Array }[] = [
  // Virtual Hard Disk Image Format Specification: dynamic disks start with a copy of the footer, cookie "conectix".
  { name: 'VHD', structure: 'vhd.footer.cookie', offset: 0, magic: latin1('conectix') },
  // [MS-VHDX] 2.2.1 File Type Identifier: signature "vhdxfile" at 0.
  { name: 'VHDX', structure: 'vhdx.file_identifier.signature', offset: 0, magic: latin1('vhdxfile') },
  // QED specification: magic "QED\0" at 0.
  { name: 'QED', structure: 'qed.header.magic', offset: 0, magic: latin1('QED\0') },
  // Parallels disk format (qemu docs/interop/parallels.txt): 16-byte magic, two generations.
  { name: 'Parallels', structure: 'parallels.header.magic', offset: 0, magic: latin1('WithoutFreeSpace') },
  { name: 'Parallels', structure: 'parallels.header.magic', offset: 0, magic: latin1('WithouFreSpacExt') },
  // Bochs redolog: 32-byte NUL-terminated magic "Bochs Virtual HD Image".
  { name: 'Bochs', structure: 'bochs.header.magic', offset: 0, magic: latin1('Bochs Virtual HD Image\0') },
];

/** VirtualBox VDI: a "<<< ... >>>" text line, then signature 0xbeda107f (little-endian) at 0x40. */
const VDI_TEXT = latin1('<<< ');
const VDI_SIGNATURE_OFFSET = 0x40;
const VDI_SIGNATURE = 0xbeda107f;
/** LUKS on-disk format (LUKS1 and LUKS2): magic "LUKS\xba\xbe", then a 16-bit big-endian version. */
const LUKS_MAGIC = latin1('LUKS\xba\xbe');
/** cloop: a shell-script preamble "#!/bin/sh\n#V<major>.<minor> Format\n". */
const CLOOP_PREAMBLE = /^#!\/bin\/sh\n#V\d\.\d Format\n/;
/** Apple UDIF (dmg): the 512-byte "koly" trailer ends the file; its headerSize field (byte 8, big-endian) is 512. */
const DMG_KOLY = latin1('koly');
const DMG_KOLY_SIZE = 512;
/** qcow (version 1) shares qcow2's magic "QFI\xfb"; the version (byte 4, big-endian) tells them apart. */
const QCOW_MAGIC = latin1('QFI\xfb');

function matchesAt(buf: Uint8Array, offset: number, magic: Uint8Array): boolean {
  if (offset < 0 || offset + magic.length > buf.length) return false;
  for (let i = 0; i < magic.length; i++) if (buf[offset + i] !== magic[i]) return false;
  return true;
}

function u32At(buf: Uint8Array, offset: number, littleEndian: boolean): number | undefined {
  if (offset + 4 > buf.length) return undefined;
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(offset, littleEndian);
}

/**
 * Recognises a foreign format from the first bytes of a file (`head`, up to 512, only
 * bytes the file has) and its last 512 bytes (`tail`, empty if the file is shorter).
 * `fileSize` places the tail's offsets. Returns undefined for anything else.
 */
export function detectForeignFormat(head: Uint8Array, tail: Uint8Array, fileSize: number): ForeignFormat | undefined {
  for (const m of HEAD_MAGICS) {
    if (matchesAt(head, m.offset, m.magic)) return { name: m.name, structure: m.structure, offset: m.offset };
  }
  if (matchesAt(head, 0, VDI_TEXT) && u32At(head, VDI_SIGNATURE_OFFSET, true) === VDI_SIGNATURE) {
    return { name: 'VDI', structure: 'vdi.header.signature', offset: VDI_SIGNATURE_OFFSET };
  }
  if (matchesAt(head, 0, LUKS_MAGIC)) {
    const version = head.length >= 8 ? (head[6]! << 8) | head[7]! : undefined;
    return { name: version === 1 || version === 2 ? `LUKS${version}` : 'LUKS', structure: 'luks.header.magic', offset: 0 };
  }
  if (CLOOP_PREAMBLE.test(new TextDecoder('latin1').decode(head.subarray(0, 32)))) {
    return { name: 'cloop', structure: 'cloop.header.preamble', offset: 0 };
  }
  if (matchesAt(head, 0, QCOW_MAGIC) && u32At(head, 4, false) === 1) {
    return { name: 'QCOW (version 1)', structure: 'qcow.header.version', offset: 4 };
  }
  if (tail.length === FOREIGN_PROBE_BYTES) {
    const tailOffset = fileSize - FOREIGN_PROBE_BYTES;
    // A fixed VHD is raw data followed by the 512-byte footer alone.
    if (matchesAt(tail, 0, HEAD_MAGICS[0]!.magic)) return { name: 'VHD', structure: 'vhd.footer.cookie', offset: tailOffset };
    if (matchesAt(tail, 0, DMG_KOLY) && u32At(tail, 8, false) === DMG_KOLY_SIZE) {
      return { name: 'DMG', structure: 'dmg.koly.signature', offset: tailOffset };
    }
  }
  return undefined;
}

/** qemu's driver names for the formats above, as a backing format may record them. */
const QEMU_DRIVER_NAMES: Readonly<Record<string, string>> = {
  vpc: 'VHD',
  vhdx: 'VHDX',
  vdi: 'VDI',
  qed: 'QED',
  parallels: 'Parallels',
  bochs: 'Bochs',
  cloop: 'cloop',
  dmg: 'DMG',
  luks: 'LUKS',
  qcow: 'QCOW (version 1)',
};

/** The foreign format a format name (qemu's driver name) stands for, if it is one. */
export function foreignFormatByName(format: string): string | undefined {
  return Object.hasOwn(QEMU_DRIVER_NAMES, format) ? QEMU_DRIVER_NAMES[format] : undefined;
}

const SUPPORTED = '(supported: qcow2, VMDK, raw)';
const CONVERT = 'convert with qemu-img convert -O qcow2';

/** UNSUPPORTED_FORMAT for a file recognised as `found`. */
export function foreignFormatError(file: string, found: ForeignFormat): UnsupportedError {
  return new UnsupportedError('UNSUPPORTED_FORMAT', {
    file,
    structure: found.structure,
    offset: found.offset,
    format: found.name,
    detail: `${found.name} images are not supported ${SUPPORTED}; ${CONVERT}, or pass -f raw to read the bytes as raw`,
  });
}

/** UNSUPPORTED_FORMAT for a file to be opened as `format`, qemu's name for foreign format `name` (e.g. a recorded backing format). */
export function foreignFormatNameError(file: string, format: string, name: string): UnsupportedError {
  return new UnsupportedError('UNSUPPORTED_FORMAT', {
    file,
    format: name,
    detail: `format "${format}" (${name}) is not supported ${SUPPORTED}; ${CONVERT}`,
  });
}
