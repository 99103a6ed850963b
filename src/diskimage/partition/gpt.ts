/**
 * GPT header and partition entries (UEFI 2.10, sections 5.3.2 and 5.3.3): pure
 * decode/encode with the spec's validity checks. I/O and the choice between the
 * primary and the backup copy live in readGpt.ts.
 *
 * Field names are the spec's (HeaderCRC32 -> header_crc32, MyLBA -> my_lba, ...),
 * spelled in snake_case so error structures read `gpt.header.header_crc32`.
 * Offsets in errors are byte offsets within the guest device (the file itself for
 * a raw image).
 */
import { crc32 } from '../crc32.js';
import { ByteReader } from '../ByteReader.js';
import { CorruptImageError } from '../../errors.js';
import {
  GPT_ENTRY,
  GPT_ENTRY_MIN_SIZE,
  GPT_ENTRY_NAME_BYTES,
  GPT_HEADER,
  GPT_HEADER_MIN_SIZE,
  GPT_MAX_ENTRY_ARRAY_BYTES,
  GPT_REVISION_1_0,
  GPT_SIGNATURE,
} from './constants.js';
import { decodeGuid, encodeGuid, ZERO_GUID } from './guid.js';

export interface GptHeader {
  readonly signature: string;
  readonly revision: number;
  readonly header_size: number;
  readonly header_crc32: number;
  readonly my_lba: number;
  readonly alternate_lba: number;
  readonly first_usable_lba: number;
  readonly last_usable_lba: number;
  readonly disk_guid: string;
  readonly partition_entry_lba: number;
  readonly number_of_partition_entries: number;
  readonly size_of_partition_entry: number;
  readonly partition_entry_array_crc32: number;
}

export interface GptEntry {
  /** Slot in the entry array, from 0. Linux names the partition slot + 1. */
  readonly slot: number;
  readonly partition_type_guid: string;
  readonly unique_partition_guid: string;
  readonly starting_lba: number;
  /** Inclusive (UEFI 5.3.3). */
  readonly ending_lba: number;
  /** Attribute bits, as a hex string (a 64-bit bit set; JSON has no 64-bit integers). */
  readonly attributes: string;
  readonly partition_name: string;
}

export interface GptHeaderContext {
  readonly file: string;
  /** Structure name for errors: `gpt.header` (primary) or `gpt.backup_header`. */
  readonly structure: string;
  /** The LBA the header was read from; my_lba must equal it. */
  readonly lba: number;
  readonly sectorSize: number;
  /** Size of the device in sectors, to check that every LBA lies on it. */
  readonly deviceSectors: number;
}

const hex32 = (v: number): string => `0x${v.toString(16).padStart(8, '0')}`;

/** The CRC32 of a header of `size` bytes, computed with its HeaderCRC32 field zeroed (UEFI 5.3.2). */
export function gptHeaderCrc(sector: Uint8Array, size: number): number {
  const copy = sector.slice(0, size);
  copy.fill(0, GPT_HEADER.HeaderCRC32, GPT_HEADER.HeaderCRC32 + 4);
  return crc32(copy) >>> 0;
}

/** Bytes the entry array takes: NumberOfPartitionEntries × SizeOfPartitionEntry. */
export function gptEntryArrayBytes(h: Pick<GptHeader, 'number_of_partition_entries' | 'size_of_partition_entry'>): number {
  return h.number_of_partition_entries * h.size_of_partition_entry;
}

/**
 * Decodes and validates one GPT header sector (`sector` holds the whole logical block).
 * Throws CORRUPT_IMAGE (signature, revision, header_size, my_lba, entry size or
 * count, LBA ranges) and BAD_CHECKSUM (header_crc32), each naming the field and
 * its byte offset on the device.
 */
