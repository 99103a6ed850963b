/**
 * Property-based tests of the ext4 writer (issue 9, "How it is proven"): random sequences
 * of create/replace/delete/rename/link/chmod/chown/times/xattr/relocate/point operations,
 * run by the writer and by a model tree in lockstep, on mkfs.ext4 variants (1 KiB and
 * 4 KiB blocks, 64bit and metadata_csum on and off, inline_data, an htree directory made
 * by e2fsck -D, a nearly full filesystem). After each sequence: the strict e2fsck oracle
 * holds on the output, debugfs (rdump, ls -p, stat, ea_get) shows exactly the model, and
 * the input image is unchanged. On the nearly full filesystem NO_SPACE is an expected
 * outcome: it must be a typed error met only when space really runs out, and everything
 * before it, replayed and committed, must hold. An ext3-style filesystem is refused by name.
 *
 * CI runs a seeded share (a few sequences per variant); HEAVY=1 runs thousands
 * (PROP_SEED=n picks another seed). Sequences that failed once are kept below as plain
 * regression tests, in the concrete form fast-check shrank them to.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, linkSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { seededBytes } from '../../../fixtures/prng.mjs';
import { ImgdedupError } from '../../../src/errors.js';
import { strictFsck } from '../../helpers/e2fsck.js';
import { sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { writeImage, WRITER_NOW } from './writerHarness.js';
import { comparable, fileBytes as fileBytesFor, InexpressibleOp, joinP, oracleViews, runOp, TreeModel, type FileSpec, type Op, type OpAttrs, type OpFacts } from './writerModel.js';

const HEAVY = process.env.HEAVY === '1';
const SEED = Number(process.env.PROP_SEED ?? 20261126);
/** Sequences per variant: a seeded share in CI, thousands in all with HEAVY=1. */
const RUNS = Number(process.env.PROP_RUNS ?? (HEAVY ? 400 : 6));
const tmp = useTempDir('imgdedup-writer-prop-');
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

interface Variant {
  readonly name: string;
  readonly args: readonly string[];
  readonly sizeMiB: number;
  /** Empty files in /big (e2fsck -fyD indexes it when `index`). */
  readonly big: number;
  readonly index?: boolean;
  /** A filler file leaves only about this many blocks free. */
  readonly nearlyFull?: number;
}

const VARIANTS: readonly Variant[] = [
  { name: '4k', args: ['-b', '4096', '-N', '2048'], sizeMiB: 32, big: 150 },
  { name: '1k', args: ['-b', '1024', '-N', '2048'], sizeMiB: 16, big: 150 },
  { name: '4k ^64bit ^metadata_csum', args: ['-b', '4096', '-O', '^64bit,^metadata_csum', '-N', '2048'], sizeMiB: 32, big: 150 },
  { name: '1k ^metadata_csum', args: ['-b', '1024', '-O', '^metadata_csum', '-N', '2048'], sizeMiB: 16, big: 150 },
  { name: 'inline_data', args: ['-b', '4096', '-O', 'inline_data', '-N', '2048'], sizeMiB: 32, big: 150 },
  { name: '1k htree', args: ['-b', '1024', '-N', '4096'], sizeMiB: 24, big: 2000, index: true },
  { name: '1k nearly full', args: ['-b', '1024', '-N', '256'], sizeMiB: 8, big: 40, nearlyFull: 120 },
];

