/** MBR/EBR decode/encode and EBR chains built in code. */
import { describe, expect, it } from 'vitest';
import { decodeMbr, encodeMbr } from '../../../src/diskimage/partition/mbr.js';
import { readPartitionTable } from '../../../src/diskimage/partition/readPartitionTable.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { MemoryDevice } from './MemoryDevice.js';

describe('MBR encode/decode', () => {
  it('round-trips: decode(encode(x)) == x and encode keeps the boot code', () => {
    const boot = new Uint8Array(512).fill(0x90);
    const records = [
      { boot_indicator: 0x80, starting_chs: [1, 2, 3] as const, os_type: 0x83, ending_chs: [4, 5, 6] as const, starting_lba: 2048, size_in_lba: 4096 },
      { boot_indicator: 0, starting_chs: [0, 0, 0] as const, os_type: 0x0f, ending_chs: [0, 0, 0] as const, starting_lba: 6144, size_in_lba: 0xffffffff },
    ];
    const bytes = encodeMbr({ unique_mbr_disk_signature: 0xcafef00d, partition_record: records }, boot);
    expect(bytes.subarray(0, 440).every((b) => b === 0x90)).toBe(true);
    expect([bytes[510], bytes[511]]).toEqual([0x55, 0xaa]);
    const m = decodeMbr(bytes, { file: 'x', structure: 'mbr', base: 0 });
    expect(m.unique_mbr_disk_signature).toBe(0xcafef00d);
    expect(m.signature).toBe(0xaa55);
    expect(m.partition_record.slice(0, 2)).toEqual(records);
    expect(m.partition_record[2]).toEqual({ boot_indicator: 0, starting_chs: [0, 0, 0], os_type: 0, ending_chs: [0, 0, 0], starting_lba: 0, size_in_lba: 0 });
  });
});

/** A disk whose extended partition (LBA 100..) holds `n` chained EBRs, each with a 1-sector logical. */
function chainDisk(n: number, options: { loopTo?: number } = {}): Uint8Array {
  const sectors = 200 + 2 * n;
  const disk = new Uint8Array(sectors * 512);
  disk.set(encodeMbr({ partition_record: [{ os_type: 0x05, starting_lba: 100, size_in_lba: sectors - 100 }] }), 0);
  for (let i = 0; i < n; i++) {
    const rel = 2 * i; // EBR i at ext+2i, its logical right after it
    const last = i === n - 1;
    const nextRel = last ? options.loopTo : rel + 2;
    disk.set(
      encodeMbr({
        partition_record: [
          { os_type: 0x83, starting_lba: 1, size_in_lba: 1 },
          ...(nextRel !== undefined ? [{ os_type: 0x05, starting_lba: nextRel, size_in_lba: 2 }] : []),
        ],
      }),
      (100 + rel) * 512,
    );
  }
  return disk;
}

describe('EBR chains', () => {
  it('numbers logicals from 5 in chain order', async () => {
    const t = await readPartitionTable(new MemoryDevice(chainDisk(3)), { file: 'x' });
    expect(t.partitions.map((p) => [p.index, p.kind, p.startBytes / 512])).toEqual([
      [1, 'extended', 100],
      [5, 'logical', 101],
      [6, 'logical', 103],
      [7, 'logical', 105],
    ]);
  });

  it('a loop is CORRUPT_IMAGE at the link that closes it', async () => {
    const disk = chainDisk(4, { loopTo: 2 });
    await expectImgError(() => readPartitionTable(new MemoryDevice(disk), { file: 'x' }), 'CORRUPT_IMAGE', {
      file: 'x',
      structure: 'ebr[106].partition_record[1].starting_lba',
      offset: 106 * 512 + 446 + 16 + 8,
    });
  });

  it('more than 256 logicals is CORRUPT_IMAGE (bounded walk)', async () => {
    await expectImgError(() => readPartitionTable(new MemoryDevice(chainDisk(300)), { file: 'x' }), 'CORRUPT_IMAGE', {
      file: 'x',
      structure: `ebr[${100 + 2 * 255}].partition_record[1].starting_lba`,
    });
    expect((await readPartitionTable(new MemoryDevice(chainDisk(256)), { file: 'x' })).partitions).toHaveLength(257);
  });

  it('an invalid boot indicator means sector 0 is no MBR', async () => {
    const disk = chainDisk(1);
    disk[446] = 0x12;
    expect((await readPartitionTable(new MemoryDevice(disk), { file: 'x' })).scheme).toBe('none');
  });
});