export function decodeGptHeader(sector: Uint8Array, ctx: GptHeaderContext): GptHeader {
  const base = ctx.lba * ctx.sectorSize;
  const r = new ByteReader(sector, { file: ctx.file, structure: ctx.structure, base });
  const signature = new TextDecoder('latin1').decode(r.slice(GPT_HEADER.Signature, 8, 'signature'));
  if (signature !== GPT_SIGNATURE) {
    r.fail(GPT_HEADER.Signature, 'signature', 'no GPT signature', { expected: GPT_SIGNATURE, actual: JSON.stringify(signature) });
  }
  const header_size = r.u32le(GPT_HEADER.HeaderSize, 'header_size');
  // UEFI 5.3.2: HeaderSize "must be greater than or equal to 92 and must be less than or equal to the logical block size".
  if (header_size < GPT_HEADER_MIN_SIZE || header_size > ctx.sectorSize) {
    r.fail(GPT_HEADER.HeaderSize, 'header_size', `header size must be ${GPT_HEADER_MIN_SIZE}..${ctx.sectorSize}`, { actual: header_size });
  }
  const header_crc32 = r.u32le(GPT_HEADER.HeaderCRC32, 'header_crc32');
  const computed = gptHeaderCrc(sector, header_size);
  if (computed !== header_crc32) {
    throw new CorruptImageError('BAD_CHECKSUM', {
      ...r.at(GPT_HEADER.HeaderCRC32, 'header_crc32'),
      detail: 'GPT header CRC32 mismatch',
      expected: hex32(header_crc32),
      actual: hex32(computed),
    });
  }
  const revision = r.u32le(GPT_HEADER.Revision, 'revision');
  // Minor revisions (1.0 is the only one defined) keep the layout; another major would not.
  if (revision >>> 16 !== GPT_REVISION_1_0 >>> 16) {
    r.fail(GPT_HEADER.Revision, 'revision', 'unknown GPT revision', { expected: hex32(GPT_REVISION_1_0), actual: hex32(revision) });
  }
  const my_lba = r.u64le(GPT_HEADER.MyLBA, 'my_lba');
  if (my_lba !== ctx.lba) {
    r.fail(GPT_HEADER.MyLBA, 'my_lba', 'header does not name the LBA it was read from', { expected: ctx.lba, actual: my_lba });
  }
  const alternate_lba = r.u64le(GPT_HEADER.AlternateLBA, 'alternate_lba');
  const first_usable_lba = r.u64le(GPT_HEADER.FirstUsableLBA, 'first_usable_lba');
  const last_usable_lba = r.u64le(GPT_HEADER.LastUsableLBA, 'last_usable_lba');
  const disk_guid = decodeGuid(r.slice(GPT_HEADER.DiskGUID, 16, 'disk_guid'));
  const partition_entry_lba = r.u64le(GPT_HEADER.PartitionEntryLBA, 'partition_entry_lba');
  const number_of_partition_entries = r.u32le(GPT_HEADER.NumberOfPartitionEntries, 'number_of_partition_entries');
  const size_of_partition_entry = r.u32le(GPT_HEADER.SizeOfPartitionEntry, 'size_of_partition_entry');
  const partition_entry_array_crc32 = r.u32le(GPT_HEADER.PartitionEntryArrayCRC32, 'partition_entry_array_crc32');

  // UEFI 5.3.2: SizeOfPartitionEntry "must be set to a value of 128 x 2^n".
  const s = size_of_partition_entry;
  if (s < GPT_ENTRY_MIN_SIZE || (s & (s - 1)) !== 0) {
    r.fail(GPT_HEADER.SizeOfPartitionEntry, 'size_of_partition_entry', `entry size must be ${GPT_ENTRY_MIN_SIZE} x 2^n`, { actual: s });
  }
  // Bound the array before anything allocates it.
  const arrayBytes = number_of_partition_entries * s;
  if (arrayBytes > GPT_MAX_ENTRY_ARRAY_BYTES) {
    r.fail(GPT_HEADER.NumberOfPartitionEntries, 'number_of_partition_entries', `entry array of ${arrayBytes} bytes exceeds the ${GPT_MAX_ENTRY_ARRAY_BYTES}-byte limit`, {
      actual: number_of_partition_entries,
    });
  }
  // The usable area must lie on the device, after LBA 1 and before the last LBA (the other header).
  if (last_usable_lba >= ctx.deviceSectors - 1 || first_usable_lba < 2 || first_usable_lba > last_usable_lba + 1) {
    r.fail(GPT_HEADER.LastUsableLBA, 'last_usable_lba', `usable LBAs ${first_usable_lba}..${last_usable_lba} do not fit the device of ${ctx.deviceSectors} sectors`, {
      actual: last_usable_lba,
    });
  }
  if (alternate_lba === my_lba || alternate_lba < 1) {
    r.fail(GPT_HEADER.AlternateLBA, 'alternate_lba', 'alternate header LBA is invalid', { actual: alternate_lba });
  }
  // The entry array lies on the device, apart from the usable area and from this header.
  const arraySectors = Math.ceil(arrayBytes / ctx.sectorSize);
  const arrayEnd = partition_entry_lba + arraySectors; // exclusive
  const hitsUsable = arraySectors > 0 && partition_entry_lba <= last_usable_lba && arrayEnd > first_usable_lba;
  const hitsHeader = my_lba >= partition_entry_lba && my_lba < arrayEnd;
  if (partition_entry_lba < 1 || arrayEnd > ctx.deviceSectors || hitsUsable || hitsHeader) {
    r.fail(GPT_HEADER.PartitionEntryLBA, 'partition_entry_lba', `entry array at LBA ${partition_entry_lba} (${arraySectors} sectors) overlaps the header, the usable area or the device end`, {
      actual: partition_entry_lba,
    });
  }
  return {
    signature,
    revision,
    header_size,
    header_crc32,
    my_lba,
    alternate_lba,
    first_usable_lba,
    last_usable_lba,
    disk_guid,
    partition_entry_lba,
    number_of_partition_entries,
    size_of_partition_entry,
    partition_entry_array_crc32,
  };
}

