/** GPT decode/encode built in code: GUID byte order, round trips, a 4096-byte-sector GPT. */
import { describe, expect, it } from 'vitest';
import { crc32 } from '@node-rs/crc32';
import { decodeGuid, encodeGuid } from '../../../src/diskimage/partition/guid.js';
import { decodeGptEntries, decodeGptHeader, encodeGptEntry, encodeGptHeader, gptEntryArrayCrc, type GptHeaderFields } from '../../../src/diskimage/partition/gpt.js';
import { encodeMbr } from '../../../src/diskimage/partition/mbr.js';
import { readPartitionTable } from '../../../src/diskimage/partition/readPartitionTable.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { MemoryDevice } from './MemoryDevice.js';

describe('GUIDs', () => {
  it('decodes the mixed-endian EFI System type GUID as the UEFI spec prints it', () => {
    // UEFI 2.10 table 5-7: C12A7328-F81F-11D2-BA4B-00A0C93EC93B; the first three fields little-endian.
    const bytes = Uint8Array.from([0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    expect(decodeGuid(bytes)).toBe('C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
    expect(Array.from(encodeGuid('c12a7328-f81f-11d2-ba4b-00a0c93ec93b'))).toEqual(Array.from(bytes));
  });
});

const SS = 4096;
const TOTAL = 2048; // sectors of 4 KiB: an 8 MiB disk
const ENTRIES = 128;
const ARRAY_SECTORS = (ENTRIES * 128) / SS; // 4

/** A 4Kn GPT disk assembled by hand from the spec layout (UEFI 5.3.1). */
function build4kGpt(): Uint8Array {
  const disk = new Uint8Array(TOTAL * SS);
  const array = new Uint8Array(ENTRIES * 128);
  array.set(encodeGptEntry({ partition_type_guid: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', unique_partition_guid: '01234567-89AB-CDEF-0123-456789ABCDEF', starting_lba: 256, ending_lba: 1023, partition_name: 'données' }), 0);
  array.set(encodeGptEntry({ partition_type_guid: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', unique_partition_guid: '01234567-89AB-CDEF-0123-456789ABCDE0', starting_lba: 1024, ending_lba: 1279, partition_name: 'ESP', attributes: 1n }), 5 * 128);
  const common: Omit<GptHeaderFields, 'my_lba' | 'alternate_lba' | 'partition_entry_lba'> = {
    first_usable_lba: 2 + ARRAY_SECTORS,
    last_usable_lba: TOTAL - 2 - ARRAY_SECTORS,
    disk_guid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE',
    number_of_partition_entries: ENTRIES,
    size_of_partition_entry: 128,
    partition_entry_array_crc32: gptEntryArrayCrc(array),
  };
  disk.set(encodeMbr({ partition_record: [{ os_type: 0xee, starting_lba: 1, size_in_lba: TOTAL - 1 }] }), 0);
  disk.set(encodeGptHeader({ ...common, my_lba: 1, alternate_lba: TOTAL - 1, partition_entry_lba: 2 }, SS), SS);
  disk.set(array, 2 * SS);
  disk.set(array, (TOTAL - 1 - ARRAY_SECTORS) * SS);
  disk.set(encodeGptHeader({ ...common, my_lba: TOTAL - 1, alternate_lba: 1, partition_entry_lba: TOTAL - 1 - ARRAY_SECTORS }, SS), (TOTAL - 1) * SS);
  return disk;
}

describe('GPT encode/decode', () => {
  it('round-trips a header: decode(encode(x)) == x, and the CRC is the spec CRC32 with the field zeroed', () => {
    const fields = { my_lba: 1, alternate_lba: 99, first_usable_lba: 34, last_usable_lba: 66, disk_guid: '12345678-9ABC-DEF0-1234-56789ABCDEF0', partition_entry_lba: 2, number_of_partition_entries: 128, size_of_partition_entry: 128, partition_entry_array_crc32: 0xdeadbeef };
    const sector = encodeGptHeader(fields, 512);
    const h = decodeGptHeader(sector, { file: 'x', structure: 'gpt.header', lba: 1, sectorSize: 512, deviceSectors: 100 });
    expect(h).toEqual({ ...fields, signature: 'EFI PART', revision: 0x10000, header_size: 92, header_crc32: h.header_crc32 });
    const zeroed = sector.slice(0, 92);
    zeroed.fill(0, 16, 20);
    expect(h.header_crc32).toBe(crc32(zeroed) >>> 0);
    expect(Array.from(encodeGptHeader(fields, 512))).toEqual(Array.from(sector));
  });

  it('round-trips entries, including a non-ASCII UTF-16LE name and attributes', () => {
    const disk = build4kGpt();
    const header = decodeGptHeader(disk.subarray(SS, 2 * SS), { file: 'x', structure: 'gpt.header', lba: 1, sectorSize: SS, deviceSectors: TOTAL });
    const entries = decodeGptEntries(disk.subarray(2 * SS, 2 * SS + ENTRIES * 128), header, { file: 'x', base: 2 * SS });
    expect(entries.map((e) => [e.slot, e.partition_name, e.attributes])).toEqual([
      [0, 'données', '0x0000000000000000'],
      [5, 'ESP', '0x0000000000000001'],
    ]);
    const { slot: _s, attributes: _a, ...rest } = entries[1]!;
    expect(Array.from(encodeGptEntry({ ...rest, attributes: 1n }))).toEqual(Array.from(disk.subarray(2 * SS + 5 * 128, 2 * SS + 6 * 128)));
  });

  it('reads a 4096-byte-sector GPT, numbering partitions by slot', async () => {
    const t = await readPartitionTable(new MemoryDevice(build4kGpt()), { file: 'x' });
    expect(t).toMatchObject({ scheme: 'gpt', sectorSize: 4096, diskGuid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE', warnings: [] });
    expect(t.partitions.map((p) => [p.index, p.startBytes, p.lengthBytes, p.typeName, p.name])).toEqual([
      [1, 256 * SS, 768 * SS, 'Linux filesystem', 'données'],
      [6, 1024 * SS, 256 * SS, 'EFI System', 'ESP'],
    ]);
    expect(t.partitions[1]!.device().size).toBe(256 * SS);
  });

  it('reads a GPT without a protective MBR, and warns', async () => {
    const disk = build4kGpt();
    disk.fill(0, 0, 512);
    const t = await readPartitionTable(new MemoryDevice(disk), { file: 'x' });
    expect(t.scheme).toBe('gpt');
    expect(t.warnings).toEqual(['the disk has a GPT but no protective MBR']);
  });

  it('a protective MBR with no GPT anywhere: CORRUPT_IMAGE at the primary signature', async () => {
    const disk = new Uint8Array(1 << 20);
    disk.set(encodeMbr({ partition_record: [{ os_type: 0xee, starting_lba: 1, size_in_lba: 2047 }] }), 0);
    await expectImgError(() => readPartitionTable(new MemoryDevice(disk), { file: 'x' }), 'CORRUPT_IMAGE', { file: 'x', structure: 'gpt.header.signature', offset: 512 });
  });
});