/** The base tree: small and multi-block files, a sparse file, symlinks, hard links, a fifo, nested and big directories. */
function buildTree(dir: string, big: number): void {
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'bin'));
  mkdirSync(join(dir, 'lib'));
  mkdirSync(join(dir, 'd1/d2/d3'), { recursive: true });
  mkdirSync(join(dir, 'big'));
  writeFileSync(join(dir, 'etc/hostname'), 'golden\n');
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n'.repeat(50));
  writeFileSync(join(dir, 'bin/tool'), seededBytes(100_000, 7));
  const sparse = Buffer.alloc(300_000);
  seededBytes(5000, 8).copy(sparse, 150_000);
  seededBytes(3000, 9).copy(sparse, 297_000);
  writeFileSync(join(dir, 'lib/sparse'), sparse);
  writeFileSync(join(dir, 'lib/empty'), '');
  writeFileSync(join(dir, 'd1/d2/d3/leaf'), 'leaf\n');
  writeFileSync(join(dir, 'hard1'), 'two names\n');
  linkSync(join(dir, 'hard1'), join(dir, 'd1/hard2'));
  symlinkSync('etc/hostname', join(dir, 'lnk'));
  symlinkSync('target/'.repeat(15), join(dir, 'slow'));
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  for (let i = 0; i < big; i++) writeFileSync(join(dir, 'big', `e${i}-${'k'.repeat(i % 40)}`), '');
  for (const p of ['etc/hostname', 'etc/passwd', 'bin/tool', 'lib/sparse', 'hard1', 'd1/d2/d3/leaf']) utimesSync(join(dir, p), 1_500_000_000, 1_500_000_000);
}

function makeBase(v: Variant, image: string, work: string): void {
  const src = join(work, 'src');
  buildTree(src, v.big);
  makeExt4Image(image, src, { args: [...v.args], sizeMiB: v.sizeMiB });
  if (v.index) execFileSync('e2fsck', ['-fyD', image], { stdio: 'ignore' });
  if (v.nearlyFull !== undefined) {
    const free = Number(/^Free blocks:\s+(\d+)/m.exec(sh('dumpe2fs', ['-h', image]))![1]);
    const bs = Number(v.args[v.args.indexOf('-b') + 1]);
    // Extent leaves of the filler take a few blocks more than its data.
    const filler = join(work, 'filler');
    writeFileSync(filler, seededBytes((free - v.nearlyFull - 8) * bs, 10));
    sh('debugfs', ['-w', '-R', `write ${filler} filler`, image]);
  }
  const fsck = strictFsck(image);
  if (!fsck.clean) throw new Error(`base image not clean:\n${fsck.output}`);
}

// ------------------------------------------------------------------ operation generators

const NAMES = ['a', 'b', 'c', 'd', 'e', 'x.y', '.hidden', `long-${'m'.repeat(90)}`, 'N'.repeat(255)];
const XATTR_NAMES = ['user.a', 'user.bb', 'trusted.t', 'security.s', `user.${'n'.repeat(20)}`];

const timeArb = fc.record({
  sec: fc.oneof(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 }), fc.integer({ min: 2 ** 31, max: 2 ** 33 })),
  nsec: fc.integer({ min: 0, max: 999_999_999 }),
});
const idArb = fc.oneof(fc.constantFrom(0, 1000), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
/** Up to 3 xattrs of up to 250 bytes always fit one 1 KiB block; values over ~100 bytes spill out of the inode. */
const xattrsArb = fc.uniqueArray(
  fc.tuple(
    fc.constantFrom(...XATTR_NAMES),
    fc.oneof(fc.uint8Array({ maxLength: 24 }), fc.uint8Array({ minLength: 100, maxLength: 250 })).map((b) => Buffer.from(b).toString('hex')),
  ),
  { selector: (x) => x[0], maxLength: 3 },
);
const attrsArb: fc.Arbitrary<OpAttrs> = fc
  .record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: idArb, gid: idArb, mtime: fc.option(timeArb, { nil: undefined }), atime: fc.option(timeArb, { nil: undefined }), xattrs: fc.option(xattrsArb, { nil: undefined }) })
  .map((a) => Object.fromEntries(Object.entries(a).filter(([, x]) => x !== undefined)) as unknown as OpAttrs);

