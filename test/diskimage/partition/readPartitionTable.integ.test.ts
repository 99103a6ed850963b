/**
 * readPartitionTable against images made by sgdisk/sfdisk (oracle: sfdisk --json),
 * through raw and qcow2 containers, and against those images corrupted in code.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { crc32 } from '@node-rs/crc32';
import { readPartitionTable, type PartitionTable } from '../../../src/diskimage/partition/readPartitionTable.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import type { BlockDevice } from '../../../src/diskimage/BlockDevice.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { qemuImg } from '../../helpers/qemu.js';
import { run } from '../../helpers/run.js';
import { MemoryDevice } from './MemoryDevice.js';
import { makeGptDisk, makeMbrDisk, nodeIndex, readBytes, sfdiskJson, type SfdiskTable } from './fixtures.js';

const tmp = useTempDir('imgdedup-ptable-');

async function readFile(path: string): Promise<PartitionTable> {
  const chain = await openChain(path);
  try {
    return await readPartitionTable(chain.device, { file: path });
  } finally {
    await chain.close();
  }
}

/** Our table matches sfdisk --json: same partitions, starts, sizes, types and names. */
function expectMatchesSfdisk(ours: PartitionTable, oracle: SfdiskTable): void {
  expect(ours.scheme).toBe(oracle.label === 'dos' ? 'mbr' : 'gpt');
  expect(ours.sectorSize).toBe(oracle.sectorsize);
  const mine = ours.partitions.map((p) => ({
    index: p.index,
    start: p.startBytes / ours.sectorSize,
    size: p.lengthBytes / ours.sectorSize,
    type: p.typeGuid ?? (p.mbrType ?? -1).toString(16),
    ...(p.guid !== undefined ? { uuid: p.guid } : {}),
    ...(p.name !== undefined ? { name: p.name } : {}),
  }));
  const theirs = oracle.partitions.map((p) => ({
    index: nodeIndex(p.node),
    start: p.start,
    size: p.size,
    type: p.type,
    ...(p.uuid !== undefined ? { uuid: p.uuid } : {}),
    ...(p.name !== undefined ? { name: p.name } : {}),
  }));
  expect(mine).toEqual(theirs);
  if (oracle.label === 'gpt') expect(ours.diskGuid).toBe(oracle.id);
  else expect(`0x${ours.diskSignature}`).toBe(oracle.id);
}

describe('readPartitionTable on sgdisk/sfdisk images', () => {
  it('reads a GPT disk (raw) like sfdisk, with no warnings', async () => {
    const disk = makeGptDisk(tmp());
    const t = await readFile(disk);
    expectMatchesSfdisk(t, sfdiskJson(disk));
    expect(t.partitions.map((p) => p.typeName)).toEqual(['EFI System', 'Linux filesystem', 'Linux swap']);
    expect(t.warnings).toEqual([]);
  });

  it('reads the same GPT inside a qcow2 (qemu-img convert)', async () => {
    const disk = makeGptDisk(tmp(), 'gpt-q.img');
    const q = join(tmp(), 'gpt.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', disk, q);
    const t = await readFile(q);
    expectMatchesSfdisk(t, sfdiskJson(disk));
    // A partition slice reads the same bytes as the raw file at that offset.
    const p2 = t.partitions[1]!;
    const chain = await openChain(q);
    try {
      const tbl = await readPartitionTable(chain.device, { file: q });
      const got = await tbl.partitions[1]!.device().read(1024, 2048);
      expect(Buffer.from(got).equals(Buffer.from(readBytes(disk).subarray(p2.startBytes + 1024, p2.startBytes + 3072)))).toBe(true);
    } finally {
      await chain.close();
    }
  });

  it('reads an MBR disk with 2 primaries and an extended partition with 3 logicals like sfdisk', async () => {
    const disk = makeMbrDisk(tmp());
    const t = await readFile(disk);
    expectMatchesSfdisk(t, sfdiskJson(disk));
    expect(t.partitions.map((p) => [p.index, p.kind, p.bootable])).toEqual([
      [1, 'primary', true],
      [2, 'primary', false],
      [3, 'extended', false],
      [5, 'logical', false],
      [6, 'logical', false],
      [7, 'logical', false],
    ]);
    expect(t.partitions.map((p) => p.typeName)).toEqual(['W95 FAT32 (LBA)', 'Linux', 'Extended', 'Linux', 'Linux swap', 'Linux']);
  });

  it('reports scheme none for a blank disk and for a whole-disk FAT filesystem (blkid agrees: no PTTYPE)', async () => {
    const blank = join(tmp(), 'blank.img');
    run('truncate', ['-s', '4M', blank]);
    expect((await readFile(blank)).scheme).toBe('none');
    const fat = join(tmp(), 'fat.img');
    run('truncate', ['-s', '8M', fat]);
    run('mkfs.vfat', ['-F', '16', fat]);
    const t = await readFile(fat);
    expect(t.scheme).toBe('none');
    expect(run('blkid', ['-p', '-o', 'export', fat]).stdout).not.toMatch(/PTTYPE/);
  });
});

