/**
 * Mutation fuzzing of the qcow2 reader, backing chains and the qcow2 check, on
 * images made by qemu-img at test time (see harness.ts for the contract and knobs).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';
import { FUZZ_CASES, FUZZ_SEED, describeFailures, fuzzImage, qcow2Regions } from './harness.js';
import { useCasePool } from './pool.js';

const tmp = useTempDir('imgdedup-fuzz-qcow2-');
const pool = useCasePool();

interface Seed {
  name: string;
  /** The seed image that is mutated. */
  file: string;
  /** The file opened (differs from the mutated one when a backing file is mutated). */
  open?: string;
  /** Where the mutated copy is written. */
  target: string;
}
const seeds: Seed[] = [];

function create(name: string, opts: string[], size: string, writes: string[]): string {
  const f = join(tmp(), name);
  qemuImg('create', '-q', '-f', 'qcow2', ...(opts.length ? ['-o', opts.join(',')] : []), f, size);
  if (writes.length) qemuIo(f, writes);
  return f;
}

beforeAll(() => {
  const d = tmp();
  const w = ['write -P 1 0 96k', 'write -P 2 1M 64k', 'write -z 2M 64k', 'write -P 3 3M 8k'];
  const plain = create('plain.qcow2', [], '4M', w);
  seeds.push({ name: 'plain', file: plain, target: join(d, 'm-plain.qcow2') });
  const v2 = create('v2.qcow2', ['compat=0.10', 'cluster_size=4096'], '4M', w);
  seeds.push({ name: 'compat 0.10, 4 KiB clusters', file: v2, target: join(d, 'm-v2.qcow2') });
  const extl2 = create('extl2.qcow2', ['extended_l2=on', 'cluster_size=32k'], '4M', ['write -P 1 0 5k', 'write -P 2 100k 2k', 'write -z 1M 8k']);
  seeds.push({ name: 'extended L2', file: extl2, target: join(d, 'm-extl2.qcow2') });
  for (const type of ['zlib', 'zstd']) {
    const c = join(d, `comp-${type}.qcow2`);
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type},cluster_size=4096`, plain, c);
    seeds.push({ name: `compressed ${type}`, file: c, target: join(d, `m-comp-${type}.qcow2`) });
  }
  const snap = create('snap.qcow2', ['cluster_size=4096', 'refcount_bits=8'], '4M', w);
  qemuImg('snapshot', '-c', 's1', snap);
  qemuIo(snap, ['write -P 9 0 8k']);
  qemuImg('bitmap', '--add', snap, 'bm0');
  qemuIo(snap, ['write -P 8 64k 8k']);
  seeds.push({ name: 'snapshots and bitmap', file: snap, target: join(d, 'm-snap.qcow2') });
  const r64 = create('r64.qcow2', ['refcount_bits=64', 'cluster_size=512'], '1M', ['write -P 1 0 20k', 'write -P 2 512k 1k']);
  seeds.push({ name: 'refcount_bits=64, 512 B clusters', file: r64, target: join(d, 'm-r64.qcow2') });
  // Chains: a mutated overlay over an intact base, and an intact overlay over a mutated base.
  const base = create('base.qcow2', [], '4M', w);
  const over = join(d, 'm-overlay.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', over);
  qemuIo(over, ['write -P 7 64k 64k']);
  const overSeed = join(d, 'overlay-seed.qcow2');
  copyFileSync(over, overSeed);
  seeds.push({ name: 'chain: mutated overlay', file: overSeed, target: over });
  const over2 = join(d, 'overlay2.qcow2');
  copyFileSync(base, join(d, 'm-base.qcow2'));
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'm-base.qcow2', '-F', 'qcow2', over2);
  qemuIo(over2, ['write -P 6 128k 4k']);
  seeds.push({ name: 'chain: mutated base', file: base, target: join(d, 'm-base.qcow2'), open: over2 });
});

describe('qcow2 mutation fuzzing: only ImgdedupErrors, bounded time and memory', () => {
  it.each([0, 1, 2, 3, 4, 5, 6, 7, 8])('seed image %i', async (i) => {
    const s = seeds[i]!;
    const r = await fuzzImage({ name: s.name, pool, seedImage: s.file, target: s.target, ...(s.open ? { open: s.open } : {}), regions: qcow2Regions(s.file), cases: FUZZ_CASES, seed: FUZZ_SEED + i * 7919 });
    expect(r.failures, describeFailures(s.name, r.failures)).toEqual([]);
    // The mutations must reach past the header: some cases must still open and walk.
    if (process.env.FUZZ_REPLAY === undefined) expect(r.outcomes.ok ?? 0, JSON.stringify(r.outcomes)).toBeGreaterThan(0);
  });
});
