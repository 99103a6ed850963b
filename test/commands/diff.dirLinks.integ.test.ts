/**
 * `imgdedup diff` of an image where entries were added that name directories already in
 * the tree (directory hard links and loops, made with debugfs ln): corruption that e2fsck
 * reports entry by entry. diff lists the entries, does not descend into them (no
 * subtree listed twice or endlessly), and warns, naming each entry and the directory it
 * links to, in both modes (incremental on an overlay, and --full-tree / unrelated images).
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { makeOverlay } from '../../fixtures/ext4/diffScenarios.js';
import { imgdedup, run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-diff-dirlinks-');
let base = '';
let baseQcow2 = '';

beforeAll(() => {
  const src = join(tmp(), 'src');
  for (const d of ['X11/sub', 'a/deep/er', 'z/zz']) mkdirSync(join(src, d), { recursive: true });
  writeFileSync(join(src, 'z/zz/k'), 'k\n');
  writeFileSync(join(src, 'X11/f'), 'hi\n');
  writeFileSync(join(src, 'a/g'), 'y\n');
  writeFileSync(join(src, 'a/deep/er/h'), 'z\n');
  base = join(tmp(), 'base.raw');
  makeExt4Image(base, src, { args: ['-b', '4096'], sizeMiB: 32 });
  const rootOrder = sh('debugfs', ['-R', 'ls -p /', base]).split('\n').map((l) => l.split('/')[5]);
  expect(rootOrder.indexOf('a')).toBeLessThan(rootOrder.indexOf('z'));
  baseQcow2 = join(tmp(), 'base.qcow2');
  sh('qemu-img', ['convert', '-O', 'qcow2', base, baseQcow2]);
});

/** A copy of the base with debugfs `commands` applied: raw, and as a qcow2 overlay on the base's qcow2. */
function variant(name: string, commands: readonly string[]): { raw: string; overlay: string } {
  const raw = join(tmp(), `${name}.raw`);
  copyFileSync(base, raw);
  debugfsWrite(raw, commands);
  const overlay = join(tmp(), `${name}.qcow2`);
  makeOverlay(raw, baseQcow2, overlay);
  return { raw, overlay };
}

/** e2fsck's findings: entry path -> the directory it links to ("Entry 'N' in /D (i) is a link to directory /T (j)" or "to the root inode"). */
function e2fsckLinks(image: string): Map<string, string> {
  const r = run('e2fsck', ['-fn', image]);
  expect(r.status).toBe(4);
  const out = new Map<string, string>();
  for (const m of r.stdout.matchAll(/Entry '([^']+)' in (\S+) \(\d+\) is a link to (?:directory (\S+) \(\d+\)|the root inode)/g)) {
    out.set(`${m[2] === '/' ? '' : m[2]}/${m[1]}`, m[3] ?? '/');
  }
  return out;
}

interface Json {
  warnings: string[];
  filesystems: Array<{ stats: { mode: string }; added: Array<{ path: string }>; removed: unknown[]; modified: unknown[]; dirLinks: Array<{ side: string; path: string; dirPath: string | null }> }>;
}

describe('diff of directory hard links and loops', () => {
  test.each([
    ['a link to its own directory, one to the root and one to another directory', 'links', ['ln /X11 /X11/loop', 'ln / /X11/rootloop', 'ln /a /X11/alink']],
    ['a new directory holding a link to a deep directory', 'newdir', ['mkdir /z/new', 'ln /a/deep /z/new/deeplink']],
    // /a comes before /z in the root's entries (checked below): a walk meets the link before the directory's own entry.
    ['a link met before the directory it names', 'early', ['ln /z/zz /a/zlink']],
  ])('%s: listed once, not descended into, warned about (incremental, --full-tree, unrelated images)', (_what, name, commands) => {
    const { raw, overlay } = variant(name, commands);
    const links = e2fsckLinks(raw);
    expect(links.size).toBeGreaterThan(0);
    const added = commands.flatMap((c) => c.split(' ').slice(-1)).sort();
    for (const [args, a, b, mode] of [
      [[], baseQcow2, overlay, 'incremental'],
      [['--full-tree'], baseQcow2, overlay, 'full'],
      [[], base, raw, 'full'],
    ] as const) {
      const r = imgdedup(['diff', ...args, a, b]);
      expect(r.status, r.stderr).toBe(0);
      // Exactly the new entries: nothing below a link (the same directory again, or a loop).
      expect(r.stdout.split('\n').filter((l) => /^[ADM] /.test(l)), `${args.join(' ')} ${b}`).toEqual(added.map((p) => `A ${p}`));
      const warnings = r.stderr.split('\n').filter((l) => l !== '');
      expect(warnings, `${args.join(' ')} ${b}`).toHaveLength(links.size);
      // e2fsck calls the entry it meets second the link (pass 2 goes in block order); diff
      // calls the link the entry that is not in the directory its '..' names (here the added
      // one). Either way the warning names both.
      const says = (w: string, path: string, dir: string): boolean => w.startsWith(`warning: ${b}: ${path} is directory inode `) && w.includes(`, which is ${dir} (a directory hard link or loop`);
      for (const [path, dir] of links) {
        expect(warnings.some((w) => says(w, path, dir) || says(w, dir, path)), `${path} -> ${dir}: ${r.stderr}`).toBe(true);
      }
      const j = JSON.parse(imgdedup(['diff', '--json', ...args, a, b]).stdout) as Json;
      expect(j.filesystems[0]!.stats.mode).toBe(mode);
      expect(j.warnings).toEqual(warnings.map((w) => w.replace(/^warning: /, '')));
      const pair = (x: string, y: string | null): string[] => [x, String(y)].sort();
      expect(
        j.filesystems[0]!.dirLinks.map((l) => [l.side, ...pair(l.path, l.dirPath)]).sort(),
        `${args.join(' ')} ${b}`,
      ).toEqual([...links].map(([p, dir]) => ['b', ...pair(p, dir)]).sort());
    }
  });

});