type SizeClass = 'empty' | 'small' | 'blocks' | 'sparse' | 'mib';
/** File sizes; `mibWeight` (against 12) makes files of a few MiB more or less common. */
const fileArb = (mibWeight: number) => fc.record({
  // Unbiased: fast-check's bias in early runs (oneof favours its first arbitrary) would
  // leave out the rare class in a short CI run.
  cls: fc.noBias(fc.oneof({ arbitrary: fc.constantFrom<SizeClass>('empty', 'small', 'blocks', 'sparse'), weight: 12 }, { arbitrary: fc.constant<SizeClass>('mib'), weight: mibWeight })),
  n: fc.nat(),
  seed: fc.nat(),
  holes: fc.integer({ min: 1, max: 7 }),
});

/** An operation whose paths are picks (indices) resolved against the model when it runs. */
type Abstract =
  | { t: 'file'; dir: number; name: number; file: { cls: SizeClass; n: number; seed: number; holes: number }; attrs: OpAttrs }
  | { t: 'dir'; dir: number; name: number; attrs: OpAttrs }
  | { t: 'symlink'; dir: number; name: number; len: number; seed: number; attrs: OpAttrs }
  | { t: 'special'; dir: number; name: number; kind: 'fifo' | 'socket' | 'chardev' | 'blockdev'; major: number; minor: number; attrs: OpAttrs }
  | { t: 'remove'; path: number }
  | { t: 'link'; target: number; dir: number; name: number }
  | { t: 'rename'; from: number; dir: number; name: number }
  | { t: 'attrs'; path: number; attrs: OpAttrs }
  | { t: 'many'; dir: number; prefix: string; count: number }
  | { t: 'prune'; dir: number; every: number }
  | { t: 'relocate'; path: number; a: number; b: number }
  | { t: 'point'; path: number; from: number };

const pick = fc.nat();
const abstractArb = (mibWeight: number): fc.Arbitrary<Abstract> => fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('file' as const), dir: pick, name: pick, file: fileArb(mibWeight), attrs: attrsArb }), weight: 6 },
  { arbitrary: fc.record({ t: fc.constant('dir' as const), dir: pick, name: pick, attrs: attrsArb }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('symlink' as const), dir: pick, name: pick, len: fc.integer({ min: 1, max: 300 }), seed: fc.nat(), attrs: attrsArb }), weight: 2 },
  {
    arbitrary: fc.record({
      t: fc.constant('special' as const),
      dir: pick,
      name: pick,
      kind: fc.constantFrom('fifo' as const, 'socket' as const, 'chardev' as const, 'blockdev' as const),
      major: fc.integer({ min: 0, max: 4095 }),
      minor: fc.integer({ min: 0, max: 2 ** 20 - 1 }),
      attrs: attrsArb,
    }),
    weight: 1,
  },
  { arbitrary: fc.record({ t: fc.constant('remove' as const), path: pick }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('link' as const), target: pick, dir: pick, name: pick }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('rename' as const), from: pick, dir: pick, name: pick }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('attrs' as const), path: pick, attrs: attrsArb }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('many' as const), dir: pick, prefix: fc.constantFrom('m', 'q'), count: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 30 }), weight: 3 }, { arbitrary: fc.integer({ min: 100, max: 300 }), weight: 1 }) }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('prune' as const), dir: pick, every: fc.integer({ min: 1, max: 5 }) }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('relocate' as const), path: pick, a: fc.integer({ min: 0, max: 1000 }), b: fc.integer({ min: 0, max: 1000 }) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('point' as const), path: pick, from: pick }), weight: 2 },
);

const LOST = '/lost+found';
const within = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);

