/**
 * Format detection and the one place that knows every format's opener.
 */
import type { DiskImage, ImageFormat } from './DiskImage.js';
import { ImageFile } from './ImageFile.js';
import { RawImage } from './raw/RawImage.js';
import { Qcow2Image } from './qcow2/Qcow2Image.js';
import { VmdkImage } from './vmdk/VmdkImage.js';
import { UnsupportedError } from '../errors.js';
import { detectForeignFormat, foreignFormatByName, foreignFormatError, foreignFormatNameError, FOREIGN_PROBE_BYTES } from './foreignFormats.js';

const QCOW_MAGIC = [0x51, 0x46, 0x49, 0xfb]; // "QFI\xfb"
const VMDK_SPARSE_MAGIC = [0x4b, 0x44, 0x4d, 0x56]; // "KDMV"
const VMDK_COWD_MAGIC = [0x43, 0x4f, 0x57, 0x44]; // "COWD" (ESX 2.x sparse)
const VMDK_DESCRIPTOR = '# Disk DescriptorFile';

function startsWith(buf: Uint8Array, magic: readonly number[]): boolean {
  return magic.every((b, i) => buf[i] === b);
}

/** Guesses the format from the first bytes: qcow2 and VMDK by magic, else raw (probeFormat also refuses foreign formats). */
export function detectFormat(head: Uint8Array): ImageFormat {
  if (startsWith(head, QCOW_MAGIC)) return 'qcow2';
  if (startsWith(head, VMDK_SPARSE_MAGIC) || startsWith(head, VMDK_COWD_MAGIC)) return 'vmdk';
  const text = new TextDecoder('latin1').decode(head.subarray(0, 64));
  if (text.trimStart().startsWith(VMDK_DESCRIPTOR)) return 'vmdk';
  return 'raw';
}

/**
 * Reads the head (and tail) of `path` and detects its format. Formats we recognise but
 * do not read (VHD, VHDX, VDI, QED, ...) are refused rather than probed as raw.
 * Throws UNSUPPORTED_FORMAT, IO.
 */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const f = await ImageFile.open(path);
  try {
    const head = (await f.readUpTo(0, FOREIGN_PROBE_BYTES)).subarray(0, Math.min(FOREIGN_PROBE_BYTES, f.size));
    const format = detectFormat(head);
    // Trailers (fixed VHD, dmg) count only where the head names no format of ours.
    const tail = format === 'raw' && f.size >= FOREIGN_PROBE_BYTES ? await f.readExact(f.size - FOREIGN_PROBE_BYTES, FOREIGN_PROBE_BYTES, 'tail') : new Uint8Array(0);
    const foreign = detectForeignFormat(head, tail, f.size);
    if (foreign !== undefined) throw foreignFormatError(path, foreign);
    return format;
  } finally {
    await f.close();
  }
}

export interface OpenImageOptions {
  /** Open as this format instead of probing (e.g. a recorded backing format). */
  readonly format?: string;
}

/**
 * Opens one image (one layer; backing files are not opened: see openChain).
 * Throws UNSUPPORTED_FORMAT for a format we recognise but do not read (by probe or by name),
 * UNKNOWN_FORMAT for a format name we do not know, and whatever the format's opener throws.
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<DiskImage> {
  const format = options.format ?? (await probeFormat(path));
  switch (format) {
    case 'raw':
      return RawImage.open(path);
    case 'qcow2':
      return Qcow2Image.open(path);
    case 'vmdk':
      return VmdkImage.open(path);
    default:
      throw unknownFormatError(path, format);
  }
}

/** UNSUPPORTED_FORMAT for a format name we know but do not read (qemu's vpc, vhdx, ...), else UNKNOWN_FORMAT. */
export function unknownFormatError(path: string, format: string): UnsupportedError {
  const foreign = foreignFormatByName(format);
  if (foreign !== undefined) return foreignFormatNameError(path, format, foreign);
  return new UnsupportedError('UNKNOWN_FORMAT', { file: path, detail: `unknown image format "${format}" (raw, qcow2 and vmdk are supported)` });
}
