/**
 * Third-party test corpora, which are fetched or lent, never committed. Each is looked up in
 * $IMGDEDUP_CORPUS/NAME, then ../shared/corpus/NAME beside the repository (the developers'
 * machines); the e2fsprogs images also in the cache that fixtures/fetch-e2fsprogs-tests.mjs
 * fills from Debian's e2fsprogs source package. A missing corpus skips its tests with a note
 * in the test name and on stderr; `requiredOnCi` turns that into a failure under CI=true.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'vitest';
import { e2fsprogsTestsCacheDir } from '../../fixtures/fetch-e2fsprogs-tests.mjs';
import { ROOT } from './run.js';

/** Directories that may hold corpus `name`, in the order they are tried. */
function candidates(name: string): string[] {
  const dirs = [join(ROOT, '..', 'shared', 'corpus', name)];
  if (process.env.IMGDEDUP_CORPUS) dirs.unshift(join(process.env.IMGDEDUP_CORPUS, name));
  return dirs;
}

export interface E2fsprogsCorpus {
  /** Holds NAME.img.gz and (for most) NAME.expect.1 per e2fsprogs test. */
  readonly dir: string;
  /** Where it came from, for messages. */
  readonly source: string;
  /** Test names present, sorted. */
  readonly names: readonly string[];
  /** How many the source promises (the shared README's 197, the fetch's MANIFEST): fewer means a damaged copy. */
  readonly declared: number;
}

/** The shared corpus README promises this many images. */
const SHARED_IMAGES = 197;

/** The e2fsprogs test images, or undefined if neither the shared corpus nor the cache has them. */
export function findE2fsprogsCorpus(): E2fsprogsCorpus | undefined {
  for (const dir of candidates('ext4-e2fsprogs')) {
    if (!existsSync(dir)) continue;
    const names = readdirSync(dir).filter((n) => n.endsWith('.img.gz')).map((n) => n.slice(0, -'.img.gz'.length)).sort();
    return { dir, source: dir, names, declared: SHARED_IMAGES };
  }
  const cache = e2fsprogsTestsCacheDir();
  const manifest = join(cache, 'MANIFEST');
  if (!existsSync(manifest)) return undefined;
  const declared = readFileSync(manifest, 'utf8').split('\n').filter((n) => n !== '');
  return {
    dir: cache,
    source: `${cache} (${readFileSync(join(cache, 'SOURCE'), 'utf8').trim()})`,
    names: declared.filter((n) => existsSync(join(cache, `${n}.img.gz`))).sort(),
    declared: declared.length,
  };
}

/** A file of the dfvfs corpus (foreign/), or undefined if absent. */
export function findForeignCorpusFile(file: string): string | undefined {
  return candidates('foreign').map((d) => join(d, file)).find((p) => existsSync(p));
}

/**
 * When `found` is false: prints why the corpus's tests are skipped and how to get it, and,
 * if `requiredOnCi` and CI=true, registers a test that fails saying so. Returns a suffix for
 * the skipped suite's name, so the skip is visible in the test listing too.
 */
export function noteMissingCorpus(what: string, found: boolean, howToGet: string, requiredOnCi: boolean): string {
  if (found) return '';
  const note = `corpus missing, tests skipped: ${what}. ${howToGet}`;
  process.stderr.write(`\n[corpus] ${note}\n`);
  if (requiredOnCi && process.env.CI === 'true') {
    test(`corpus present (required under CI=true): ${what}`, () => {
      throw new Error(note);
    });
  }
  return ` [skipped: corpus missing]`;
}
