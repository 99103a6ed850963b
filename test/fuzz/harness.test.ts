/**
 * The fuzzer itself: reproducible from its seed, mutating inside the given regions, and
 * its case pool stops and reports what a parser bug looks like at run time (a hang, an
 * unbounded allocation, an untyped error) using test-only targets (targets/selfTest.ts).
 */
import { describe, expect, it } from 'vitest';
import { Tally, describeFailures, mulberry32, mutate } from './harness.js';
import { useCasePool } from './pool.js';

describe('fuzz harness', () => {
  it('mulberry32 is deterministic per seed and differs across seeds', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('mutate replays exactly from the same seed and touches only its regions (or truncates)', () => {
    const pristine = Buffer.alloc(8192, 0x33);
    const regions = [{ name: 'r', offset: 1024, length: 512 }];
    for (let seed = 0; seed < 200; seed++) {
      const m1 = mutate(Buffer.from(pristine), regions, mulberry32(seed));
      const m2 = mutate(Buffer.from(pristine), regions, mulberry32(seed));
      expect(m2.done).toEqual(m1.done);
      expect(Buffer.compare(m1.bytes, m2.bytes)).toBe(0);
      const outside = [...m1.bytes].findIndex((v, i) => (i < 1024 || i >= 1536) && v !== 0x33);
      expect(outside, `seed ${seed}: ${m1.done.join('; ')}`).toBe(-1);
    }
  });
});

describe('fuzz case pool: every case ends, within its bounds, or is a reported finding', () => {
  // Tight bounds so the faulty targets are caught fast; the real fuzzers use BOUNDS.
  const bounds = { caseMs: 400, heapMb: 64, rssMb: 160 };
  const pool = useCasePool(bounds);
  // For the memory targets: a time bound a loaded machine cannot reach first, so only memory stops them.
  const memoryPool = useCasePool({ ...bounds, caseMs: 60_000 });

  it('runs many cases in one worker and passes typed errors through as outcomes', async () => {
    const before = pool.spawned;
    for (let i = 1; i <= 50; i++) expect(await pool.run('self:ok', { entries: i })).toMatchObject({ outcome: 'ok', entries: i });
    const typed = await pool.run('self:throw', { typed: true });
    expect(typed.outcome).toBe('CORRUPT_IMAGE');
    expect(typed.failure).toBeUndefined();
    expect(pool.spawned - before).toBeLessThanOrEqual(1);
  });

  it('cases handed over together run one after another, each with its own outcome', async () => {
    await pool.run('self:ok', { entries: 0 });
    const before = pool.spawned;
    const rs = await Promise.all([pool.run('self:ok', { entries: 1 }), pool.run('self:throw', { typed: true }), pool.run('self:ok', { entries: 2 })]);
    expect(rs.map((r) => [r.outcome, r.entries])).toEqual([['ok', 1], ['CORRUPT_IMAGE', 0], ['ok', 2]]);
    expect(pool.spawned).toBe(before);
  });

  it('an untyped error is a FAIL finding with its stack, pointing into the TypeScript source', async () => {
    const r = await pool.run('self:throw', { typed: false });
    expect(r.outcome).toBe('FAIL');
    expect(r.failure).toMatch(/TypeError: an untyped error from a parser\n\s+at .*selfTest\.ts:\d+/);
  });

  it('a rejection the case left unhandled is a FAIL finding of that case', async () => {
    const r = await pool.run('self:stray', {});
    expect(r.outcome).toBe('FAIL');
    expect(r.failure).toMatch(/unhandled rejection: RangeError: a dropped promise rejected/);
    expect((await pool.run('self:ok', { entries: 1 })).outcome).toBe('ok');
  });

  it.each(['self:spin', 'self:stall'] as const)('a hang (%s) is stopped at the time bound, once, and the pool goes on with a new worker', async (target) => {
    const before = pool.spawned;
    const r = await pool.run(target, {});
    expect(r.outcome).toBe('TIMEOUT');
    expect(r.failure).toMatch(/still running after 400 ms/);
    expect(r.ms).toBeGreaterThanOrEqual(bounds.caseMs - 1);
    expect(r.ms).toBeLessThan(bounds.caseMs + 3000);
    expect(await pool.run('self:ok', { entries: 3 })).toMatchObject({ outcome: 'ok', entries: 3 });
    expect(pool.spawned - before).toBe(1);
  });

  it('unbounded JS heap growth is stopped by the worker heap limit (OUT_OF_MEMORY)', async () => {
    const r = await memoryPool.run('self:heap', {});
    expect(r.outcome).toBe('OUT_OF_MEMORY');
    expect(r.failure).toMatch(/memory limit.*heap limit 64 MiB/);
    expect(r.ms).toBeLessThan(10_000);
    expect((await memoryPool.run('self:ok', { entries: 1 })).outcome).toBe('ok');
  });

  it('unbounded growth outside the JS heap (buffers) is stopped by the RSS bound (MEMORY), near the bound', async () => {
    const r = await memoryPool.run('self:buffers', {});
    expect(r.outcome).toBe('MEMORY');
    expect(r.failure).toMatch(/process RSS grew by \d+ MiB during the case \(limit 160 MiB\)/);
    expect(r.rssGrowth).toBeGreaterThan(bounds.rssMb * 2 ** 20);
    expect(r.rssGrowth).toBeLessThan(4 * bounds.rssMb * 2 ** 20);
    expect(r.ms).toBeLessThan(10_000);
    expect((await memoryPool.run('self:ok', { entries: 1 })).outcome).toBe('ok');
  });

  it('a finding is reported with the seed and mutations that replay it', async () => {
    const tally = new Tally();
    tally.add(0, 0x1234, ['policy error'], await pool.run('self:ok', { entries: 2 }));
    tally.add(1, 0xbeef, ['u32 inode[12]@4096=7', 'flip gdt@33.1'], await pool.run('self:spin', {}));
    expect(tally.outcomes).toEqual({ ok: 1, TIMEOUT: 1 });
    expect(tally.deepCases).toBe(1);
    expect(tally.failures).toHaveLength(1);
    const report = describeFailures('self', tally.failures);
    expect(report).toContain('[self] case 1 (replay with FUZZ_REPLAY=0xbeef): u32 inode[12]@4096=7; flip gdt@33.1');
    expect(report).toContain('TIMEOUT: still running after 400 ms');
  });
});
