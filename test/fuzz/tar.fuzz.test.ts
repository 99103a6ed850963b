/**
 * Mutation fuzzing of update sources (src/updates/): tar layers made at test time by GNU
 * tar (pax with xattrs, GNU long names; plain, gzip and zstd) from a small tree with every
 * kind of entry. The tar-aware mutator sets header fields (names with '..' and whiteouts,
 * octal and base-256 numbers, type flags) and PAX records, then fixes the header checksum
 * most of the time so the mutation reaches past it; compressed seeds get their tar
 * mutated and recompressed, or their compressed bytes mutated. Each case (targets/tar.ts,
 * in a pool worker) opens the layer and reads every entry and all content twice: only
 * ImgdedupErrors other than InternalError may escape, within the pool's time and memory
 * bounds (harness.ts, pool.ts; FUZZ_REPLAY=<seed> replays a case). Where a case reads
 * the layer, GNU tar must list it too, with as many members.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { seededBytes } from '../../fixtures/prng.mjs';
import { run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { FUZZ_SEED, Tally, caseSeeds, describeFailures, mulberry32, mutate } from './harness.js';
import { useCasePool } from './pool.js';
import { tarTarget } from './targets/tar.js';

/** Cases per seed layer (4 seeds x 75 = 300). FUZZ_CASES overrides. */
const CASES = process.env.FUZZ_CASES !== undefined ? Number(process.env.FUZZ_CASES) : 75;

const tmp = useTempDir('imgdedup-fuzz-tar-');
const pool = useCasePool();

type Compression = 'none' | 'gzip' | 'zstd';
interface Seed {
  readonly name: string;
  /** The uncompressed tar the mutator works on. */
  readonly tar: Buffer;
  readonly compression: Compression;
  readonly file: string;
}
const seeds: Seed[] = [];

function makeTree(root: string): void {
  mkdirSync(join(root, 'etc', 'app'), { recursive: true });
  mkdirSync(join(root, 'usr', 'lib', 'a-directory-name-long-enough-that-the-path-passes-the-ustar-name-field-of-100-bytes'), { recursive: true });
  writeFileSync(join(root, 'etc', 'app', 'conf'), 'k = v\n');
  writeFileSync(join(root, 'usr', 'lib', 'lib.so'), seededBytes(9000, 0xf022));
  writeFileSync(join(root, 'usr', 'lib', 'a-directory-name-long-enough-that-the-path-passes-the-ustar-name-field-of-100-bytes', 'deep'), 'deep\n');
  writeFileSync(join(root, 'etc', '.wh.removed'), '');
  writeFileSync(join(root, 'etc', 'app', '.wh..wh..opq'), '');
  linkSync(join(root, 'usr', 'lib', 'lib.so'), join(root, 'usr', 'lib', 'lib.so.1'));
  symlinkSync('lib.so.1', join(root, 'usr', 'lib', 'lib.so.2'));
  sh('mkfifo', [join(root, 'etc', 'fifo')]);
  if (run('sh', ['-c', 'command -v setfattr']).status === 0) {
    sh('setfattr', ['-n', 'user.bin', '-v', '0x00ff0a', join(root, 'etc', 'app', 'conf')]);
    sh('setfattr', ['-n', 'user.dir', '-v', 'd', join(root, 'etc')]);
  }
  sh('find', [root, '-exec', 'touch', '-h', '-d', '@1700000000.123456789', '{}', '+']);
}

function compress(tar: Buffer, c: Compression): Buffer {
  if (c === 'gzip') return gzipSync(tar, { level: 1 });
  if (c === 'zstd') return execFileSync('zstd', ['-q', '-c', '-1'], { input: tar, maxBuffer: 1 << 26 });
  return tar;
}

// ---------------------------------------------------------------------------------------
// The tar-aware mutator (ustar header layout: POSIX.1-2008 pax, "ustar Interchange Format")

