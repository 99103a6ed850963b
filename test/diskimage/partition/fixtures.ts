/**
 * Disk images for partition tests, made by independent tools (sgdisk, sfdisk,
 * mkfs.*, mkswap) into a temp dir, plus their oracles (sfdisk --json, blkid -p).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, sh } from '../../helpers/run.js';

export interface SfdiskPartition {
  readonly node: string;
  readonly start: number;
  readonly size: number;
  readonly type: string;
  readonly uuid?: string;
  readonly name?: string;
  readonly bootable?: boolean;
}
export interface SfdiskTable {
  readonly label: 'gpt' | 'dos';
  readonly id: string;
  readonly sectorsize: number;
  readonly partitions: readonly SfdiskPartition[];
}

/** `sfdisk --json` of an image: the oracle for partition starts, sizes, types and names. */
export function sfdiskJson(path: string): SfdiskTable {
  return (JSON.parse(sh('sfdisk', ['--json', path])) as { partitiontable: SfdiskTable }).partitiontable;
}

/** The partition number sfdisk gives a node ("disk.img5" -> 5). */
export function nodeIndex(node: string): number {
  return Number(/(\d+)$/.exec(node)![1]);
}

/** blkid's low-level probe of a byte range: TYPE, VERSION, PTTYPE... (empty if nothing found). */
export function blkidProbe(path: string, range?: { offset: number; size: number }): Record<string, string> {
  const args = ['-p', '-o', 'export', ...(range ? ['--offset', String(range.offset), '--size', String(range.size)] : []), path];
  const r = run('blkid', args);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** blkid's answer in detectFilesystem's vocabulary (vfat is named by FAT variant). */
export function blkidFilesystem(path: string, range?: { offset: number; size: number }): string | undefined {
  const p = blkidProbe(path, range);
  if (p.TYPE === 'vfat') return p.VERSION?.toLowerCase();
  return p.TYPE;
}

export type FsKind = 'vfat' | 'fat16' | 'fat12' | 'ext2' | 'ext3' | 'ext4' | 'swap';

/** Makes a filesystem of `bytes` in a file of its own; deterministic labels and UUIDs. */
export function makeFilesystemFile(dir: string, name: string, kind: FsKind, bytes: number): string {
  const path = join(dir, name);
  sh('truncate', ['-s', String(bytes), path]);
  switch (kind) {
    case 'vfat':
      sh('mkfs.vfat', ['-F', '32', '-i', '12345678', '-n', 'EFI', path]);
      break;
    case 'fat16':
      sh('mkfs.vfat', ['-F', '16', '-i', '12345679', path]);
      break;
    case 'fat12':
      sh('mkfs.vfat', ['-F', '12', '-i', '1234567a', path]);
      break;
    case 'ext2':
    case 'ext3':
    case 'ext4':
      sh(`mkfs.${kind}`, ['-q', '-F', '-U', '5f2e4c8a-1111-4222-8333-444455556666', '-E', 'hash_seed=5f2e4c8a-1111-4222-8333-444455556667', path], {
        env: { E2FSPROGS_FAKE_TIME: '1700000000' },
      });
      break;
    case 'swap':
      sh('mkswap', ['-U', '5f2e4c8a-1111-4222-8333-444455556668', path]);
      break;
  }
  return path;
}

/** Copies a filesystem file into the disk at `startSector` (512-byte sectors). */
export function placeAt(disk: string, fsFile: string, startSector: number): void {
  sh('dd', [`if=${fsFile}`, `of=${disk}`, 'bs=512', `seek=${startSector}`, 'conv=notrunc,sparse', 'status=none']);
}

/**
 * A 64 MiB GPT disk made by sgdisk: 1 "EFI system" (EF00, FAT32, 8 MiB),
 * 2 "root" (8300, ext4, 40 MiB), 3 "swap" (8200, swap, the rest).
 */
export function makeGptDisk(dir: string, name = 'gpt.img'): string {
  const disk = join(dir, name);
  sh('truncate', ['-s', '64M', disk]);
  sh('sgdisk', [
    '-U', 'A1B2C3D4-1111-4222-8333-444455556666',
    '-n1:2048:+8M', '-t1:EF00', '-c1:EFI system', '-u1:11111111-2222-4333-8444-555555555551',
    '-n2:0:+40M', '-t2:8300', '-c2:root', '-u2:11111111-2222-4333-8444-555555555552',
    '-n3:0:0', '-t3:8200', '-c3:swap', '-u3:11111111-2222-4333-8444-555555555553',
    disk,
  ]);
  const t = sfdiskJson(disk);
  const kinds: FsKind[] = ['vfat', 'ext4', 'swap'];
  t.partitions.forEach((p, i) => placeAt(disk, makeFilesystemFile(dir, `${name}.p${i + 1}`, kinds[i]!, p.size * 512), p.start));
  return disk;
}

/**
 * A 64 MiB MBR disk made by sfdisk: 1 FAT32 (0x0c, bootable), 2 Linux ext4 (0x83),
 * 3 extended (0x05) holding 5 ext2 (0x83), 6 swap (0x82), 7 ext3 (0x83).
 */
export function makeMbrDisk(dir: string, name = 'mbr.img'): string {
  const disk = join(dir, name);
  sh('truncate', ['-s', '64M', disk]);
  const script = [
    'label: dos',
    'label-id: 0x1234abcd',
    'start=2048, size=16384, type=c, bootable',
    'start=18432, size=20480, type=83',
    'start=38912, type=5',
    'size=8192, type=83',
    'size=8192, type=82',
    'type=83',
  ].join('\n');
  sh('sfdisk', ['-q', disk], { input: `${script}\n` });
  const t = sfdiskJson(disk);
  const kinds: Record<number, FsKind> = { 1: 'vfat', 2: 'ext4', 5: 'ext2', 6: 'swap', 7: 'ext3' };
  for (const p of t.partitions) {
    const kind = kinds[nodeIndex(p.node)];
    if (kind !== undefined) placeAt(disk, makeFilesystemFile(dir, `${name}.p${nodeIndex(p.node)}`, kind, p.size * 512), p.start);
  }
  return disk;
}

export function readBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(path));
}