function fileSpec(f: { cls: SizeClass; n: number; seed: number; holes: number }, bs: number): FileSpec {
  switch (f.cls) {
    case 'empty':
      return { size: 0, seed: f.seed, holes: 0 };
    case 'small':
      return { size: 1 + (f.n % 200), seed: f.seed, holes: 0 };
    case 'blocks':
      return { size: 1 + (f.n % (5 * bs)), seed: f.seed, holes: 0 };
    case 'sparse':
      return { size: 8 * bs + (f.n % (32 * bs)), seed: f.seed, holes: f.holes };
    case 'mib':
      return { size: (1 << 20) + (f.n % (2 << 20)), seed: f.seed, holes: f.n % 3 === 0 ? f.holes : 0 };
  }
}

function symlinkTarget(len: number, seed: number, bs: number): string {
  const r = seededBytes(len, seed);
  const chars = 'abcdefghij/._-';
  return Array.from(r.subarray(0, Math.min(len, bs - 1)), (b) => chars[b % chars.length]).join('');
}

/** The concrete operation an abstract one means in the model's current state (undefined: nothing fits). */
function concretize(a: Abstract, m: TreeModel): Op | undefined {
  const bs = m.blockSize;
  const dirs = m.pathsOf((k, p) => k === 'dir' && !within(p, LOST));
  const nonRoot = m.pathsOf((_, p) => p !== '/' && !within(p, LOST));
  const at = <T>(xs: readonly T[], i: number): T | undefined => (xs.length === 0 ? undefined : xs[i % xs.length]);
  /** A name in `dir`: an existing entry (a replacement) or a fresh one. */
  const dest = (d: number, n: number): string => {
    const dir = at(dirs, d)!;
    const names = [...m.children(dir).map((c) => c.slice(c.lastIndexOf('/') + 1)), ...NAMES].filter((x) => joinP(dir, x) !== LOST);
    return joinP(dir, at(names, n)!);
  };
  switch (a.t) {
    case 'file':
      return { op: 'file', path: dest(a.dir, a.name), file: fileSpec(a.file, bs), attrs: a.attrs };
    case 'dir':
      return { op: 'dir', path: dest(a.dir, a.name), attrs: a.attrs };
    case 'symlink':
      return { op: 'symlink', path: dest(a.dir, a.name), target: symlinkTarget(a.len, a.seed, bs), attrs: a.attrs };
    case 'special':
      return { op: 'special', path: dest(a.dir, a.name), kind: a.kind, major: a.major, minor: a.minor, attrs: a.attrs };
    case 'remove': {
      const path = at(nonRoot, a.path);
      return path === undefined ? undefined : { op: 'remove', path };
    }
    case 'link':
    case 'rename': {
      const src = at(
        nonRoot.filter((p) => m.kindOf(p) !== 'dir'),
        a.t === 'link' ? a.target : a.from,
      );
      if (src === undefined) return undefined;
      const to = dest(a.dir, a.name);
      if (a.t === 'rename') return to === src ? undefined : { op: 'rename', from: src, to };
      return { op: 'link', path: to, target: src };
    }
    case 'attrs': {
      const path = at(
        m.pathsOf((_, p) => !within(p, LOST)),
        a.path,
      );
      return path === undefined ? undefined : { op: 'attrs', path, attrs: a.attrs };
    }
    case 'many':
      return { op: 'many', dir: at(dirs, a.dir)!, prefix: a.prefix, count: a.count };
    case 'prune': {
      const dir = at(dirs, a.dir)!;
      return dir === '/' ? undefined : { op: 'prune', dir, every: a.every };
    }
    case 'relocate': {
      const path = at(
        nonRoot.filter((p) => ['file', 'dir', 'symlink'].includes(m.kindOf(p)!)),
        a.path,
      );
      return path === undefined ? undefined : { op: 'relocate', path, lo: Math.min(a.a, a.b), hi: Math.max(a.a, a.b) };
    }
    case 'point': {
      const files = nonRoot.filter((p) => m.kindOf(p) === 'file');
      const from = at(
        files.filter((p) => m.linksOf(p) === 1),
        a.from,
      );
      const path = at(
        files.filter((p) => p !== from),
        a.path,
      );
      return from === undefined || path === undefined ? undefined : { op: 'point', path, from };
    }
  }
}