// --- corrupt inputs, built from an sgdisk image in memory ---

const SS = 512;
function u64(b: Uint8Array, off: number): number {
  return Number(new DataView(b.buffer, b.byteOffset).getBigUint64(off, true));
}
function setU64(b: Uint8Array, off: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setBigUint64(off, BigInt(v), true);
}
function setU32(b: Uint8Array, off: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0, true);
}
/** Recomputes the entry-array CRC and then the header CRC of the header at byte `hdr` (what a partitioning tool would write). */
function reseal(b: Uint8Array, hdr: number): void {
  const dv = new DataView(b.buffer, b.byteOffset);
  const arrayLba = u64(b, hdr + 72);
  const bytes = dv.getUint32(hdr + 80, true) * dv.getUint32(hdr + 84, true);
  setU32(b, hdr + 88, crc32(b.subarray(arrayLba * SS, arrayLba * SS + bytes)));
  const size = dv.getUint32(hdr + 12, true);
  setU32(b, hdr + 16, 0);
  setU32(b, hdr + 16, crc32(b.subarray(hdr, hdr + size)));
}

describe('readPartitionTable on corrupted GPTs', () => {
  let base: Uint8Array | undefined;
  const image = (): { b: Uint8Array; dev: BlockDevice; backupHdr: number; backupArray: number } => {
    base ??= readBytes(makeGptDisk(tmp(), 'gpt-base.img'));
    const b = base.slice();
    const backupHdr = b.length - SS;
    return { b, dev: new MemoryDevice(b), backupHdr, backupArray: u64(b, backupHdr + 72) * SS };
  };
  const file = 'disk.img';
  const oracle = () => sfdiskJson(join(tmp(), 'gpt-base.img'));

  it('bad primary header CRC: uses the backup and says so (sgdisk -v agrees the main header is invalid)', async () => {
    const { b, dev } = image();
    b[SS + 56]! ^= 0xff; // a DiskGUID byte: the stored CRC no longer matches
    const t = await readPartitionTable(dev, { file });
    expectMatchesSfdisk({ ...t, diskGuid: t.diskGuid }, oracle());
    expect(t.warnings.join('\n')).toMatch(/primary GPT is unusable .*gpt\.header\.header_crc32 at byte 528.*backup GPT at LBA 131071 was used/);
    const copy = join(tmp(), 'badprimary.img');
    (await import('node:fs')).writeFileSync(copy, b);
    const v = run('sgdisk', ['-v', copy]);
    expect(v.stdout + v.stderr).toMatch(/invalid main GPT header/i);
  });

  it('both header CRCs bad: BAD_CHECKSUM naming the primary field and offset, and the backup', async () => {
    const { b, dev, backupHdr } = image();
    b[SS + 56]! ^= 0xff;
    b[backupHdr + 56]! ^= 0xff;
    await expectImgError(() => readPartitionTable(dev, { file }), 'BAD_CHECKSUM', {
      file,
      structure: 'gpt.header.header_crc32',
      offset: SS + 16,
      backup: { code: 'BAD_CHECKSUM', structure: 'gpt.backup_header.header_crc32', offset: backupHdr + 16 },
    });
  });

  it('primary entry array CRC mismatch: uses the backup array and says so', async () => {
    const { b, dev } = image();
    b[2 * SS + 56]! ^= 0x01; // first partition's name
    const t = await readPartitionTable(dev, { file });
    expectMatchesSfdisk(t, oracle());
    expect(t.warnings.join('\n')).toMatch(/primary GPT is unusable .*gpt\.entries at byte 1024.*entry array CRC32 mismatch/);
  });

  it('both entry arrays bad: BAD_CHECKSUM at the primary array offset', async () => {
    const { b, dev, backupArray } = image();
    b[2 * SS + 56]! ^= 0x01;
    b[backupArray + 56]! ^= 0x01;
    await expectImgError(() => readPartitionTable(dev, { file }), 'BAD_CHECKSUM', { file, structure: 'gpt.entries', offset: 2 * SS, backup: { offset: backupArray } });
  });

  it('backup header bad, primary good: uses the primary and warns', async () => {
    const { b, dev, backupHdr } = image();
    b[backupHdr + 56]! ^= 0xff;
    const t = await readPartitionTable(dev, { file });
    expectMatchesSfdisk(t, oracle());
    expect(t.warnings.join('\n')).toMatch(/backup GPT is unusable .*gpt\.backup_header\.header_crc32/);
  });

  it('overlapping partitions (validly sealed): CORRUPT_IMAGE at the later entry', async () => {
    const { b, dev, backupHdr, backupArray } = image();
    const p1End = u64(b, 2 * SS + 40);
    for (const arr of [2 * SS, backupArray]) setU64(b, arr + 128 + 32, p1End); // entry 1 starts on entry 0's last LBA
    reseal(b, SS);
    reseal(b, backupHdr);
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: 'gpt.entry[1].starting_lba', offset: 2 * SS + 128 + 32 });
  });

  it('partition beyond the usable LBAs: CORRUPT_IMAGE at its ending_lba', async () => {
    const { b, dev, backupHdr, backupArray } = image();
    const lastUsable = u64(b, SS + 48);
    for (const arr of [2 * SS, backupArray]) setU64(b, arr + 2 * 128 + 40, lastUsable + 1);
    reseal(b, SS);
    reseal(b, backupHdr);
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: 'gpt.entry[2].ending_lba', offset: 2 * SS + 2 * 128 + 40 });
  });

  it('disk shorter than its GPT (truncated image): CORRUPT_IMAGE at last_usable_lba', async () => {
    const { b } = image();
    const dev = new MemoryDevice(b.subarray(0, b.length - 1024 * 1024));
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: 'gpt.header.last_usable_lba', offset: SS + 48 });
  });

  it('grown disk (backup not at the last LBA): primary used, with a warning', async () => {
    const { b } = image();
    const grown = new Uint8Array(b.length + 1024 * 1024);
    grown.set(b);
    const t = await readPartitionTable(new MemoryDevice(grown), { file });
    expectMatchesSfdisk(t, oracle());
    expect(t.warnings.join('\n')).toMatch(/names LBA 131071 for its backup, but the last LBA is 133119/);
  });

  describe.each([
    { field: 'signature', rel: 0, patch: (b: Uint8Array, h: number) => void (b[h] = 0x46), crc: false, offset: 0 },
    { field: 'revision', rel: 8, patch: (b: Uint8Array, h: number) => setU32(b, h + 8, 0x00020000), crc: true, offset: 8 },
    { field: 'header_size', rel: 12, patch: (b: Uint8Array, h: number) => setU32(b, h + 12, 91), crc: false, offset: 12 },
    { field: 'my_lba', rel: 24, patch: (b: Uint8Array, h: number) => setU64(b, h + 24, 2), crc: true, offset: 24 },
    { field: 'size_of_partition_entry', rel: 84, patch: (b: Uint8Array, h: number) => setU32(b, h + 84, 192), crc: true, offset: 84 },
    { field: 'size_of_partition_entry', rel: 84, patch: (b: Uint8Array, h: number) => setU32(b, h + 84, 64), crc: true, offset: 84 },
    { field: 'number_of_partition_entries', rel: 80, patch: (b: Uint8Array, h: number) => setU32(b, h + 80, 0x10000000), crc: true, offset: 80 },
    { field: 'partition_entry_lba', rel: 72, patch: (b: Uint8Array, h: number) => setU64(b, h + 72, 40), crc: true, offset: 72 },
  ])('header field $field invalid in both copies', ({ field, patch, crc, offset }) => {
    it(`throws CORRUPT_IMAGE at gpt.header.${field}; a bad primary alone falls back to the backup`, async () => {
      const { b, dev, backupHdr } = image();
      const sealHeader = (h: number): void => {
        const size = new DataView(b.buffer).getUint32(h + 12, true);
        setU32(b, h + 16, 0);
        setU32(b, h + 16, crc32(b.subarray(h, h + Math.min(Math.max(size, 92), SS))));
      };
      patch(b, SS);
      if (crc) sealHeader(SS);
      const t = await readPartitionTable(dev, { file });
      expect(t.warnings.join('\n')).toContain(`gpt.header.${field} at byte ${SS + offset}`);
      expectMatchesSfdisk(t, oracle());
      patch(b, backupHdr);
      if (crc) sealHeader(backupHdr);
      await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: `gpt.header.${field}`, offset: SS + offset });
    });
  });
});

