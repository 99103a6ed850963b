/**
 * The images the `--help` examples name, generated into a directory: a GPT disk with
 * an EFI FAT partition (1) and an ext4 partition (2) holding /etc and /usr/share/doc,
 * as raw, qcow2 and VMDK, and overlays on the qcow2 base (a client, an updated base).
 */
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { sh } from './run.js';

/** Partition 1 (FAT) starts at 1 MiB, partition 2 (ext4) at 2 MiB: the examples' --offset. */
export const FAT_PART_START = 1024 * 1024;
export const EXT_PART_START = 2 * 1024 * 1024;
const EXT_SIZE_MIB = 16;

function tree(dir: string, files: Readonly<Record<string, string>>): string {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

/** A GPT disk: FAT in partition 1, an ext4 filesystem of `files` in partition 2. */
function makeDisk(work: string, name: string, raw: string, files: Readonly<Record<string, string>>): void {
  const fs = join(work, `${name}.ext4`);
  makeExt4Image(fs, tree(join(work, name), files), { args: ['-b', '4096'], sizeMiB: EXT_SIZE_MIB });
  const fat = join(work, `${name}.fat`);
  sh('mkfs.vfat', ['-C', '-i', '12345678', fat, '1024']);
  execFileSync('truncate', ['-s', `${EXT_PART_START / 1048576 + EXT_SIZE_MIB + 1}M`, raw]);
  sh('sgdisk', ['-U', '01234567-89ab-cdef-0123-456789abcdef', '-n', '1:2048:+1M', '-t', '1:ef00', '-n', `2:${EXT_PART_START / 512}:+${EXT_SIZE_MIB}M`, '-t', '2:8300', raw]);
  execFileSync('dd', [`if=${fat}`, `of=${raw}`, 'bs=1M', `seek=${FAT_PART_START / 1048576}`, 'conv=notrunc', 'status=none']);
  execFileSync('dd', [`if=${fs}`, `of=${raw}`, 'bs=1M', `seek=${EXT_PART_START / 1048576}`, 'conv=notrunc', 'status=none']);
}

const BASE_FILES = {
  'etc/hosts': '127.0.0.1 localhost\n',
  'etc/motd': 'welcome\n',
  'usr/share/doc/pkg/README': 'a package\n'.repeat(100),
  'usr/share/doc/pkg/copyright': 'MIT\n',
};

/**
 * Writes into `dir`: base.raw, disk.raw (the same disk), base.qcow2, base.vmdk,
 * updated.qcow2 (an overlay on base.qcow2 adding /etc/new.conf and changing /etc/motd),
 * other.raw (the updated disk, flat), client.qcow2 (an overlay on base.qcow2 with
 * the client's own /home/user/notes), and an update for `apply`: updates/ (a tree with a
 * whiteout) and layer.tar.gz (the same as a tar layer).
 */
export function makeExampleDisks(dir: string): void {
  const work = join(dir, '.work');
  mkdirSync(work);
  const qemuImg = (...args: string[]) => sh('qemu-img', args, { cwd: dir });
  makeDisk(work, 'base', join(dir, 'base.raw'), BASE_FILES);
  copyFileSync(join(dir, 'base.raw'), join(dir, 'disk.raw'));
  qemuImg('convert', '-O', 'qcow2', 'base.raw', 'base.qcow2');
  qemuImg('convert', '-O', 'vmdk', 'base.raw', 'base.vmdk');
  makeDisk(work, 'updated', join(dir, 'other.raw'), { ...BASE_FILES, 'etc/motd': 'welcome, updated\n', 'etc/new.conf': 'new=1\n' });
  qemuImg('convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'other.raw', 'updated.qcow2');
  const client = join(work, 'client.raw');
  makeDisk(work, 'client', client, { ...BASE_FILES, 'home/user/notes': 'my own data\n'.repeat(50) });
  qemuImg('convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', client, 'client.qcow2');
  // An update for `apply`: a tree (a changed file, a new one, a whiteout) and the same as a tar layer.
  tree(join(dir, 'updates'), { 'etc/motd': 'welcome, patched\n', 'usr/share/doc/pkg/NEWS': 'version 2\n' });
  writeFileSync(join(dir, 'updates/usr/share/doc/pkg/.wh.copyright'), '');
  sh('tar', ['-czf', 'layer.tar.gz', '-C', 'updates', '.'], { cwd: dir });
  rmSync(work, { recursive: true, force: true });
}
