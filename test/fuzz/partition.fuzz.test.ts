/**
 * Mutation fuzzing of partition-table parsing (GPT, MBR with extended partitions)
 * and filesystem detection, on raw disks made by sgdisk/sfdisk/mkfs at test time,
 * read directly and through a qcow2 wrapper (see harness.ts for the contract).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuImg } from '../helpers/qemu.js';
import { sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { readPartitionTable } from '../../src/diskimage/partition/readPartitionTable.js';
import { openChain } from '../../src/diskimage/openChain.js';
import { FUZZ_CASES, FUZZ_SEED, describeFailures, fuzzImage, qcow2Regions, rawDiskRegions, type Region } from './harness.js';
import { useCasePool } from './pool.js';

const tmp = useTempDir('imgdedup-fuzz-part-');
const pool = useCasePool();
const seeds: { name: string; file: string; target: string; regions: Region[] }[] = [];

beforeAll(() => {
  const d = tmp();
  const gpt = join(d, 'gpt.raw');
  writeFileSync(gpt, Buffer.alloc(4 << 20));
  sh('sgdisk', ['-a', '8', '-n', '1:64:+1M', '-t', '1:ef00', '-n', '2:0:+1M', '-t', '2:8300', '-c', '2:root', gpt]);
  // A FAT filesystem in partition 1 so filesystem detection has something to find.
  sh('mkfs.vfat', ['-C', join(d, 'fat.img'), '1024']);
  sh('dd', [`if=${join(d, 'fat.img')}`, `of=${gpt}`, 'bs=512', 'seek=64', 'conv=notrunc', 'status=none']);
  seeds.push({ name: 'GPT raw', file: gpt, target: join(d, 'm-gpt.raw'), regions: rawDiskRegions(gpt) });
  const mbr = join(d, 'mbr.raw');
  writeFileSync(mbr, Buffer.alloc(4 << 20));
  sh('sfdisk', ['-q', mbr], { input: 'label: dos\nstart=64, size=512, type=83\nstart=1024, size=4096, type=5\nstart=1088, size=512, type=83\nstart=1664, size=512, type=c\n' });
  seeds.push({ name: 'MBR raw with logical partitions', file: mbr, target: join(d, 'm-mbr.raw'), regions: rawDiskRegions(mbr) });
  const gptQcow = join(d, 'gpt.qcow2');
  qemuImg('convert', '-O', 'qcow2', '-o', 'cluster_size=4096', gpt, gptQcow);
  seeds.push({ name: 'GPT in qcow2', file: gptQcow, target: join(d, 'm-gpt.qcow2'), regions: qcow2Regions(gptQcow) });
});

describe('partition mutation fuzzing: only ImgdedupErrors, bounded time and memory', () => {
  it('the seed disks parse as the tools made them', async () => {
    for (const [i, scheme, count] of [[0, 'gpt', 2], [1, 'mbr', 4]] as const) {
      const chain = await openChain(seeds[i]!.file);
      try {
        const t = await readPartitionTable(chain.device, { file: seeds[i]!.file });
        expect(t.scheme).toBe(scheme);
        expect(t.partitions.length).toBe(count);
      } finally {
        await chain.close();
      }
    }
  });

  it.each([0, 1, 2])('seed disk %i', async (i) => {
    const s = seeds[i]!;
    const r = await fuzzImage({ name: s.name, pool, seedImage: s.file, target: s.target, regions: s.regions, cases: FUZZ_CASES, seed: FUZZ_SEED + 104729 + i * 7919 });
    expect(r.failures, describeFailures(s.name, r.failures)).toEqual([]);
    if (process.env.FUZZ_REPLAY === undefined) expect(r.outcomes.ok ?? 0, JSON.stringify(r.outcomes)).toBeGreaterThan(0);
  });
});