// ------------------------------------------------------------------ running a sequence

interface Base {
  readonly v: Variant;
  readonly image: string;
  readonly hash: string;
  readonly model: TreeModel;
  readonly blockSize: number;
  readonly inodesCount: number;
  readonly firstIno: number;
}

let runNo = 0;
/** Outcome counts, printed with PROP_STATS=1 (to see what a seed covers). */
const stats = new Map<string, number>();
const count = (k: string): void => void stats.set(k, (stats.get(k) ?? 0) + 1);
afterAll(() => {
  if (process.env.PROP_STATS) console.log([...stats].sort().map(([k, n]) => `${k}: ${n}`).join('\n'));
});

/** Blocks an operation needs at least (to tell a legitimate NO_SPACE from a wrong one). */
function blocksNeeded(op: Op, bs: number): number {
  if (op.op !== 'file') return 0;
  const b = Buffer.from(fileBytesFor(op.file, bs));
  let n = 0;
  for (let i = 0; i < b.length; i += bs) if (b.subarray(i, i + bs).some((x) => x !== 0)) n++;
  return n;
}

function inodesNeeded(op: Op): number {
  return op.op === 'many' ? op.count : ['file', 'dir', 'symlink', 'special'].includes(op.op) ? 1 : 0;
}

/**
 * Runs `steps` (each makes the next operation from the model's state, or skips) through
 * the writer and the model, commits, and checks the oracles. Returns the operations run.
 * Throws with the concrete operations in the message.
 */
async function runSequence(base: Base, steps: ReadonlyArray<(m: TreeModel) => Op | undefined>): Promise<Op[]> {
  const model = base.model.clone();
  const ops: Op[] = [];
  const out = join(tmp(), `out-${runNo++}.raw`);
  const bs = base.blockSize;
  /** An operation that failed as it had to (NO_SPACE, a predicted BAD_UPDATE): the sequence ends there. */
  let ended: { op: Op; error: ImgdedupError; freeBefore: number; facts: OpFacts } | undefined;
  const fail = (what: string, e: unknown): Error => new Error(`${base.v.name}: ${what}: ${e instanceof Error ? e.message : String(e)}\nops: ${JSON.stringify(ops)}`);
  try {
    await writeImage(base.image, out, async (w) => {
      for (const step of steps) {
        const op = step(model);
        if (op === undefined) continue;
        const predicted = model.expectedError(op);
        const freeBefore = base.v.nearlyFull !== undefined ? await w.freeBytes() : Infinity;
        const facts: OpFacts = {};
        try {
          await runOp(w, op, bs, facts);
        } catch (e) {
          if (e instanceof InexpressibleOp) continue;
          const code = e instanceof ImgdedupError ? e.code : undefined;
          if (e instanceof ImgdedupError && (code === predicted || (code === 'NO_SPACE' && base.v.nearlyFull !== undefined))) {
            ended = { op, error: e, freeBefore, facts };
            // The writer may hold a half-made change now: it must refuse to go on or to commit.
            await expect(w.put(new TextEncoder().encode('/after-failure'), { kind: 'fifo' }, { mode: 0o644, uid: 0, gid: 0 })).rejects.toMatchObject({ code: 'INTERNAL' });
            await expect(w.commit()).rejects.toMatchObject({ code: 'INTERNAL' });
            count(`${base.v.name} ${code} ${op.op}`);
            throw e;
          }
          ops.push(op);
          throw fail(`operation ${ops.length} threw`, e);
        }
        if (predicted !== undefined) {
          ops.push(op);
          throw fail(`operation ${ops.length} should have thrown ${predicted}`, 'it did not');
        }
        model.apply(op);
        ops.push(op);
        count(`${base.v.name} ${op.op}${op.op === 'file' && op.file.size > 100_000 ? ' big' : ''}`);
      }
    });
  } catch (e) {
    if (ended === undefined) throw e instanceof Error && e.message.includes('\nops: ') ? e : fail('writeImage threw', e);
  }
  if (ended !== undefined) {
    const { op, error, freeBefore, facts } = ended;
    if (error.code === 'NO_SPACE') {
      const what = String(error.data.detail ?? '');
      // Legitimate only where space really ran out: the data alone (plus slack for metadata) exceeds
      // what was free; for a relocation, the blocks in use in its range (each must move somewhere).
      const needed = op.op === 'relocate' ? (facts.relocateBlocks ?? 0) : blocksNeeded(op, bs);
      const legit = /inode/.test(what) ? freeInodesOf(base, model) < inodesNeeded(op) + 2 : needed + 48 > freeBefore / bs || op.op === 'many' || op.op === 'dir';
      if (!legit) throw fail(`NO_SPACE where it should fit (${what}; ${freeBefore} bytes free before) at ${JSON.stringify(op)}`, error);
    }
    // Everything before it must hold when replayed and committed.
    return [...(await runSequence(base, ops.map((o) => () => o))), op];
  }
  try {
    const fsck = strictFsck(out);
    if (!fsck.clean) throw new Error(`strict e2fsck oracle:\n${fsck.output}`);
    const disk = comparable(oracleViews(out, `${out}.dump`));
    const want = comparable(model.views());
    // The paths that differ, each as debugfs reads it and as the model has it (the deep-equal message elides them).
    const differ = [...new Set([...Object.keys(disk), ...Object.keys(want)])].filter((k) => JSON.stringify(disk[k]) !== JSON.stringify(want[k]));
    if (differ.length > 0) throw new Error(`the tree differs from the model at ${differ.length} path(s):\n${differ.slice(0, 5).map((k) => `${k}\n  disk:  ${JSON.stringify(disk[k])}\n  model: ${JSON.stringify(want[k])}`).join('\n')}`);
    if (sha(base.image) !== base.hash) throw new Error('the input image changed');
  } catch (e) {
    // The output stays (KEEP_TMP=1 keeps the whole temp dir) for a look with debugfs.
    throw fail(`oracle on ${out}`, e);
  }
  execFileSync('rm', ['-rf', out, `${out}.dump`]);
  return ops;
}

