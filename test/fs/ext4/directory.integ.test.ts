/**
 * The directory encoders on real blocks: for every block of every directory of images made
 * by mkfs.ext4 -d and indexed by e2fsck -fyD (htree roots, interior nodes and leaves; linear
 * blocks; lost+found's empty blocks), encode(decode(bytes)) == bytes, for 1 KiB blocks with
 * metadata_csum, 4 KiB without it and without filetype, and 64 KiB blocks without it.
 */
import { spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { EXT4_INDEX_FL } from '../../../src/fs/ext4/constants.js';
import { decodeDirBlockRecords, decodeDxNode, decodeDxRoot, encodeDirBlock, encodeDxNode, encodeDxRoot } from '../../../src/fs/ext4/directory.js';
import { dirFormat } from '../../../src/fs/ext4/dirWriter.js';
import { BytesDevice } from '../../helpers/BytesDevice.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

const tmp = useTempDir('imgdedup-dirblocks-');

function blocksOf(image: string, path: string): number[] {
  const r = spawnSync('debugfs', ['-R', `blocks ${path}`, image], { encoding: 'latin1' });
  return r.stdout.trim().split(/\s+/).filter((s) => s !== '').map(Number);
}

describe.each([
  { label: '1k-csum', blockSize: 1024, features: 'metadata_csum', size: '16M', files: 3000 },
  { label: '4k-nocsum-nofiletype', blockSize: 4096, features: '^metadata_csum,^filetype', size: '64M', files: 3000 },
  { label: '64k-nocsum', blockSize: 65536, features: '^metadata_csum', size: '256M', files: 6000 },
])('directory blocks of a real filesystem ($label)', ({ label, blockSize, features, size, files }) => {
  it('re-encode to the same bytes', async () => {
    const dir = join(tmp(), label);
    const root = join(dir, 'root');
    mkdirSync(join(root, 'big'), { recursive: true });
    mkdirSync(join(root, 'small'));
    writeFileSync(join(root, 't'), 'x');
    for (let i = 0; i < files; i++) linkSync(join(root, 't'), join(root, 'big', `file-${i}-${'n'.repeat(i % 50)}`));
    for (let i = 0; i < 5; i++) linkSync(join(root, 't'), join(root, 'small', `s${i}`));
    const image = join(dir, 'fs.img');
    sh('mkfs.ext4', ['-q', '-F', '-b', String(blockSize), '-O', features, '-d', root, image, size]);
    const fsck = spawnSync('e2fsck', ['-fyD', image], { env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    expect(fsck.status === 0 || fsck.status === 1, fsck.stdout?.toString()).toBe(true);

    const bytes = readFileSync(image);
    const ctx = { file: image, verifyChecksums: 'error' as const, diagnostics: [] };
    const fs = await Ext4Fs.open(new BytesDevice(bytes), ctx);
    const counts = { root: 0, node: 0, leaf: 0 };
    for (const path of ['/', '/big', '/small', '/lost+found']) {
      const ino = Number(/Inode: (\d+)/.exec(spawnSync('debugfs', ['-R', `stat ${path}`, image], { encoding: 'latin1' }).stdout)![1]);
      const inode = await fs.readInode(ino);
      const fmt = dirFormat(fs.superblock, inode);
      const pblks = blocksOf(image, path);
      const block = (lblk: number) => bytes.subarray(pblks[lblk]! * blockSize, (pblks[lblk]! + 1) * blockSize);
      const same = (a: Uint8Array, b: Uint8Array, what: string) => expect(Buffer.compare(a, b), `${path} ${what}`).toBe(0);
      const leafOpts = { filetype: fmt.filetype, metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, inodesCount: fmt.inodesCount };
      const leaf = (lblk: number) => {
        same(encodeDirBlock(decodeDirBlockRecords(block(lblk), ctx, 'leaf', 0, leafOpts, blockSize), fmt, blockSize), block(lblk), `leaf ${lblk}`);
        counts.leaf++;
      };
      if ((inode.i_flags & EXT4_INDEX_FL) === 0) {
        pblks.forEach((_, lblk) => leaf(lblk));
        continue;
      }
      const dxOpts = { metadataCsum: fmt.metadataCsum, inodeCsumSeed: fmt.csumSeed, largedir: fmt.largedir, dirBlocks: pblks.length };
      const r = decodeDxRoot(block(0), ctx, 'root', 0, blockSize, dxOpts);
      same(encodeDxRoot(r, fmt, blockSize), block(0), 'root');
      counts.root++;
      let level = [...r.node.blocks];
      for (let l = 0; l < r.info.indirect_levels; l++) {
        const below: number[] = [];
        for (const lblk of level) {
          const n = decodeDxNode(block(lblk), ctx, 'node', 0, blockSize, dxOpts);
          same(encodeDxNode(n, fmt, blockSize), block(lblk), `node ${lblk}`);
          counts.node++;
          below.push(...n.blocks);
        }
        level = below;
      }
      level.forEach(leaf);
    }
    expect(counts.root).toBeGreaterThan(0);
    if (blockSize === 1024) expect(counts.node).toBeGreaterThan(0);
    expect(counts.leaf).toBeGreaterThan(3);
  }, 60_000);
});
