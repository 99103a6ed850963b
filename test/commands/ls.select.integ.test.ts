/**
 * Which filesystem `imgdedup ls` reads, and how it refuses the others: a partition, an
 * --offset or a whole disk holding FAT (made by mkfs.vfat) is named, with UNSUPPORTED_FORMAT.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { join } from 'node:path';
import { imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { FAT_PART_START, EXT_PART_START, makeExampleDisks } from '../helpers/exampleDisks.js';

const tmp = useTempDir('imgdedup-ls-select-');
let dir: string;

beforeAll(() => {
  dir = tmp();
  makeExampleDisks(dir);
  sh('mkfs.vfat', ['-C', join(dir, 'whole-fat.img'), '2048']);
  // A GPT disk whose only partition holds FAT.
  const fat = join(dir, 'part.fat');
  sh('mkfs.vfat', ['-C', fat, '2048']);
  sh('truncate', ['-s', '4M', join(dir, 'fat-only.raw')]);
  sh('sgdisk', ['-n', '1:2048:+2M', '-t', '1:0700', join(dir, 'fat-only.raw')]);
  sh('dd', [`if=${fat}`, `of=${join(dir, 'fat-only.raw')}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
}, 60_000);

const json = (s: string) => JSON.parse(s) as { code: string; data: Record<string, unknown>; message: string };

describe('ls on something that is not ext2/3/4', () => {
  test('a FAT partition: UNSUPPORTED_FORMAT naming the filesystem and the partition, exit 2', () => {
    const r = imgdedup(['--json', 'ls', 'disk.raw:1'], { cwd: dir });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    const e = json(r.stderr);
    expect(e.code).toBe('UNSUPPORTED_FORMAT');
    expect(e.data).toMatchObject({ file: 'disk.raw', offset: FAT_PART_START, filesystem: 'fat12' });
    expect(e.message).toBe(`disk.raw: at byte ${FAT_PART_START}: partition 1 holds a fat12 filesystem; ls reads ext2/3/4 filesystems only`);
  });
  test('--offset at the FAT partition', () => {
    const r = imgdedup(['ls', '--offset', String(FAT_PART_START), 'disk.raw'], { cwd: dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\[UNSUPPORTED_FORMAT\].*--offset 1048576 holds a fat12 filesystem/);
  });
  test('a whole-disk FAT filesystem', () => {
    const r = imgdedup(['ls', 'whole-fat.img'], { cwd: dir });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\[UNSUPPORTED_FORMAT\].*the disk holds a fat\d+ filesystem; ls reads ext2\/3\/4/);
  });
  test('a disk where no partition holds ext2/3/4: each partition named with its filesystem', () => {
    const r = imgdedup(['ls', 'fat-only.raw'], { cwd: dir });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/^imgdedup: error \[UNSUPPORTED_FORMAT\]: fat-only\.raw: no partition holds an ext2\/3\/4 filesystem, which is what ls reads \(1: fat\d+\)$/);
  });
  test('a partition number the disk does not have is a usage error listing the partitions', () => {
    const r = imgdedup(['ls', 'disk.raw:3'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('imgdedup: error [USAGE]: disk.raw: no partition 3 (partitions: 1, 2)');
  });
});

describe('ls finds the ext4 filesystem', () => {
  test.each([['disk.raw:2'], ['disk.raw']])('%s', (arg) => {
    const r = imgdedup(['ls', arg, '/etc'], { cwd: dir });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('hosts\nmotd\n');
  });
  test('--offset at the ext4 partition', () => {
    const r = imgdedup(['ls', '--offset', String(EXT_PART_START), 'disk.raw', '/etc'], { cwd: dir });
    expect(r.stdout).toBe('hosts\nmotd\n');
  });
});