const FIELDS: ReadonlyArray<readonly [string, number, number, 'name' | 'octal' | 'type' | 'magic']> = [
  ['name', 0, 100, 'name'],
  ['mode', 100, 8, 'octal'],
  ['uid', 108, 8, 'octal'],
  ['gid', 116, 8, 'octal'],
  ['size', 124, 12, 'octal'],
  ['mtime', 136, 12, 'octal'],
  ['typeflag', 156, 1, 'type'],
  ['linkname', 157, 100, 'name'],
  ['magic', 257, 8, 'magic'],
  ['devmajor', 329, 8, 'octal'],
  ['devminor', 337, 8, 'octal'],
  ['prefix', 345, 155, 'name'],
];
const NAMES = ['../etc/passwd', '/usr/../../x', 'etc/.wh.app', 'etc/.wh..wh..opq', '.wh..wh.plnk', 'etc/.wh...', 'a/b/..', '\xff\xfe/\x80', '', './', `x/${'n'.repeat(97)}`, 'etc/app/conf', 'usr/lib/lib.so'];
const OCTALS = ['0', '1', '777', '7777777', '77777777777', '777777777777', '', 'zz', '-1', ' 12 ', '00000001000'];
const TYPES = '0123456789xgLKSVMDNZ\0';
const MAGICS = ['ustar\x0000', 'ustar  \0', '\0\0\0\0\0\0\0\0', 'ustar\0zz'];
const PAX_KEYS = ['path', 'linkpath', 'size', 'uid', 'gid', 'mtime', 'atime', 'GNU.sparse.major', 'SCHILY.xattr.user.x', 'SCHILY.xattr.', 'LIBARCHIVE.xattr.user.%zz', 'hdrcharset', 'comment'];
const PAX_VALUES = ['0', '1', '-1.5', '1e9', '99999999999999999999', '../x', 'x'.repeat(300), '', '\xff\xfe', '1700000000.999999999999', 'AAAA', '12345678901234567'];