describe('readPartitionTable on corrupted MBRs', () => {
  let base: Uint8Array | undefined;
  const image = (): { b: Uint8Array; dev: BlockDevice; t: SfdiskTable } => {
    const path = join(tmp(), 'mbr-base.img');
    base ??= readBytes(makeMbrDisk(tmp(), 'mbr-base.img'));
    const b = base.slice();
    return { b, dev: new MemoryDevice(b), t: sfdiskJson(path) };
  };
  const file = 'disk.img';
  const u32 = (b: Uint8Array, off: number): number => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

  it('EBR chain loop: CORRUPT_IMAGE at the link that points back', async () => {
    const { b, dev, t } = image();
    const ext = t.partitions.find((p) => nodeIndex(p.node) === 3)!;
    // Follow the chain to the last EBR (EBR n+1 = ext.start + link.starting_lba).
    let ebr = ext.start;
    for (;;) {
      const next = u32(b, ebr * SS + 446 + 16 + 8);
      if (b[ebr * SS + 446 + 16 + 4] === 0) break;
      ebr = ext.start + next;
    }
    const link = ebr * SS + 446 + 16;
    b[link + 4] = 0x05;
    setU32(b, link + 8, 0); // back to the first EBR
    setU32(b, link + 12, 1);
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: `ebr[${ebr}].partition_record[1].starting_lba`, offset: link + 8 });
  });

  it('overlapping primaries: CORRUPT_IMAGE at the later record', async () => {
    const { b, dev } = image();
    setU32(b, 446 + 16 + 8, 2048 + 100); // partition 2 starts inside partition 1
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: 'mbr.partition_record[1].starting_lba', offset: 446 + 16 + 8 });
  });

  it('primary beyond the disk: CORRUPT_IMAGE at its size_in_lba', async () => {
    const { b, dev } = image();
    setU32(b, 446 + 16 + 12, 200000);
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: 'mbr.partition_record[1].size_in_lba', offset: 446 + 16 + 12 });
  });

  it('logical partition beyond its extended container: CORRUPT_IMAGE at the EBR record', async () => {
    const { b, dev, t } = image();
    const ext = t.partitions.find((p) => nodeIndex(p.node) === 3)!;
    setU32(b, ext.start * SS + 446 + 12, ext.size);
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: `ebr[${ext.start}].partition_record[0].size_in_lba`, offset: ext.start * SS + 446 + 12 });
  });

  it('EBR without its 0x55AA signature: CORRUPT_IMAGE at the signature', async () => {
    const { b, dev, t } = image();
    const ext = t.partitions.find((p) => nodeIndex(p.node) === 3)!;
    b[ext.start * SS + 510] = 0;
    await expectImgError(() => readPartitionTable(dev, { file }), 'CORRUPT_IMAGE', { file, structure: `ebr[${ext.start}].signature`, offset: ext.start * SS + 510 });
  });
});