/** Free inodes by the model: all but the reserved ones and one per object (the root is reserved). */
function freeInodesOf(base: Base, m: TreeModel): number {
  return base.inodesCount - (base.firstIno - 1) - (m.objs.size - 1);
}

const bases = new Map<string, Promise<Base>>();
function baseOf(v: Variant): Promise<Base> {
  let b = bases.get(v.name);
  if (b === undefined) {
    b = (async () => {
      const work = join(tmp(), v.name.replace(/\W+/g, '_'));
      mkdirSync(work, { recursive: true });
      const image = join(work, 'base.raw');
      makeBase(v, image, work);
      const blockSize = Number(v.args[v.args.indexOf('-b') + 1] ?? 4096);
      const model = TreeModel.fromViews(oracleViews(image, join(work, 'dump')), blockSize, WRITER_NOW);
      const h = sh('dumpe2fs', ['-h', image]);
      const inodesCount = Number(/^Inode count:\s+(\d+)/m.exec(h)![1]);
      const firstIno = Number(/^First inode:\s+(\d+)/m.exec(h)![1]);
      return { v, image, hash: sha(image), model, blockSize, inodesCount, firstIno };
    })();
    bases.set(v.name, b);
  }
  return b;
}

describe.each(VARIANTS)('Ext4Writer random operation sequences on $name', (v) => {
  let base: Base;
  beforeAll(async () => {
    base = await baseOf(v);
  }, 120_000);

  test(
    `${RUNS} seeded sequences keep the strict oracle and equal the model`,
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(abstractArb(v.nearlyFull !== undefined ? 6 : 1), { minLength: 4, maxLength: HEAVY ? 40 : 14 }), async (seq) => {
          const t0 = Date.now();
          const ops = await runSequence(
            base,
            seq.map((a) => (m: TreeModel) => concretize(a, m)),
          );
          if (process.env.PROP_STATS) console.log(`${v.name}: ${ops.length} ops in ${Date.now() - t0} ms`);
        }),
        { seed: SEED + VARIANTS.indexOf(v), numRuns: RUNS },
      );
    },
    HEAVY || process.env.PROP_RUNS ? 4 * 3600_000 : 300_000,
  );
});

