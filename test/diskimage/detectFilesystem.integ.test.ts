/** detectFilesystem against blkid -p on filesystems made by mkfs.*, mkswap, and on partitions of a GPT disk. */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { detectFilesystem } from '../../src/diskimage/detectFilesystem.js';
import { openChain } from '../../src/diskimage/openChain.js';
import { readPartitionTable } from '../../src/diskimage/partition/readPartitionTable.js';
import { useTempDir } from '../helpers/tmp.js';
import { sh } from '../helpers/run.js';
import { blkidFilesystem, makeFilesystemFile, makeGptDisk, makeMbrDisk, type FsKind } from './partition/fixtures.js';

const tmp = useTempDir('imgdedup-detectfs-');

async function detectFile(path: string): Promise<string | undefined> {
  const chain = await openChain(path);
  try {
    return await detectFilesystem(chain.device);
  } finally {
    await chain.close();
  }
}

describe('detectFilesystem agrees with blkid -p', () => {
  it.each<[FsKind, number, string]>([
    ['vfat', 40 << 20, 'fat32'],
    ['fat16', 16 << 20, 'fat16'],
    ['fat12', 2 << 20, 'fat12'],
    ['ext2', 8 << 20, 'ext2'],
    ['ext3', 8 << 20, 'ext3'],
    ['ext4', 8 << 20, 'ext4'],
    ['swap', 4 << 20, 'swap'],
  ])('%s made by mkfs (%i bytes) is %s', async (kind, bytes, expected) => {
    const path = makeFilesystemFile(tmp(), `${kind}.img`, kind, bytes);
    const oracle = blkidFilesystem(path);
    expect(oracle).toBe(expected);
    expect(await detectFile(path)).toBe(oracle);
  });

  it('ext4 without a journal is still ext4 (extents), like blkid', async () => {
    const path = join(tmp(), 'ext4nj.img');
    sh('truncate', ['-s', '8M', path]);
    sh('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', path]);
    expect(blkidFilesystem(path)).toBe('ext4');
    expect(await detectFile(path)).toBe('ext4');
  });

  it('blank disk: nothing (blkid finds nothing either)', async () => {
    const path = join(tmp(), 'zero.img');
    sh('truncate', ['-s', '1M', path]);
    expect(blkidFilesystem(path)).toBeUndefined();
    expect(await detectFile(path)).toBeUndefined();
  });

  it.each(['gpt', 'mbr'])('every partition of the %s disk, as blkid --offset --size sees it', async (scheme) => {
    const disk = scheme === 'gpt' ? makeGptDisk(tmp()) : makeMbrDisk(tmp());
    const chain = await openChain(disk);
    try {
      const t = await readPartitionTable(chain.device, { file: disk });
      const ours: (string | undefined)[] = [];
      const theirs: (string | undefined)[] = [];
      for (const p of t.partitions.filter((q) => q.kind !== 'extended')) {
        ours.push(await detectFilesystem(p.device()));
        theirs.push(blkidFilesystem(disk, { offset: p.startBytes, size: p.lengthBytes }));
      }
      expect(ours).toEqual(theirs);
      expect(ours).toEqual(scheme === 'gpt' ? ['fat32', 'ext4', 'swap'] : ['fat32', 'ext4', 'ext2', 'swap', 'ext3']);
    } finally {
      await chain.close();
    }
  });
});
