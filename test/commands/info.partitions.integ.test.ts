/** `imgdedup info` shows the guest partitions (oracles: sfdisk --json, blkid -p). Needs dist/cli.cjs (npx tsup). */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { imgdedup } from '../helpers/run.js';
import { qemuImg } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';
import { blkidFilesystem, makeFilesystemFile, makeGptDisk, makeMbrDisk, nodeIndex, sfdiskJson } from '../diskimage/partition/fixtures.js';
import type { InfoResult } from '../../src/commands/info.js';

const tmp = useTempDir('imgdedup-info-parts-');

function infoJson(image: string): InfoResult {
  const r = imgdedup(['info', '--json', image]);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as InfoResult;
}

describe('imgdedup info: partitions', () => {
  it('GPT disk in a qcow2: scheme, each partition as sfdisk and blkid see it', () => {
    const disk = makeGptDisk(tmp());
    const q = join(tmp(), 'gpt.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', disk, q);
    const r = infoJson(q);
    const oracle = sfdiskJson(disk);
    expect(r.partitions.scheme).toBe('gpt');
    expect(r.partitions.diskGuid).toBe(oracle.id);
    expect(r.partitions.partitions).toEqual(
      oracle.partitions.map((p) => ({
        index: nodeIndex(p.node),
        typeName: expect.any(String),
        typeGuid: p.type,
        name: p.name,
        startBytes: p.start * 512,
        sizeBytes: p.size * 512,
        filesystem: blkidFilesystem(disk, { offset: p.start * 512, size: p.size * 512 }),
      })),
    );
    expect(r.warnings).toEqual([]);
    const text = imgdedup(['info', q]);
    expect(text.status).toBe(0);
    expect(text.stdout).toContain(`partition table: gpt (disk id ${oracle.id}), 3 partition(s), sector size 512`);
    expect(text.stdout).toMatch(/ {2}1: start 1048576 size 8388608 \(.*\) type EFI System \{C12A7328-F81F-11D2-BA4B-00A0C93EC93B\} "EFI system" filesystem fat32/);
    expect(text.stdout).toMatch(/ {2}3: .* type Linux swap \{0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\} "swap" filesystem swap/);
  });

  it('MBR disk: primaries, extended and logicals with type bytes', () => {
    const disk = makeMbrDisk(tmp());
    const r = infoJson(disk);
    const oracle = sfdiskJson(disk);
    expect(r.partitions.scheme).toBe('mbr');
    expect(r.partitions.partitions.map((p) => [p.index, p.mbrType, p.startBytes, p.sizeBytes])).toEqual(
      oracle.partitions.map((p) => [nodeIndex(p.node), parseInt(p.type, 16), p.start * 512, p.size * 512]),
    );
    expect(r.partitions.partitions.map((p) => p.filesystem)).toEqual(
      oracle.partitions.map((p) => (p.type === '5' ? undefined : blkidFilesystem(disk, { offset: p.start * 512, size: p.size * 512 }))),
    );
    const text = imgdedup(['info', disk]).stdout;
    expect(text).toMatch(/ {2}5: start \d+ size 4194304 .* type Linux \(0x83, logical\) filesystem ext2/);
  });

  it('whole-disk ext4 without a partition table: shown as the disk filesystem', () => {
    const fs = makeFilesystemFile(tmp(), 'whole.img', 'ext4', 8 << 20);
    expect(blkidFilesystem(fs)).toBe('ext4');
    const r = infoJson(fs);
    expect(r.partitions).toMatchObject({ scheme: 'none', filesystem: 'ext4', partitions: [] });
    expect(imgdedup(['info', fs]).stdout).toContain('partition table: none (whole-disk filesystem: ext4)');
  });

  it('backup GPT used: info succeeds and prints the warning', () => {
    const disk = makeGptDisk(tmp(), 'gpt-w.img');
    const b = readFileSync(disk);
    b[512 + 56]! ^= 0xff;
    writeFileSync(disk, b);
    const r = imgdedup(['info', disk]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/warning: the primary GPT is unusable .*backup GPT at LBA 131071 was used/);
    expect(infoJson(disk).partitions.partitions).toHaveLength(3);
  });

  it('both GPT headers corrupt: exit 2, error names file, structure and offset', () => {
    const disk = makeGptDisk(tmp(), 'gpt-bad.img');
    const b = readFileSync(disk);
    b[512 + 56]! ^= 0xff;
    b[b.length - 512 + 56]! ^= 0xff;
    writeFileSync(disk, b);
    const r = imgdedup(['info', disk]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`imgdedup: error [BAD_CHECKSUM]: ${disk}: gpt.header.header_crc32 at byte 528`);
    const j = imgdedup(['info', '--json', disk]);
    expect(JSON.parse(j.stderr.trim())).toMatchObject({ code: 'BAD_CHECKSUM', data: { file: disk, structure: 'gpt.header.header_crc32', offset: 528 } });
  });
});
