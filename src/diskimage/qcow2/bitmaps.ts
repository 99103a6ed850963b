/**
 * The qcow2 bitmap directory (qcow2.rst, "Bitmaps" / "Bitmap directory"): entries
 * of a 24-byte fixed part, extra data and a name, each padded to 8 bytes.
 * Only the structure is decoded here; the bitmap contents are not interpreted.
 */
import { ByteReader } from '../ByteReader.js';
import { CorruptImageError } from '../../errors.js';
import type { ImageFile } from '../ImageFile.js';
import type { Qcow2BitmapsExtension } from './header.js';
import {
  QCOW2_BITMAP_DIR_ENTRY_FIXED_LENGTH,
  QCOW2_MAX_BITMAPS,
  QCOW2_MAX_BITMAP_DIRECTORY_SIZE,
  QCOW2_MAX_BITMAP_NAME_SIZE,
} from './constants.js';

/** One bitmap directory entry, with the spec's field names. */
export interface Qcow2BitmapDirEntry {
  readonly bitmap_table_offset: number;
  /** Number of 8-byte entries in the bitmap table. */
  readonly bitmap_table_size: number;
  readonly flags: number;
  readonly type: number;
  readonly granularity_bits: number;
  readonly name_size: number;
  readonly extra_data_size: number;
  readonly name: string;
  /** Absolute byte offset of the entry. */
  readonly entryOffset: number;
}

/**
 * Decodes `nb_bitmaps` entries from the directory bytes (`base` = its file offset).
 * Throws TRUNCATED (an entry runs past the directory) and CORRUPT_IMAGE (name too long).
 */
export function decodeQcow2BitmapDirectory(bytes: Uint8Array, ctx: { file: string; base: number; nb_bitmaps: number }): Qcow2BitmapDirEntry[] {
  const out: Qcow2BitmapDirEntry[] = [];
  let pos = 0;
  for (let i = 0; i < ctx.nb_bitmaps; i++) {
    const r = new ByteReader(bytes.subarray(Math.min(pos, bytes.length)), { file: ctx.file, structure: `qcow2.bitmap_directory[${i}]`, base: ctx.base + pos });
    const name_size = r.u16be(18, 'name_size');
    const extra_data_size = r.u32be(20, 'extra_data_size');
    if (name_size > QCOW2_MAX_BITMAP_NAME_SIZE) r.fail(18, 'name_size', 'bitmap name longer than 1023 bytes', { actual: name_size });
    if (extra_data_size > bytes.length) r.fail(20, 'extra_data_size', 'extra data larger than the bitmap directory', { actual: extra_data_size });
    const nameStart = QCOW2_BITMAP_DIR_ENTRY_FIXED_LENGTH + extra_data_size;
    const name = new TextDecoder('utf-8', { fatal: false }).decode(r.slice(nameStart, name_size, 'name'));
    out.push({
      bitmap_table_offset: r.u64be(0, 'bitmap_table_offset'),
      bitmap_table_size: r.u32be(8, 'bitmap_table_size'),
      flags: r.u32be(12, 'flags'),
      type: r.u8(16, 'type'),
      granularity_bits: r.u8(17, 'granularity_bits'),
      name_size,
      extra_data_size,
      name,
      entryOffset: ctx.base + pos,
    });
    pos += Math.ceil((nameStart + name_size) / 8) * 8;
  }
  return out;
}

/**
 * Reads and decodes the bitmap directory named by the bitmaps header extension.
 * Throws CORRUPT_IMAGE (limits), TRUNCATED (outside the file), IO.
 */
export async function readQcow2BitmapDirectory(file: ImageFile, ext: Qcow2BitmapsExtension): Promise<Qcow2BitmapDirEntry[]> {
  const at = { file: file.path, structure: 'qcow2.header_extension[bitmaps]' };
  if (ext.nb_bitmaps > QCOW2_MAX_BITMAPS) {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: `more than ${QCOW2_MAX_BITMAPS} bitmaps`, actual: ext.nb_bitmaps });
  }
  if (ext.bitmap_directory_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...at, detail: 'bitmap directory larger than 64 MiB', actual: ext.bitmap_directory_size });
  }
  const bytes = await file.readExact(ext.bitmap_directory_offset, ext.bitmap_directory_size, 'qcow2.bitmap_directory');
  return decodeQcow2BitmapDirectory(bytes, { file: file.path, base: ext.bitmap_directory_offset, nb_bitmaps: ext.nb_bitmaps });
}
