/**
 * A seeded, reproducible mutation fuzzer for the image parsers. Seed images are made
 * at test time by qemu-img/sgdisk/sfdisk; each case mutates one copy (bit flips,
 * boundary bytes, u32/u64 field sets, entry swaps, truncation) inside the regions
 * that hold metadata, then a pool worker (pool.ts) runs open + allocation walks +
 * reads + check + partition parsing on it (targets/image.ts). Every case must end in
 * success or an ImgdedupError that is not an InternalError, within the time bound and
 * the memory bounds, which the pool enforces by terminating the worker; a case over a
 * bound is a finding, never re-run.
 *
 * FUZZ_CASES (cases per seed image), FUZZ_SEED (base seed), FUZZ_CASE_MS (per-case
 * time), FUZZ_HEAP_MB (worker heap) and FUZZ_RSS_MB (RSS growth per case) configure a
 * run; FUZZ_VERBOSE=1 prints outcomes, times and memory per seed image. A finding
 * prints the case's seed and mutations; FUZZ_REPLAY=<seed> runs just that case.
 */
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { mulberry32 } from '../../fixtures/prng.mjs';
import type { CaseResult, CasePool } from './pool.js';

export const FUZZ_CASES = Number(process.env.FUZZ_CASES ?? 250);
export const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);

export { mulberry32 };

export interface Region {
  readonly name: string;
  readonly offset: number;
  readonly length: number;
}

/** Metadata regions of a qcow2 file, found by decoding the header directly (independent of src/). */
export function qcow2Regions(path: string): Region[] {
  const b = readFileSync(path);
  const cs = 2 ** b.readUInt32BE(20);
  const regions: Region[] = [{ name: 'header', offset: 0, length: Math.min(cs, 512) }];
  const l1 = Number(b.readBigUInt64BE(40));
  const l1Size = b.readUInt32BE(36);
  const reftable = Number(b.readBigUInt64BE(48));
  const reftableClusters = b.readUInt32BE(56);
  const snapshots = Number(b.readBigUInt64BE(64));
  if (l1Size > 0) regions.push({ name: 'l1', offset: l1, length: l1Size * 8 });
  regions.push({ name: 'reftable', offset: reftable, length: Math.min(reftableClusters * cs, 4096) });
  if (b.readUInt32BE(60) > 0) regions.push({ name: 'snapshots', offset: snapshots, length: 512 });
  for (let i = 0; i < l1Size; i++) {
    const l2 = Number(b.readBigUInt64BE(l1 + i * 8) & 0x00fffffffffffe00n);
    if (l2 !== 0 && l2 < b.length) regions.push({ name: `l2[${i}]`, offset: l2, length: Math.min(cs, 4096) });
  }
  const refblock = Number(b.readBigUInt64BE(reftable) & ~0x1ffn);
  if (refblock !== 0) regions.push({ name: 'refblock', offset: refblock, length: Math.min(cs, 4096) });
  return regions.filter((r) => r.offset + r.length <= b.length);
}

/** Partition-table regions of a raw disk: MBR/protective MBR, GPT header and entries, backup GPT. */
export function rawDiskRegions(path: string): Region[] {
  const size = statSync(path).size;
  return [
    { name: 'mbr', offset: 0, length: 512 },
    { name: 'gpt-header', offset: 512, length: 92 },
    { name: 'gpt-entries', offset: 1024, length: 512 },
    { name: 'backup-gpt', offset: size - 33 * 512, length: 33 * 512 },
    { name: 'ebr', offset: 0, length: Math.min(size, 1 << 20) },
  ];
}

const U32S = [0, 1, 0x1ff, 0x200, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 15, 16, 22, 64];
const U64S = [0n, 1n, 0x200n, 0x10000n, 1n << 53n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, 0x00fffffffffffe00n, 0xffffffffffffffffn, 0x7fffffffffffffffn];
const BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];

/** Applies 1-4 random mutations to `buf` (returns the possibly truncated buffer and what was done). */
export function mutate(buf: Buffer, regions: readonly Region[], rnd: () => number): { bytes: Buffer; done: string[] } {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const done: string[] = [];
  let bytes = buf;
  const n = 1 + Math.floor(rnd() * 4);
  for (let m = 0; m < n; m++) {
    const r = pick(regions);
    const at = (align: number) => r.offset + Math.floor((rnd() * Math.max(1, r.length - align + 1)) / align) * align;
    const op = Math.floor(rnd() * 7);
    if (op === 0) {
      const p = at(1);
      const bit = Math.floor(rnd() * 8);
      if (p < bytes.length) bytes[p] = bytes[p]! ^ (1 << bit);
      done.push(`flip ${r.name}@${p}.${bit}`);
    } else if (op === 1) {
      const p = at(1);
      const v = pick(BYTES);
      if (p < bytes.length) bytes[p] = v;
      done.push(`byte ${r.name}@${p}=${v}`);
    } else if (op === 2) {
      const p = at(4);
      const v = rnd() < 0.2 ? Math.floor(rnd() * 2 ** 32) : pick(U32S);
      if (p + 4 <= bytes.length) bytes.writeUInt32BE(v >>> 0, p);
      done.push(`u32 ${r.name}@${p}=${v}`);
    } else if (op === 3) {
      const p = at(8);
      const v = rnd() < 0.3 ? BigInt(Math.floor(rnd() * bytes.length)) & ~0x1ffn : pick(U64S);
      if (p + 8 <= bytes.length) bytes.writeBigUInt64BE(v, p);
      done.push(`u64 ${r.name}@${p}=0x${v.toString(16)}`);
    } else if (op === 4) {
      const p = at(8);
      const q = at(8);
      if (p + 8 <= bytes.length && q + 8 <= bytes.length) {
        const t = Buffer.from(bytes.subarray(p, p + 8));
        bytes.copy(bytes, p, q, q + 8);
        t.copy(bytes, q);
      }
      done.push(`swap ${r.name}@${p}<->${q}`);
    } else if (op === 5) {
      const p = at(8);
      const v = rnd() < 0.5 ? 0xffffffffffffffffn : BigInt.asUintN(64, BigInt(Math.floor(rnd() * 2 ** 32)) << 20n);
      if (p + 8 <= bytes.length) bytes.writeBigUInt64BE(v, p);
      done.push(`u64le-ish ${r.name}@${p}=0x${v.toString(16)}`);
    } else {
      // Truncation is rarer: most cases should exercise deeper structures.
      if (rnd() < 0.4) {
        const len = rnd() < 0.5 ? Math.floor(rnd() * bytes.length) : r.offset + Math.floor(rnd() * r.length);
        bytes = bytes.subarray(0, Math.min(len, bytes.length));
        done.push(`truncate ${bytes.length}`);
      } else {
        const p = at(1);
        if (p < bytes.length) bytes[p] = Math.floor(rnd() * 256);
        done.push(`rand ${r.name}@${p}`);
      }
    }
  }
  return { bytes, done };
}