/** Headers of a tar (offset, type flag, data length), walked from the sizes GNU tar wrote. */
function headers(tar: Buffer): { offset: number; type: string; size: number }[] {
  const out: { offset: number; type: string; size: number }[] = [];
  for (let off = 0; off + 512 <= tar.length && tar[off] !== 0; ) {
    const size = parseInt(tar.toString('latin1', off + 124, off + 136).replace(/\0.*$/s, '').trim() || '0', 8);
    out.push({ offset: off, type: String.fromCharCode(tar[off + 156]!), size });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

function fixChecksum(tar: Buffer, off: number): void {
  const h = tar.subarray(off, off + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

function tarMutator(seedTar: Buffer): (buf: Buffer, rnd: () => number) => { bytes: Buffer; done: string[] } {
  const hs = headers(seedTar);
  return (buf, rnd) => {
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const done: string[] = [];
    let bytes = buf;
    const n = 1 + Math.floor(rnd() * 3);
    for (let m = 0; m < n; m++) {
      const h = pick(hs);
      const op = rnd();
      if (op < 0.55) {
        const [name, off, len, kind] = pick(FIELDS);
        const field = bytes.subarray(h.offset + off, h.offset + off + len);
        let v: string | Buffer;
        if (kind === 'name') v = pick(NAMES);
        else if (kind === 'type') v = pick([...TYPES]);
        else if (kind === 'magic') v = pick(MAGICS);
        else if (rnd() < 0.2) {
          // base-256 (GNU): 0x80 positive or 0xff negative, then big-endian bytes.
          v = Buffer.alloc(len, rnd() < 0.5 ? 0 : 0xff);
          v[0] = rnd() < 0.5 ? 0x80 : 0xff;
          v[len - 1] = Math.floor(rnd() * 256);
          if (rnd() < 0.5) v[len - 5] = Math.floor(rnd() * 256);
        } else v = pick(OCTALS).padStart(Math.min(len - 1, 3), '0');
        field.fill(0);
        (typeof v === 'string' ? Buffer.from(v, 'latin1') : v).copy(field, 0, 0, len);
        done.push(`${name}@${h.offset}=${JSON.stringify(typeof v === 'string' ? v : v.toString('hex'))}`);
      } else if (op < 0.75 && hs.some((x) => x.type === 'x' || x.type === 'g')) {
        // A PAX record rewritten, or its length digits changed.
        const p = pick(hs.filter((x) => x.type === 'x' || x.type === 'g'));
        const data = bytes.subarray(p.offset + 512, p.offset + 512 + p.size);
        if (rnd() < 0.5) {
          const key = pick(PAX_KEYS);
          const value = pick(PAX_VALUES);
          const body = ` ${key}=${value}\n`;
          let len = body.length + 1;
          while (String(len).length + body.length > len) len++;
          const rec = Buffer.from(`${len}${body}`, 'latin1');
          rec.copy(data, 0, 0, Math.min(rec.length, data.length));
          done.push(`pax@${p.offset} ${key}=${JSON.stringify(value)}`);
        } else {
          const at = Math.floor(rnd() * Math.max(1, data.length));
          if (at < data.length) data[at] = pick([0x30, 0x39, 0x20, 0x0a, 0x3d, 0x00, 0xff]);
          done.push(`pax-byte@${p.offset + 512 + at}`);
        }
      } else {
        const r = mutate(bytes, [{ name: 'header', offset: h.offset, length: 512 }, { name: 'all', offset: 0, length: bytes.length }], rnd);
        bytes = r.bytes;
        done.push(...r.done);
      }
      if (rnd() < 0.9 && h.offset + 512 <= bytes.length) fixChecksum(bytes, h.offset);
    }
    return { bytes, done };
  };
}

async function fuzzTar(seed: Seed, cases: number, baseSeed: number): Promise<Tally> {
  const tally = new Tally();
  const mutateTar = tarMutator(seed.tar);
  const target = join(tmp(), `case-${seeds.indexOf(seed)}`);
  const t0 = performance.now();
  for (const [i, s] of caseSeeds(baseSeed, cases).entries()) {
    const rnd = mulberry32(s);
    let bytes: Buffer;
    let done: string[];
    if (seed.compression !== 'none' && rnd() < 0.4) {
      // The compressed bytes themselves (the decompressor's robustness).
      const compressed = readFileSync(seed.file);
      ({ bytes, done } = mutate(Buffer.from(compressed), [{ name: 'compressed', offset: 0, length: compressed.length }], rnd));
    } else {
      ({ bytes, done } = mutateTar(Buffer.from(seed.tar), rnd));
      bytes = compress(bytes, seed.compression);
    }
    writeFileSync(target, bytes);
    const r = await pool.run('tar', { file: target });
    tally.add(i, s, done, r);
    if (r.outcome === 'ok') {
      // Where we read the layer, GNU tar must read it too, with as many members (a differential check).
      const gnu = run('tar', ['-tvf', target]);
      const members = gnu.stdout.split('\n').filter((l) => l !== '').length;
      if (gnu.status !== 0 || members !== r.entries) {
        tally.failures.push({ caseIndex: i, seed: s, mutations: done, error: `we read ${r.entries} entries; GNU tar exit ${gnu.status}, ${members} members: ${gnu.stderr.slice(0, 300)}` });
      }
    }
  }
  if (process.env.FUZZ_VERBOSE) console.log(tally.summary(seed.name, performance.now() - t0, pool));
  return tally;
}

const VARIANTS: ReadonlyArray<{ name: string; format: string; compression: Compression }> = [
  { name: 'pax tar', format: 'pax', compression: 'none' },
  { name: 'gnu tar', format: 'gnu', compression: 'none' },
  { name: 'pax tar.gz', format: 'pax', compression: 'gzip' },
  { name: 'pax tar.zst', format: 'pax', compression: 'zstd' },
];

beforeAll(() => {
  const d = tmp();
  const tree = join(d, 'tree');
  mkdirSync(tree);
  makeTree(tree);
  for (const [i, v] of VARIANTS.entries()) {
    const plain = join(d, `seed${i}.tar`);
    sh('tar', [`--format=${v.format}`, ...(v.format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : []), '--sort=name', '--numeric-owner', '--mtime=@1700000000', '-cf', plain, '-C', tree, '.']);
    const tar = readFileSync(plain);
    const file = join(d, `seed${i}.layer`);
    writeFileSync(file, compress(tar, v.compression));
    seeds.push({ name: v.name, tar, compression: v.compression, file });
  }
});

describe('tar layer mutation fuzzing: only ImgdedupErrors, bounded time and memory', () => {
  it('the seed layers read fully, as made', async () => {
    for (const s of seeds) expect(await tarTarget({ file: s.file }), s.name).toEqual({ outcome: 'ok', entries: 14 });
  });

  it.each(VARIANTS.map((v, i) => [v.name, i] as const))('%s', async (_name, i) => {
    const s = seeds[i]!;
    const r = await fuzzTar(s, CASES, FUZZ_SEED + 0x7a2 + i * 7919);
    expect(r.failures, describeFailures(s.name, r.failures)).toEqual([]);
    if (process.env.FUZZ_REPLAY === undefined) {
      // Mutations must reach past the first header: many cases read entries, and some end well.
      expect(r.deepCases, JSON.stringify(r.outcomes)).toBeGreaterThan(CASES / 4);
      expect(r.outcomes.ok ?? 0, JSON.stringify(r.outcomes)).toBeGreaterThan(0);
    }
  }, 300_000);
});
