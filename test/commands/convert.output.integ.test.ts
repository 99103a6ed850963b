/**
 * `imgdedup convert`'s output path is checked before anything is read: only a regular
 * file is ever replaced (with --force), never a device, directory, pipe or link; a missing
 * or unusable directory and an empty name are refused first; errors name the user's path.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../helpers/tmp.js';
import { imgdedup } from '../helpers/run.js';
import { qemuImg } from '../helpers/qemu.js';

const tmp = useTempDir('imgdedup-convert-out-');
let dir: string;
let src: string;
/** A source that does not exist: an output error reported first proves the output was checked before SRC was opened. */
let missingSrc: string;

beforeAll(() => {
  dir = tmp();
  src = join(dir, 'src.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', src, '1M');
  missingSrc = join(dir, 'missing.qcow2');
});

/** Files in `dir` left by a conversion (temporary outputs are `.NAME.tmp-*`). */
const leftovers = (d: string) => readdirSync(d).filter((n) => n.includes('.tmp-'));

describe('an existing output that is not a regular file is refused, with or without --force', () => {
  const cases: Array<[string, (path: string) => void, string]> = [
    ['a directory', (p) => mkdirSync(p), 'a directory'],
    ['a named pipe', (p) => execFileSync('mkfifo', [p]), 'a named pipe'],
    ['a symbolic link', (p) => symlinkSync('src.qcow2', p), 'a symbolic link'],
  ];
  if (process.getuid?.() === 0) cases.push(['a character device', (p) => execFileSync('mknod', [p, 'c', '1', '3']), 'a character device']);
  test.each(cases)('%s', (_name, make, kind) => {
    const out = join(dir, `out-${kind.replace(/\W/g, '')}`);
    make(out);
    const before = lstatSync(out);
    for (const force of [[], ['--force']]) {
      const r = imgdedup(['convert', ...force, src, out]);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr.trim()).toBe(`imgdedup: error [OUTPUT_EXISTS]: ${out}: output exists and is ${kind}; only a regular file is ever replaced (even with --force)`);
      const after = lstatSync(out);
      expect([after.mode, after.ino, after.rdev]).toEqual([before.mode, before.ino, before.rdev]);
    }
    expect(leftovers(dir)).toEqual([]);
  });
});

describe('a bad output is reported before the source is read', () => {
  test('an empty name is a usage error', () => {
    const r = imgdedup(['convert', missingSrc, ''], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('imgdedup: error [USAGE]: the output file name is empty');
  });
  test('an existing directory, even with --force', () => {
    const r = imgdedup(['convert', '--force', missingSrc, dir]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(`[OUTPUT_EXISTS]: ${dir}: output exists and is a directory`);
  });
  test('a name ending in "/" names a directory', () => {
    const r = imgdedup(['convert', missingSrc, join(dir, 'new') + '/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/names a directory, not a file/);
  });
  test('a missing directory: IO naming the output as given, not a temporary file', () => {
    const out = join(dir, 'no-such-dir', 'out.qcow2');
    const r = imgdedup(['convert', missingSrc, out]);
    expect(r.status).toBe(5);
    expect(r.stderr.trim()).toBe(`imgdedup: error [IO]: ${out}: cannot create: directory ${join(dir, 'no-such-dir')} does not exist`);
  });
  test('a "directory" that is a file', () => {
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    const r = imgdedup(['convert', missingSrc, join(file, 'out.qcow2')]);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(`${join(file, 'out.qcow2')}: cannot create`);
    expect(r.stderr).not.toMatch(/ENOTDIR|ENOENT|stat '|open '|realpath/);
  });
  test.skipIf(process.getuid?.() === 0)('an unwritable directory (as non-root)', () => {
    const ro = join(dir, 'ro');
    mkdirSync(ro, { mode: 0o555 });
    const r = imgdedup(['convert', missingSrc, join(ro, 'out.qcow2')]);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/permission denied/);
  });
  test('an existing regular file without --force', () => {
    const out = join(dir, 'exists.qcow2');
    writeFileSync(out, 'keep');
    const r = imgdedup(['convert', missingSrc, out]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(`[OUTPUT_EXISTS]: ${out}: output file exists (use --force to replace it)`);
  });
  test('a good output and a missing source: the source is what is reported', () => {
    const r = imgdedup(['convert', missingSrc, join(dir, 'fine.qcow2')]);
    expect(r.status).toBe(5);
    expect(r.stderr.trim()).toBe(`imgdedup: error [IO]: ${missingSrc}: cannot open: no such file or directory`);
    expect(leftovers(dir)).toEqual([]);
  });
});

test('--force replaces an existing regular file', () => {
  const out = join(dir, 'replace.qcow2');
  writeFileSync(out, 'old');
  const r = imgdedup(['convert', '--force', src, out]);
  expect(r.status, r.stderr).toBe(0);
  expect(JSON.parse(qemuImg('info', '--output=json', out))).toMatchObject({ format: 'qcow2', 'virtual-size': 1048576 });
});

test('a directory whose filesystem allows no new files (/proc): IO naming the output and why, not "no such file"', () => {
  const out = '/proc/imgdedup-out.qcow2';
  const r = imgdedup(['convert', src, out]);
  expect(r.status).toBe(5);
  // As non-root, /proc's mode (r-x) refuses first.
  const why = process.getuid?.() === 0 ? 'cannot create: the filesystem holding /proc does not allow creating files there' : 'cannot create in directory /proc: permission denied';
  expect(r.stderr.trim()).toBe(`imgdedup: error [IO]: ${out}: ${why}`);
});

describe("an output whose extension names another format than the one written: a hint on stderr, the output as asked", () => {
  test.each([
    ['o3.raw', [], 'qcow2', 'raw'],
    ['o3.img', [], 'qcow2', 'raw'],
    ['o3.vmdk', [], 'qcow2', 'vmdk'],
    ['o3r.qcow2', ['-O', 'raw'], 'raw', 'qcow2'],
    ['o3v.qcow2', ['-O', 'vmdk'], 'vmdk', 'qcow2'],
  ])('%s %s', (name, opts, written, named) => {
    const out = join(dir, name);
    const r = imgdedup(['convert', ...opts, src, out]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(qemuImg('info', '--output=json', out))).toMatchObject({ format: written });
    const hint = `imgdedup: note: ${out} is written as ${written} (-O ${written}${opts.length === 0 ? ', the default' : ''}), although its extension names ${named}`;
    expect(r.stderr.split('\n').filter((l) => l.startsWith('imgdedup: note:'))).toEqual([hint]);
  });
  test.each([
    ['fine.qcow2', []],
    ['fine.raw', ['-O', 'raw']],
    ['fine.img', ['-O', 'raw']],
    ['fine.vmdk', ['-O', 'vmdk']],
    ['noext', []],
    ['other.bin', ['-O', 'raw']],
  ])('%s %s: no hint', (name, opts) => {
    const r = imgdedup(['convert', ...opts, src, join(dir, name)]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('note:');
  });
});
