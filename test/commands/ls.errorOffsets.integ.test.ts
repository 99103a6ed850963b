/**
 * Error offsets name bytes a user can seek to (README, "Errors"): `fsOffset` within the
 * filesystem, `deviceOffset` on the guest disk, `offset` in the image file when known (a raw
 * image). Checked against debugfs (where the inode sits in the filesystem) and against the
 * bytes found at each offset (what `dd skip=` would read).
 */
import { closeSync, mkdirSync, openSync, readSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { imgdedup, sh } from '../helpers/run.js';
import { qemuImg } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-offsets-');
const PART_START = 2 * 1024 * 1024;
/** The corrupt i_size written into the symlink's inode (little-endian at inode byte 4). */
const BAD_SIZE = 0x40000000;
let fsImage = '';
let gptRaw = '';
let gptQcow = '';
let mbrRaw = '';
let cleanMbr = '';
/** Filesystem byte of /ln's i_size, from debugfs imap. */
let iSizeFsByte = 0;

function u32At(file: string, at: number): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, at);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

function diskWith(fs: string, name: string, partition: (disk: string) => void): string {
  const disk = join(tmp(), name);
  sh('truncate', ['-s', '10M', disk]);
  partition(disk);
  sh('dd', [`if=${fs}`, `of=${disk}`, 'bs=1M', `seek=${PART_START >> 20}`, 'conv=notrunc', 'status=none']);
  return disk;
}

const gpt = (disk: string): void => void sh('sgdisk', ['-n', `1:${PART_START / 512}:+6M`, disk]);
const mbr = (disk: string): void => void sh('sfdisk', ['-q', disk], { input: `start=${PART_START / 512}, size=12288, type=83\n` });

beforeAll(() => {
  const src = join(tmp(), 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'f'), 'hello\n');
  symlinkSync('f', join(src, 'ln'));
  const clean = join(tmp(), 'clean.img');
  sh('truncate', ['-s', '6M', clean]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '1024', '-d', src, clean]);
  cleanMbr = diskWith(clean, 'clean-mbr.raw', mbr);
  fsImage = join(tmp(), 'fs.img');
  sh('cp', [clean, fsImage]);
  sh('debugfs', ['-w', '-R', `sif /ln size 0x${BAD_SIZE.toString(16)}`, fsImage]);
  const imap = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(sh('debugfs', ['-R', 'imap /ln', fsImage]))!;
  iSizeFsByte = Number(imap[1]) * 1024 + parseInt(imap[2]!, 16) + 4;
  gptRaw = diskWith(fsImage, 'gpt.raw', gpt);
  mbrRaw = diskWith(fsImage, 'mbr.raw', mbr);
  gptQcow = join(tmp(), 'gpt.qcow2');
  qemuImg('convert', '-O', 'qcow2', gptRaw, gptQcow);
});

describe('offsets of a filesystem structure in partition 1 at 2 MiB', () => {
  test('the oracle: the corrupt i_size is where debugfs says, in the filesystem and on the disk', () => {
    expect(u32At(fsImage, iSizeFsByte)).toBe(BAD_SIZE);
    expect(u32At(gptRaw, PART_START + iSizeFsByte)).toBe(BAD_SIZE);
  });

  test.each([
    ['GPT', () => gptRaw],
    ['MBR', () => mbrRaw],
  ])('raw %s image: offset = deviceOffset = the disk byte, fsOffset = the filesystem byte', (_name, disk) => {
    const r = imgdedup(['ls', '--json', `${disk()}:1`, '/']);
    expect(r.status).toBe(2);
    const e = JSON.parse(r.stderr) as { data: Record<string, unknown>; message: string };
    expect(e.data).toMatchObject({ structure: 'ext4.inode[13].i_size', offset: PART_START + iSizeFsByte, deviceOffset: PART_START + iSizeFsByte, fsOffset: iSizeFsByte });
    expect(u32At(disk(), e.data.offset as number)).toBe(BAD_SIZE);
    expect(e.message).toContain(`ext4.inode[13].i_size at byte ${PART_START + iSizeFsByte} (filesystem byte ${iSizeFsByte})`);
  });

  test('the same in text mode, and with the partition found without :PART', () => {
    const r = imgdedup(['ls', gptRaw, '/']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`i_size at byte ${PART_START + iSizeFsByte} (filesystem byte ${iSizeFsByte})`);
  });

  test('--offset: the same bytes as :1', () => {
    const r = imgdedup(['ls', '--json', '--offset', String(PART_START), gptRaw, '/']);
    expect(JSON.parse(r.stderr).data).toMatchObject({ offset: PART_START + iSizeFsByte, deviceOffset: PART_START + iSizeFsByte, fsOffset: iSizeFsByte });
  });

  test('qcow2: no file offset (the cluster may be anywhere in the file), deviceOffset = the guest disk byte', () => {
    const r = imgdedup(['ls', '--json', `${gptQcow}:1`, '/']);
    expect(r.status).toBe(2);
    const e = JSON.parse(r.stderr) as { data: Record<string, unknown>; message: string };
    expect(e.data.offset).toBeUndefined();
    expect(e.data).toMatchObject({ deviceOffset: PART_START + iSizeFsByte, fsOffset: iSizeFsByte });
    // The guest disk's bytes are the raw image's: the qcow2 was converted from it.
    expect(u32At(gptRaw, e.data.deviceOffset as number)).toBe(BAD_SIZE);
    expect(e.message).toContain(`i_size at disk byte ${PART_START + iSizeFsByte} (filesystem byte ${iSizeFsByte})`);
  });

  test('diff of two raw disks: the disk byte of the filesystem in partition 1', () => {
    const r = imgdedup(['diff', '--json', cleanMbr, mbrRaw]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stderr).data).toMatchObject({ offset: PART_START + iSizeFsByte, deviceOffset: PART_START + iSizeFsByte, fsOffset: iSizeFsByte });
  });
});

test('ls --offset 12 on a filesystem at byte 0: s_magic is at byte 12 + 1080', () => {
  const r = imgdedup(['ls', '--json', '--offset', '12', fsImage]);
  expect(r.status).toBe(2);
  expect(JSON.parse(r.stderr).data).toMatchObject({ structure: 'ext4.superblock.s_magic', offset: 1092, deviceOffset: 1092, fsOffset: 1080 });
});