test('an ext3-style filesystem (no extents) is refused by name', async () => {
  const image = join(tmp(), 'ext3.raw');
  makeExt4Image(image, undefined, { type: 'ext3', args: ['-b', '1024'], sizeMiB: 8 });
  await expect(writeImage(image, `${image}.out`, async () => {})).rejects.toMatchObject({ code: 'WRITE_REFUSED', data: { feature: '^extent' } });
});

/**
 * Sequences the property tests found failing, as fast-check shrank them, replayed on the
 * same base images (each was red before the fix named beside it).
 */
const REGRESSIONS: ReadonlyArray<{ name: string; variant: string; ops: Op[] }> = [
  {
    // Found by HEAVY=1 PROP_SEED=7: the harness took this NO_SPACE for a spurious one (it counted no blocks for a relocation).
    name: 'a relocation whose range holds more blocks in use than are free is NO_SPACE, and the writer is spent',
    variant: '1k nearly full',
    ops: [
      { op: 'symlink', path: '/a', target: '_', attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'file', path: '/fifo', file: { size: 0, seed: 0, holes: 0 }, attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'relocate', path: '/filler', lo: 0, hi: 19 },
    ],
  },
  {
    // Found by HEAVY=1 runs: the xattr went to a block that e2fsck 1.47 does not count for an
    // inline-data symlink ("Block bitmap differences: -1197"); the symlink now leaves inline data first.
    name: 'an xattr given to an inline-data symlink whose inode has no room for it',
    variant: 'inline_data',
    ops: [{ op: 'attrs', path: '/slow', attrs: { mode: 0, uid: 0, gid: 0, xattrs: [['user.a', '00']] } }],
  },
  {
    // Found by HEAVY=1 runs: freed blocks were discarded at once (73ae32e), so blocks a
    // removed file left behind read as the base's bytes when another file was pointed at them.
    name: 'a file removed, its blocks then pointed at by another file, keep their content (discards wait for the commit)',
    variant: '1k htree',
    ops: [
      { op: 'file', path: '/lib/a', file: { size: 8192, seed: 0, holes: 1 }, attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'point', path: '/bin/tool', from: '/lib/a' },
    ],
  },
  {
    name: 'the same on a nearly full filesystem, the target a hard-linked file in an htree directory',
    variant: '1k nearly full',
    ops: [
      { op: 'many', dir: '/big', prefix: 'm', count: 7 },
      { op: 'file', path: '/lnk', file: { size: 8192, seed: 0, holes: 1 }, attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'link', path: '/slow', target: '/big/e0-' },
      { op: 'point', path: '/big/e0-', from: '/lnk' },
    ],
  },
  {
    // Found by HEAVY=1 runs: the harness pointed at an inline file's (absent) blocks and expected its content.
    name: 'a point from an inline-data file is not made (its content has no blocks); the rest of the sequence holds',
    variant: 'inline_data',
    ops: [
      { op: 'link', path: '/c', target: '/big/e0-' },
      { op: 'link', path: '/big', target: '/big/e0-' },
      { op: 'file', path: '/lib', file: { size: 1, seed: 0, holes: 0 }, attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'point', path: '/big', from: '/d1/d2/d3/leaf' },
    ],
  },
  {
    name: 'removing every entry of a directory (a subtree and one name of a hard-linked file)',
    variant: '1k ^metadata_csum',
    ops: [{ op: 'prune', dir: '/d1', every: 1 }],
  },
  {
    name: 'point gives an inline-data file a block map (it leaves inline data)',
    variant: 'inline_data',
    ops: [
      { op: 'point', path: '/big/e1-k', from: '/big/e0-' },
      { op: 'dir', path: '/big', attrs: { mode: 0, uid: 0, gid: 0 } },
    ],
  },
  {
    // Shrunk by fast-check to 5 operations (a directory's removal and two attribute
    // changes in between), then by hand to these 2.
    name: 'relocate moves the data and extent blocks of a file made in the same session',
    variant: '1k',
    ops: [
      { op: 'file', path: `/d1/d2/d3/${'N'.repeat(255)}`, file: { size: 1048576, seed: 0, holes: 1 }, attrs: { mode: 0, uid: 0, gid: 0 } },
      { op: 'relocate', path: `/d1/d2/d3/${'N'.repeat(255)}`, lo: 0, hi: 0 },
    ],
  },
  {
    name: 'relocate moves the xattr block of a file made in the same session',
    variant: '4k',
    ops: [
      { op: 'file', path: '/x', file: { size: 0, seed: 0, holes: 0 }, attrs: { mode: 0o644, uid: 0, gid: 0, xattrs: [['user.a', 'ab'.repeat(200)]] } },
      { op: 'relocate', path: '/x', lo: 0, hi: 1000 },
    ],
  },
];