/** Header fields an encoder takes; signature, header_size and the CRC are filled in. */
export type GptHeaderFields = Omit<GptHeader, 'signature' | 'header_crc32' | 'header_size' | 'revision'> & {
  readonly revision?: number;
};

/** Encodes a header into one logical block of `sectorSize` bytes, with a correct HeaderCRC32. */
export function encodeGptHeader(h: GptHeaderFields, sectorSize: number): Uint8Array {
  const out = new Uint8Array(sectorSize);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode(GPT_SIGNATURE), GPT_HEADER.Signature);
  v.setUint32(GPT_HEADER.Revision, h.revision ?? GPT_REVISION_1_0, true);
  v.setUint32(GPT_HEADER.HeaderSize, GPT_HEADER_MIN_SIZE, true);
  v.setBigUint64(GPT_HEADER.MyLBA, BigInt(h.my_lba), true);
  v.setBigUint64(GPT_HEADER.AlternateLBA, BigInt(h.alternate_lba), true);
  v.setBigUint64(GPT_HEADER.FirstUsableLBA, BigInt(h.first_usable_lba), true);
  v.setBigUint64(GPT_HEADER.LastUsableLBA, BigInt(h.last_usable_lba), true);
  out.set(encodeGuid(h.disk_guid), GPT_HEADER.DiskGUID);
  v.setBigUint64(GPT_HEADER.PartitionEntryLBA, BigInt(h.partition_entry_lba), true);
  v.setUint32(GPT_HEADER.NumberOfPartitionEntries, h.number_of_partition_entries, true);
  v.setUint32(GPT_HEADER.SizeOfPartitionEntry, h.size_of_partition_entry, true);
  v.setUint32(GPT_HEADER.PartitionEntryArrayCRC32, h.partition_entry_array_crc32, true);
  v.setUint32(GPT_HEADER.HeaderCRC32, gptHeaderCrc(out, GPT_HEADER_MIN_SIZE), true);
  return out;
}

export interface GptEntriesContext {
  readonly file: string;
  /** Device byte offset of the array's first byte. */
  readonly base: number;
}

/**
 * Checks the entry array against the header's PartitionEntryArrayCRC32.
 * Throws BAD_CHECKSUM at the array's offset (structure `gpt.entries`).
 */
export function verifyGptEntryArray(array: Uint8Array, header: GptHeader, ctx: GptEntriesContext): void {
  const computed = crc32(array.subarray(0, gptEntryArrayBytes(header))) >>> 0;
  if (computed !== header.partition_entry_array_crc32) {
    throw new CorruptImageError('BAD_CHECKSUM', {
      file: ctx.file,
      structure: 'gpt.entries',
      offset: ctx.base,
      detail: 'GPT partition entry array CRC32 mismatch',
      expected: hex32(header.partition_entry_array_crc32),
      actual: hex32(computed),
    });
  }
}

/**
 * Decodes the used entries (non-zero type GUID) of an entry array whose CRC was
 * checked. Throws CORRUPT_IMAGE, at the entry's device offset, for an entry whose
 * LBAs are reversed or lie outside the usable area, or that overlaps another.
 */
