/**
 * The legacy MBR and the extended boot records (EBRs) of logical partitions
 * (UEFI 2.10 section 5.2.1, tables 5-1 and 5-2): pure decode/encode. Walking the
 * EBR chain and validating partitions against the disk live in readMbr.ts.
 */
import { ByteReader } from '../ByteReader.js';
import {
  MBR_DISK_SIGNATURE_OFFSET,
  MBR_PARTITION_ENTRIES,
  MBR_PARTITION_ENTRY_SIZE,
  MBR_PARTITION_TABLE_OFFSET,
  MBR_SECTOR_SIZE,
  MBR_SIGNATURE,
  MBR_SIGNATURE_OFFSET,
} from './constants.js';

/** One 16-byte partition record (UEFI table 5-2), spec field names in snake_case. */
export interface MbrPartitionRecord {
  readonly boot_indicator: number;
  /** Raw 3-byte CHS fields; LBA fields are authoritative, CHS is kept for round trips. */
  readonly starting_chs: readonly [number, number, number];
  readonly os_type: number;
  readonly ending_chs: readonly [number, number, number];
  readonly starting_lba: number;
  readonly size_in_lba: number;
}

export interface Mbr {
  /** UniqueMBRDiskSignature (offset 440). */
  readonly unique_mbr_disk_signature: number;
  readonly partition_record: readonly MbrPartitionRecord[];
  /** The 0xAA55 signature at offset 510. */
  readonly signature: number;
}

/** True if the 512-byte sector ends with the 0x55 0xAA boot signature. */
export function hasMbrSignature(sector: Uint8Array): boolean {
  return sector.length >= MBR_SECTOR_SIZE && sector[MBR_SIGNATURE_OFFSET] === 0x55 && sector[MBR_SIGNATURE_OFFSET + 1] === 0xaa;
}

/**
 * Decodes an MBR or EBR sector; does not judge it (see readMbr.ts).
 * `base` is the sector's byte offset on the device. Throws TRUNCATED for a short sector.
 */
export function decodeMbr(sector: Uint8Array, ctx: { file: string; structure: string; base: number }): Mbr {
  const r = new ByteReader(sector, ctx);
  const partition_record: MbrPartitionRecord[] = [];
  for (let i = 0; i < MBR_PARTITION_ENTRIES; i++) {
    const o = MBR_PARTITION_TABLE_OFFSET + i * MBR_PARTITION_ENTRY_SIZE;
    const f = `partition_record[${i}]`;
    partition_record.push({
      boot_indicator: r.u8(o, `${f}.boot_indicator`),
      starting_chs: [r.u8(o + 1), r.u8(o + 2), r.u8(o + 3)],
      os_type: r.u8(o + 4, `${f}.os_type`),
      ending_chs: [r.u8(o + 5), r.u8(o + 6), r.u8(o + 7)],
      starting_lba: r.u32le(o + 8, `${f}.starting_lba`),
      size_in_lba: r.u32le(o + 12, `${f}.size_in_lba`),
    });
  }
  return {
    unique_mbr_disk_signature: r.u32le(MBR_DISK_SIGNATURE_OFFSET, 'unique_mbr_disk_signature'),
    partition_record,
    signature: r.u16le(MBR_SIGNATURE_OFFSET, 'signature'),
  };
}

/** Byte offset, within the sector, of field `field` of partition record `i`. */
export function mbrRecordFieldOffset(i: number, field: 'boot_indicator' | 'os_type' | 'starting_lba' | 'size_in_lba'): number {
  const rel = { boot_indicator: 0, os_type: 4, starting_lba: 8, size_in_lba: 12 }[field];
  return MBR_PARTITION_TABLE_OFFSET + i * MBR_PARTITION_ENTRY_SIZE + rel;
}

/**
 * Encodes the table part of an MBR/EBR over `into` (boot code is kept), or over a
 * zeroed sector. Missing records are written empty.
 */
export function encodeMbr(
  m: { readonly unique_mbr_disk_signature?: number; readonly partition_record: readonly Partial<MbrPartitionRecord>[] },
  into: Uint8Array = new Uint8Array(MBR_SECTOR_SIZE),
): Uint8Array {
  const out = into.slice(0, MBR_SECTOR_SIZE);
  const v = new DataView(out.buffer);
  if (m.unique_mbr_disk_signature !== undefined) v.setUint32(MBR_DISK_SIGNATURE_OFFSET, m.unique_mbr_disk_signature, true);
  for (let i = 0; i < MBR_PARTITION_ENTRIES; i++) {
    const p = m.partition_record[i] ?? {};
    const o = MBR_PARTITION_TABLE_OFFSET + i * MBR_PARTITION_ENTRY_SIZE;
    out[o] = p.boot_indicator ?? 0;
    out.set(p.starting_chs ?? [0, 0, 0], o + 1);
    out[o + 4] = p.os_type ?? 0;
    out.set(p.ending_chs ?? [0, 0, 0], o + 5);
    v.setUint32(o + 8, p.starting_lba ?? 0, true);
    v.setUint32(o + 12, p.size_in_lba ?? 0, true);
  }
  v.setUint16(MBR_SIGNATURE_OFFSET, MBR_SIGNATURE, true);
  return out;
}
