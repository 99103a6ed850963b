/**
 * ls and diff text lines are unambiguous: a name or symlink target that holds a space is quoted, so
 * a file named `a -> b` cannot pass for a symlink, nor ` lead` or `trail ` for `lead` or
 * `trail`. Every line parses back (quoted forms through unquoteName) to the exact names
 * and targets of the tree mkfs.ext4 -d copied; plain names stay as they are. --json is
 * unchanged: the names as they are, with no quotes added.
 */
import { copyFileSync, mkdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { unquoteName } from '../../src/ui/quoteName.js';
import { imgdedup } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseLsP } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-ls-quoting-');
let src = '';
let image = '';

const FILES = ['a -> b', ' lead', 'trail ', 'sp ace', 'plain', 'a', 'b'];
/** Symlinks: name -> target. */
const LINKS: ReadonlyArray<[string, string]> = [
  ['ln', 'a -> b'],
  ['ln -> x', 'plain'],
  ['to lead', ' lead'],
];

/**
 * One display token at the start of `text` (a name or target as ls prints it): a quoted
 * form up to its closing quote, else everything up to the next space (an unquoted name
 * holds none). Returns its bytes as a latin1 string (one char per byte) and the rest.
 */
function token(text: string): { value: string; rest: string } {
  if (text.startsWith('"')) {
    let i = 1;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    const bytes = unquoteName(text.slice(0, i + 1));
    expect(bytes, text).toBeDefined();
    return { value: Buffer.from(bytes!).toString('utf8'), rest: text.slice(i + 1) };
  }
  const end = text.indexOf(' ');
  return end < 0 ? { value: text, rest: '' } : { value: text.slice(0, end), rest: text.slice(end) };
}

/** An `ls -l` line's name and target, parsed back. */
function parseLong(line: string): { name: string; target?: string } {
  // mode, links, uid, gid, size, date, time, then the name.
  const m = /^[-dlpscb?][-rwxsStT]{9} +\d+ +\d+ +\d+ +\d+ \d{4}-\d\d-\d\d \d\d:\d\d (.*)$/.exec(line);
  expect(m, line).not.toBeNull();
  const name = token(m![1]!);
  if (name.rest === '') return { name: name.value };
  expect(name.rest.startsWith(' -> '), line).toBe(true);
  const target = token(name.rest.slice(4));
  expect(target.rest, line).toBe('');
  return { name: name.value, target: target.value };
}

beforeAll(() => {
  src = join(tmp(), 'src');
  mkdirSync(join(src, 'dir with space'), { recursive: true });
  for (const n of FILES) writeFileSync(join(src, n), n);
  writeFileSync(join(src, 'dir with space', ' in'), '');
  for (const [n, t] of LINKS) symlinkSync(t, join(src, n));
  image = join(tmp(), 'fs.raw');
  makeExt4Image(image, src, { args: ['-b', '4096'], sizeMiB: 8 });
});

/** The root's names per debugfs (independent of the host tree). */
function debugfsNames(): string[] {
  return parseLsP(debugfsBatch(image, ['ls -p /'])[0]!)
    .map((e) => e.name)
    .filter((n) => n !== '.' && n !== '..')
    .sort();
}

describe('ls text lines parse back to the exact names', () => {
  test('ls: one name per line, quoted where it holds a space', () => {
    const r = imgdedup(['ls', image, '/']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').slice(0, -1);
    const names = lines.map((l) => {
      const t = token(l);
      expect(t.rest, l).toBe('');
      return t.value;
    });
    expect([...names].sort()).toEqual(debugfsNames());
    expect(lines).toContain('"a -> b"');
    expect(lines).toContain('" lead"');
    expect(lines).toContain('"trail "');
    // Plain names as they are.
    expect(lines).toContain('plain');
    expect(lines).toContain('lost+found');
  });

  test('ls -l: every name and symlink target, as the host tree has them', () => {
    const r = imgdedup(['ls', '-l', image, '/']);
    expect(r.status, r.stderr).toBe(0);
    const parsed = r.stdout.split('\n').slice(0, -1).map(parseLong);
    expect(parsed.map((p) => p.name).sort()).toEqual(debugfsNames());
    for (const p of parsed) {
      const host = LINKS.find(([n]) => n === p.name);
      expect(p.target, p.name).toBe(host === undefined ? undefined : readlinkSync(join(src, p.name)));
    }
    // The file named `a -> b` is no symlink, and the symlink `ln` points at it.
    expect(parsed.find((p) => p.name === 'a -> b')).toEqual({ name: 'a -> b' });
    expect(parsed.find((p) => p.name === 'ln')).toEqual({ name: 'ln', target: 'a -> b' });
  });

  test('ls -R -l: paths with a space anywhere are quoted whole', () => {
    const r = imgdedup(['ls', '-R', '-l', image, '/']);
    expect(r.status, r.stderr).toBe(0);
    const paths = r.stdout.split('\n').slice(0, -1).map((l) => parseLong(l).name);
    expect(paths).toEqual(expect.arrayContaining(['/dir with space', '/dir with space/ in', '/ lead', '/trail ', '/plain']));
    expect(r.stdout).toContain(' "/dir with space/ in"\n');
    expect(r.stdout).toContain(' /plain\n');
  });

  test('--json keeps names as they are (no quotes added)', () => {
    const entries = JSON.parse(imgdedup(['ls', '-l', '--json', image, '/']).stdout) as Array<{ name: string; target?: string; nameBytes?: string }>;
    expect(entries.find((e) => e.name === 'a -> b')).not.toHaveProperty('nameBytes');
    expect(entries.find((e) => e.name === 'to lead')).toMatchObject({ target: ' lead' });
    expect(entries.map((e) => e.name).sort()).toEqual(debugfsNames());
  });
});

describe('diff text lines parse back to the exact paths', () => {
  test('A, D and M lines quote a path that holds a space', () => {
    const b = join(tmp(), 'b.raw');
    copyFileSync(image, b);
    debugfsWrite(b, ['rm "trail "', 'rm "a -> b"', 'sif "/sp ace" mode 0100600']);
    const r = imgdedup(['diff', image, b]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => /^[ADM] /.test(l));
    const parsed = lines.map((l) => {
      const t = token(l.slice(2));
      expect(t.rest === '' || t.rest.startsWith(' ('), l).toBe(true);
      return `${l[0]} ${t.value}`;
    });
    expect(parsed).toEqual(['D /a -> b', 'M /sp ace', 'D /trail ']);
    expect(lines).toContain('D "/trail "');
  });
});