export function decodeGptEntries(array: Uint8Array, header: GptHeader, ctx: GptEntriesContext): GptEntry[] {
  const size = header.size_of_partition_entry;
  const names = new TextDecoder('utf-16le');
  const entries: GptEntry[] = [];
  for (let slot = 0; slot < header.number_of_partition_entries; slot++) {
    const r = new ByteReader(array.subarray(slot * size, (slot + 1) * size), {
      file: ctx.file,
      structure: `gpt.entry[${slot}]`,
      base: ctx.base + slot * size,
    });
    const partition_type_guid = decodeGuid(r.slice(GPT_ENTRY.PartitionTypeGUID, 16, 'partition_type_guid'));
    if (partition_type_guid === ZERO_GUID) continue; // UEFI 5.3.3: an unused entry
    const starting_lba = r.u64le(GPT_ENTRY.StartingLBA, 'starting_lba');
    const ending_lba = r.u64le(GPT_ENTRY.EndingLBA, 'ending_lba');
    if (starting_lba < header.first_usable_lba || starting_lba > header.last_usable_lba) {
      r.fail(GPT_ENTRY.StartingLBA, 'starting_lba', `partition starts outside the usable LBAs ${header.first_usable_lba}..${header.last_usable_lba}`, { actual: starting_lba });
    }
    if (ending_lba < starting_lba || ending_lba > header.last_usable_lba) {
      r.fail(GPT_ENTRY.EndingLBA, 'ending_lba', `partition ends outside LBAs ${starting_lba}..${header.last_usable_lba}`, { actual: ending_lba });
    }
    const rawName = r.slice(GPT_ENTRY.PartitionName, GPT_ENTRY_NAME_BYTES, 'partition_name');
    let nameEnd = 0;
    while (nameEnd < rawName.length && (rawName[nameEnd] !== 0 || rawName[nameEnd + 1] !== 0)) nameEnd += 2;
    entries.push({
      slot,
      partition_type_guid,
      unique_partition_guid: decodeGuid(r.slice(GPT_ENTRY.UniquePartitionGUID, 16, 'unique_partition_guid')),
      starting_lba,
      ending_lba,
      attributes: `0x${r.u64leBig(GPT_ENTRY.Attributes, 'attributes').toString(16).padStart(16, '0')}`,
      partition_name: names.decode(rawName.subarray(0, nameEnd)),
    });
  }
  // Partitions must not share sectors (UEFI 5.3.3: "no two partitions may overlap").
  const sorted = [...entries].sort((a, b) => a.starting_lba - b.starting_lba || a.slot - b.slot);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.starting_lba <= prev.ending_lba) {
      throw new CorruptImageError('CORRUPT_IMAGE', {
        file: ctx.file,
        structure: `gpt.entry[${cur.slot}].starting_lba`,
        offset: ctx.base + cur.slot * size + GPT_ENTRY.StartingLBA,
        detail: `partition ${cur.slot + 1} (LBAs ${cur.starting_lba}..${cur.ending_lba}) overlaps partition ${prev.slot + 1} (LBAs ${prev.starting_lba}..${prev.ending_lba})`,
      });
    }
  }
  return entries;
}

/** Fields of an entry for the encoder. */
export type GptEntryFields = Omit<GptEntry, 'slot' | 'attributes'> & { readonly attributes?: bigint };

/** Encodes one entry into `size` bytes (the name is truncated to 36 UTF-16 units). */
export function encodeGptEntry(e: GptEntryFields, size: number = GPT_ENTRY_MIN_SIZE): Uint8Array {
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set(encodeGuid(e.partition_type_guid), GPT_ENTRY.PartitionTypeGUID);
  out.set(encodeGuid(e.unique_partition_guid), GPT_ENTRY.UniquePartitionGUID);
  v.setBigUint64(GPT_ENTRY.StartingLBA, BigInt(e.starting_lba), true);
  v.setBigUint64(GPT_ENTRY.EndingLBA, BigInt(e.ending_lba), true);
  v.setBigUint64(GPT_ENTRY.Attributes, e.attributes ?? 0n, true);
  const units = Math.min(e.partition_name.length, GPT_ENTRY_NAME_BYTES / 2);
  for (let i = 0; i < units; i++) v.setUint16(GPT_ENTRY.PartitionName + 2 * i, e.partition_name.charCodeAt(i), true);
  return out;
}

/** CRC32 of an encoded entry array, for PartitionEntryArrayCRC32. */
export function gptEntryArrayCrc(array: Uint8Array): number {
  return crc32(array) >>> 0;
}