export interface FuzzFailure {
  readonly caseIndex: number;
  readonly seed: number;
  readonly mutations: readonly string[];
  readonly error: string;
}

/** Outcomes, findings and the worst time and memory of a run of cases. */
export class Tally {
  readonly failures: FuzzFailure[] = [];
  readonly outcomes: Record<string, number> = {};
  cases = 0;
  maxMs = 0;
  maxRssGrowth = 0;
  maxHeap = 0;
  /** Cases that got past open into the structures (the target's `entries` > 0). */
  deepCases = 0;

  /** Counts one case under `prefix + outcome`; a finding is kept with what replays it. */
  add(caseIndex: number, seed: number, mutations: readonly string[], r: CaseResult, prefix = ''): void {
    this.cases++;
    const key = prefix + r.outcome;
    this.outcomes[key] = (this.outcomes[key] ?? 0) + 1;
    if (r.failure !== undefined) this.failures.push({ caseIndex, seed, mutations, error: `${r.outcome}: ${r.failure}` });
    if (r.entries > 0) this.deepCases++;
    this.maxMs = Math.max(this.maxMs, r.ms);
    this.maxRssGrowth = Math.max(this.maxRssGrowth, r.rssGrowth);
    this.maxHeap = Math.max(this.maxHeap, r.heapBytes);
  }

  /** One line for FUZZ_VERBOSE runs. */
  summary(name: string, elapsedMs: number, pool: CasePool): string {
    const mib = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
    return `${name}: ${this.cases} cases in ${(elapsedMs / 1000).toFixed(1)} s ${JSON.stringify(this.outcomes)} findings ${this.failures.length}, max ${this.maxMs.toFixed(0)} ms, RSS growth <= ${mib(this.maxRssGrowth)}, worker heap <= ${mib(this.maxHeap)}, workers started ${pool.spawned}`;
  }
}

/** The seeds of a run: `cases` derived from `base`, or the one FUZZ_REPLAY names. */
export function caseSeeds(base: number, cases: number): number[] {
  const replay = process.env.FUZZ_REPLAY;
  if (replay !== undefined) return [Number(replay) >>> 0];
  return Array.from({ length: cases }, (_, i) => (base + i * 0x9e3779b1) >>> 0);
}

/** The seed of a case's reads (random offsets), apart from the mutation's draws. */
export function exerciseSeed(seed: number): number {
  return (seed ^ 0x85ebca6b) >>> 0;
}

/**
 * Runs `cases` mutations of `seedImage` in `pool`, each written to `target` (which
 * `open` names, when it differs: a backing file or an extent file is mutated).
 */
export async function fuzzImage(options: {
  name: string;
  pool: CasePool;
  seedImage: string;
  target: string;
  open?: string;
  regions: readonly Region[];
  cases: number;
  seed: number;
  /** Replaces the generic byte-level `mutate` (e.g. a format-aware mutator). */
  mutator?: (buf: Buffer, regions: readonly Region[], rnd: () => number) => { bytes: Buffer; done: string[] };
}): Promise<Tally> {
  const pristine = readFileSync(options.seedImage);
  const open = options.open ?? options.target;
  const checkFiles = [...new Set([open, options.target])];
  const tally = new Tally();
  const t0 = performance.now();
  for (const [i, seed] of caseSeeds(options.seed, options.cases).entries()) {
    const { bytes, done } = (options.mutator ?? mutate)(Buffer.from(pristine), options.regions, mulberry32(seed));
    writeFileSync(options.target, bytes);
    tally.add(i, seed, done, await options.pool.run('image', { open, checkFiles, seed: exerciseSeed(seed) }));
  }
  if (process.env.FUZZ_VERBOSE) console.log(tally.summary(options.name, performance.now() - t0, options.pool));
  return tally;
}

/** A readable report of failures, with what is needed to replay each. */
export function describeFailures(name: string, failures: readonly FuzzFailure[]): string {
  return failures
    .slice(0, 5)
    .map((f) => `[${name}] case ${f.caseIndex} (replay with FUZZ_REPLAY=0x${f.seed.toString(16)}): ${f.mutations.join('; ')}\n${f.error}`)
    .join('\n\n');
}
