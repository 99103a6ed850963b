/**
 * A seeded, reproducible mutation fuzzer for the image parsers. Seed images are made
 * at test time by qemu-img/sgdisk/sfdisk; each case mutates one copy (bit flips,
 * boundary bytes, u32/u64 field sets, entry swaps, truncation) inside the regions
 * that hold metadata, then runs open + allocation walks + reads + check + partition
 * parsing. Every case must end in success or an ImgdedupError that is not an
 * InternalError, within a time bound and without unbounded memory growth.
 *
 * FUZZ_CASES (cases per seed image), FUZZ_SEED (base seed) and FUZZ_CASE_MS
 * (per-case time bound) configure a run; a failure prints the case's seed, and
 * FUZZ_REPLAY=<seed> runs just that case.
 */
import { openSync, readSync, closeSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { ImgdedupError, InternalError } from '../../src/errors.js';
import { openChain } from '../../src/diskimage/openChain.js';
import { checkImage } from '../../src/diskimage/checkImage.js';
import { readPartitionTable } from '../../src/diskimage/partition/readPartitionTable.js';
import { detectFilesystem } from '../../src/diskimage/detectFilesystem.js';

export const FUZZ_CASES = Number(process.env.FUZZ_CASES ?? 250);
export const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
export const CASE_MS = Number(process.env.FUZZ_CASE_MS ?? 2000);

/**
 * The clock CASE_MS is measured on: this process's CPU time, in ms. A loop in a parser
 * burns CPU, while a machine busy with other work only stretches wall time, so the bound
 * catches the one without flaking on the other. (A wait that never ends is vitest's timeout.)
 */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
/** Growth allowed over the baseline, in bytes. */
export const MEMORY_LIMIT = 512 * 1024 * 1024;

import { mulberry32 } from '../../fixtures/prng.mjs';

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

/** Runs every reader on `path`: chain open, allocation walk, reads, check of each layer, partitions. */
export async function exercise(path: string, rnd: () => number, checkFiles: readonly string[] = [path]): Promise<void> {
  try {
    const chain = await openChain(path, { maxDepth: 8 });
    try {
      const dev = chain.device;
      let n = 0;
      for await (const e of dev.allocation()) {
        if (e.length <= 0) throw new Error(`empty extent at ${e.offset}`);
        if (++n > 200_000) break;
      }
      for (const layer of chain.layers) for await (const _e of layer.allocation()) if (++n > 400_000) break;
      const len = Math.min(dev.size, 256 * 1024);
      if (len > 0) await dev.read(0, len);
      for (let i = 0; i < 3 && dev.size > 0; i++) {
        const off = Math.floor(rnd() * dev.size);
        await dev.read(off, Math.min(65536, dev.size - off));
      }
      const table = await readPartitionTable(dev, { file: path });
      for (const p of table.partitions.slice(0, 8)) await detectFilesystem(p.device());
    } finally {
      await chain.close();
    }
  } finally {
    // The check reads the image independently of the reader; it must be as robust.
    for (const f of checkFiles) await checkImage(f).catch(rethrowUnlessExpected);
  }
}

function rethrowUnlessExpected(err: unknown): void {
  if (!(err instanceof ImgdedupError) || err instanceof InternalError) throw err;
}

export interface FuzzFailure {
  readonly caseIndex: number;
  readonly seed: number;
  readonly mutations: readonly string[];
  readonly error: string;
}

/** Runs `cases` mutations of `seedImage`, writing each to `target` (which `open` names). */
export async function fuzzImage(options: {
  name: string;
  seedImage: string;
  target: string;
  open?: string;
  regions: readonly Region[];
  cases: number;
  seed: number;
  /** Replaces the generic byte-level `mutate` (e.g. a format-aware mutator). */
  mutator?: (buf: Buffer, regions: readonly Region[], rnd: () => number) => { bytes: Buffer; done: string[] };
}): Promise<{ failures: FuzzFailure[]; maxMs: number; maxGrowth: number; outcomes: Record<string, number> }> {
  const pristine = readFileSync(options.seedImage);
  const failures: FuzzFailure[] = [];
  const base = process.memoryUsage();
  let maxMs = 0;
  let maxGrowth = 0;
  const outcomes: Record<string, number> = {};
  const replay = process.env.FUZZ_REPLAY !== undefined ? Number(process.env.FUZZ_REPLAY) : undefined;
  const cases = replay !== undefined ? 1 : options.cases;
  for (let i = 0; i < cases; i++) {
    const seed = replay ?? (options.seed + i * 0x9e3779b1) >>> 0;
    /** Runs the case from its seed; returns its outcome, duration and mutations. */
    const runOnce = async (): Promise<{ outcome: string; ms: number; done: string[]; failure?: string }> => {
      const rnd = mulberry32(seed);
      const { bytes, done } = (options.mutator ?? mutate)(Buffer.from(pristine), options.regions, rnd);
      writeFileSync(options.target, bytes);
      const t0 = cpuMs();
      try {
        await exercise(options.open ?? options.target, rnd, [...new Set([options.open ?? options.target, options.target])]);
        return { outcome: 'ok', ms: cpuMs() - t0, done };
      } catch (err) {
        const ms = cpuMs() - t0;
        if (err instanceof ImgdedupError && !(err instanceof InternalError)) return { outcome: err.code, ms, done };
        return { outcome: 'FAIL', ms, done, failure: err instanceof Error ? (err.stack ?? err.message) : String(err) };
      }
    };
    let r = await runOnce();
    if (r.ms > CASE_MS && r.failure === undefined) {
      // A GC pause can stall one case: time it again before calling it slow.
      const again = await runOnce();
      if (again.ms < r.ms) r = again;
    }
    const { outcome, ms, done } = r;
    if (r.failure !== undefined) failures.push({ caseIndex: i, seed, mutations: done, error: r.failure });
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    maxMs = Math.max(maxMs, ms);
    if (ms > CASE_MS) failures.push({ caseIndex: i, seed, mutations: done, error: `took ${ms.toFixed(0)} ms of CPU (limit ${CASE_MS}), twice` });
    const m = process.memoryUsage();
    const growth = Math.max(m.rss - base.rss, m.arrayBuffers - base.arrayBuffers);
    maxGrowth = Math.max(maxGrowth, growth);
    if (growth > MEMORY_LIMIT) failures.push({ caseIndex: i, seed, mutations: done, error: `memory grew by ${growth} bytes` });
  }
  return { failures, maxMs, maxGrowth, outcomes };
}

/** A readable report of failures, with what is needed to replay each. */
export function describeFailures(name: string, failures: readonly FuzzFailure[]): string {
  return failures
    .slice(0, 5)
    .map((f) => `[${name}] case ${f.caseIndex} (seed 0x${f.seed.toString(16)}; replay with FUZZ_REPLAY=<seed>): ${f.mutations.join('; ')}\n${f.error}`)
    .join('\n\n');
}

/** Reads the first bytes of a file (for sanity checks of seeds). */
export function head(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(n);
  readSync(fd, b, 0, n, 0);
  closeSync(fd);
  return b;
}
