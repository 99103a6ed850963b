/**
 * The executable (src/launcher.cts) runs the bundled program from the V8 code cache made
 * at build time (scripts/compile-cache.mjs), and only from a cache made of the very source
 * it runs, undamaged: V8 itself checks only a cached script's length, so a cache left from
 * another build of the same length would run that build's code, and it runs damaged cache
 * data (a flipped bit crashed it). Needs dist/ (`npm test` builds it).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Script } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, run } from './helpers/run.js';

const DIST = join(ROOT, 'dist');
/** The cache file: SHA-256 of the source, SHA-256 of the V8 data, the V8 data. */
const HEADER_BYTES = 64;
const wrap = (createRequire(import.meta.url)('node:module') as { wrap: (s: string) => string }).wrap;
const dirs: string[] = [];

/** A copy of the executable in a temporary directory (node_modules reached through a link), with `cache` as its code cache (none if undefined). */
function copyOfExecutable(bundle: string, cache: Buffer | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgdedup-launcher-'));
  dirs.push(dir);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  copyFileSync(join(DIST, 'cli.cjs'), join(dir, 'cli.cjs'));
  writeFileSync(join(dir, 'imgdedup.cjs'), bundle);
  if (cache !== undefined) writeFileSync(join(dir, 'imgdedup.cjs.cache'), cache);
  return join(dir, 'cli.cjs');
}

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the imgdedup executable and its code cache', () => {
  const bundle = readFileSync(join(DIST, 'imgdedup.cjs'), 'utf8');
  const cache = readFileSync(join(DIST, 'imgdedup.cjs.cache'));
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

  it('is built with a cache this Node accepts for the bundle (else every run compiles it all)', () => {
    const source = bundle.replace(/^#!.*/, '');
    const script = new Script(wrap(source), { filename: join(DIST, 'imgdedup.cjs'), cachedData: cache.subarray(HEADER_BYTES) });
    expect(script.cachedDataRejected).toBe(false);
  });

  it('runs a changed bundle of the same length as changed, not the code cached for the old one', () => {
    // The version string is a constant of the bundle's top-level code, which the cache holds compiled.
    const other = version.replace(/\d/g, '9') === version ? version.replace(/\d/g, '8') : version.replace(/\d/g, '9');
    const changed = bundle.replace(`version: "${version}"`, `version: "${other}"`);
    expect(changed.length).toBe(bundle.length);
    expect(changed).not.toBe(bundle);
    // What the check protects against: V8 alone takes the old cache for the changed source.
    const unchecked = new Script(wrap(changed.replace(/^#!.*/, '')), { filename: 'x.cjs', cachedData: cache.subarray(HEADER_BYTES) });
    expect(unchecked.cachedDataRejected).toBe(false);
    const r = run(process.execPath, [copyOfExecutable(changed, cache), '--version']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(other);
  });

  it('runs without a cache, and with a damaged one, as with a good one', () => {
    const damaged = Buffer.from(cache);
    for (let i = HEADER_BYTES; i < damaged.length; i += 97) damaged[i] = damaged[i]! ^ 0x5a;
    // Flipped bits in the V8 data, where an outside tester's made V8 crash (SIGTRAP, SIGSEGV)
    // before the data had a hash: 16 bytes early on, one bit late.
    const flipped = [
      { at: 68, length: 16, mask: 0x5a },
      { at: Math.min(115857, cache.length - HEADER_BYTES - 1), length: 1, mask: 0x08 },
    ].map(({ at, length, mask }) => {
      const c = Buffer.from(cache);
      for (let i = HEADER_BYTES + at; i < HEADER_BYTES + at + length; i++) c[i] = c[i]! ^ mask;
      return c;
    });
    for (const c of [undefined, damaged, ...flipped, cache.subarray(0, HEADER_BYTES), Buffer.alloc(0)]) {
      const r = run(process.execPath, [copyOfExecutable(bundle, c), '--version']);
      expect(r.status).toBe(0);
      expect(r.stdout.trim()).toBe(version);
    }
  });
});

describe('an incomplete installation: one line naming what is missing, exit 70, no stack', () => {
  /** The executable copied into a new directory with `files` of dist/, and node_modules holding every package but `without` (all if undefined; none if null). */
  function install(files: readonly string[], modules: { without?: string } | null): string {
    const dir = mkdtempSync(join(tmpdir(), 'imgdedup-install-'));
    dirs.push(dir);
    for (const f of files) copyFileSync(join(DIST, f), join(dir, f));
    if (modules !== null) {
      mkdirSync(join(dir, 'node_modules'));
      for (const name of readdirSync(join(ROOT, 'node_modules'))) if (name !== modules.without) symlinkSync(join(ROOT, 'node_modules', name), join(dir, 'node_modules', name));
    }
    return dir;
  }
  const reinstall = '; reinstall (npm ci)';

  it('the bundle imgdedup.cjs missing', () => {
    const dir = install(['cli.cjs'], {});
    const r = run(process.execPath, [join(dir, 'cli.cjs'), '--version']);
    expect(r.status).toBe(70);
    expect(r.stderr).toBe(`imgdedup: installation incomplete: ${join(dir, 'imgdedup.cjs')} is missing${reinstall}\n`);
  });

  it('no node_modules: the first package the program loads', () => {
    const dir = install(['cli.cjs', 'imgdedup.cjs'], null);
    const r = run(process.execPath, [join(dir, 'cli.cjs'), '--version']);
    expect(r.status).toBe(70);
    expect(r.stderr).toBe(`imgdedup: installation incomplete: cannot find module @commander-js/extra-typings${reinstall}\n`);
  });

  it('a package a command loads when it runs (xxhash-wasm, for diff)', () => {
    const dir = install(['cli.cjs', 'imgdedup.cjs'], { without: 'xxhash-wasm' });
    const [a, b] = [join(dir, 'a.raw'), join(dir, 'b.raw')];
    writeFileSync(a, Buffer.alloc(1 << 20));
    writeFileSync(b, Buffer.alloc(1 << 20, 1));
    const r = run(process.execPath, [join(dir, 'cli.cjs'), 'diff', a, b]);
    expect(r.status).toBe(70);
    expect(r.stderr).toBe(`imgdedup: installation incomplete: cannot find module xxhash-wasm${reinstall}\n`);
  });
});