test('after NO_SPACE part-way through a replacement, the writer refuses further changes and the commit', async () => {
  const image = join(tmp(), 'full.raw');
  makeExt4Image(image, undefined, { args: ['-b', '1024', '-N', '256'], sizeMiB: 4 });
  const file = (b: Uint8Array) => ({ kind: 'file' as const, size: b.length, async *data() { yield b; } });
  const enc = (x: string): Uint8Array => new TextEncoder().encode(x);
  const attrs = { mode: 0o644, uid: 0, gid: 0 };
  // writeImage's own commit at the end meets the same refusal.
  const run = writeImage(image, `${image}.out`, async (w) => {
    await w.put(enc('/f'), file(seededBytes(5000, 1)), attrs);
    // The old /f is gone and a new inode taken when the data runs out of blocks.
    await expect(w.put(enc('/f'), file(seededBytes(8 << 20, 2)), attrs)).rejects.toMatchObject({ code: 'NO_SPACE' });
    await expect(w.put(enc('/g'), file(seededBytes(100, 3)), attrs)).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(w.remove(enc('/lost+found'))).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(w.commit()).rejects.toMatchObject({ code: 'INTERNAL' });
  });
  await expect(run).rejects.toMatchObject({ code: 'INTERNAL', data: { detail: expect.stringContaining('failed part-way') } });
});

test('a hard link replacing the directory that holds its target\'s only name is BAD_UPDATE, and the writer is spent', async () => {
  const base = await baseOf(VARIANTS[0]!);
  const enc = (x: string): Uint8Array => new TextEncoder().encode(x);
  const out = join(tmp(), 'link-over-ancestor.raw');
  const run = writeImage(base.image, out, async (w) => {
    await expect(w.hardlink(enc('/d1'), enc('/d1/d2/d3/leaf'))).rejects.toMatchObject({ code: 'BAD_UPDATE' });
    await expect(w.commit()).rejects.toMatchObject({ code: 'INTERNAL' });
  });
  await expect(run).rejects.toMatchObject({ code: 'INTERNAL' });
});

describe('regressions found by the property tests', () => {
  test.each(REGRESSIONS)('$variant: $name', async (r) => {
    const v = VARIANTS.find((x) => x.name === r.variant)!;
    await runSequence(
      await baseOf(v),
      r.ops.map((o) => () => o),
    );
  }, 120_000);
});
