/**
 * How ls reads PATH and orders -R, against the host tree that mkfs.ext4 -d copied: a
 * trailing '/' demands a directory and follows a symlink, symlinks resolve inside the
 * filesystem (bounded), a part in quotes that could be a literal name is never guessed,
 * and -R lists in depth-first pre-order with siblings sorted by name bytes.
 */
import { mkdirSync, readdirSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { CLI, imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-lspaths-');
let src = '';
let fs = '';

/** The oracle for -R: the host tree, depth-first pre-order, siblings sorted by name bytes. */
function preOrder(dir: string, prefix = ''): string[] {
  const names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
  return names.flatMap((n) => {
    const path = `${prefix}/${n.toString()}`;
    const full = join(dir, n.toString());
    return [path, ...(lstatSync(full).isDirectory() ? preOrder(full, path) : [])];
  });
}

beforeAll(() => {
  src = join(tmp(), 'src');
  for (const d of ['etc', 'srv', 'a/x', 'audit', 'q', 'r']) mkdirSync(join(src, d), { recursive: true });
  writeFileSync(join(src, 'etc/hosts'), 'h');
  writeFileSync(join(src, 'srv/-dash'), 'd');
  writeFileSync(join(src, 'srv/quoted'), 'plain');
  writeFileSync(join(src, 'srv/"quoted"'), 'literal');
  writeFileSync(join(src, 'q/"only"'), 'literal');
  writeFileSync(join(src, 'r/plain'), 'p');
  writeFileSync(join(src, 'a-b'), '');
  writeFileSync(join(src, 'a/x/y'), '');
  writeFileSync(join(src, 'audit/z'), '');
  symlinkSync('/etc', join(src, 'srv/lnk'));
  symlinkSync('../etc', join(src, 'srv/rel'));
  symlinkSync('../../../../etc', join(src, 'srv/up'));
  symlinkSync('loop2', join(src, 'srv/loop1'));
  symlinkSync('loop1', join(src, 'srv/loop2'));
  fs = join(tmp(), 'fs.raw');
  sh('truncate', ['-s', '8M', fs]);
  sh('mkfs.ext4', ['-q', '-F', '-d', src, fs]);
});

const names = (stdout: string): string[] => stdout.split('\n').filter((l) => l !== '');

describe('PATH', () => {
  test('a regular file with a trailing slash is not a directory (exit 1)', () => {
    const r = imgdedup(['ls', fs, '/srv/-dash/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('/srv/-dash: not a directory');
    expect(r.stdout).toBe('');
  });
  test('without the slash it is the file', () => {
    expect(imgdedup(['ls', fs, '/srv/-dash']).stdout).toBe('-dash\n');
  });
  test.each(['/srv/lnk/', '/srv/rel/', '/srv/up/', '/srv/lnk/.', '/srv/rel/../etc/'])('%s follows the symlink to /etc (absolute from the filesystem root)', (p) => {
    const r = imgdedup(['ls', fs, p]);
    expect(r.stderr).toBe('');
    expect(names(r.stdout)).toEqual(readdirSync(join(src, 'etc')));
  });
  test('a symlink inside PATH is followed', () => {
    const r = imgdedup(['ls', fs, '/srv/lnk/hosts']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('hosts\n');
  });
  test('without the slash the symlink itself is listed', () => {
    expect(imgdedup(['ls', '-l', fs, '/srv/lnk']).stdout).toMatch(/^l.* lnk -> \/etc\n$/);
  });
  test('a symlink loop is an error, not a hang', () => {
    const r = imgdedup(['ls', fs, '/srv/loop1/']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('too many levels of symbolic links');
  });
  test('an empty PATH is a usage error', () => {
    const r = imgdedup(['ls', fs, '']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('PATH is empty');
  });
});

describe('a part in quotes that may be a literal name', () => {
  test('both /srv/"quoted" and /srv/quoted exist: a usage error naming both', () => {
    const r = imgdedup(['ls', fs, '/srv/"quoted"']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('"/srv/\\"quoted\\""');
    expect(r.stderr).toContain('/srv/quoted');
    expect(r.stdout).toBe('');
  });
  test('the two suggestions in that error, pasted into a shell, name one file each', () => {
    const r = imgdedup(['ls', fs, '/srv/"quoted"']);
    const m = /give (.+) for the first or (.+) for the second/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const viaShell = (word: string): unknown => JSON.parse(sh('sh', ['-c', `node "$0" ls --json "$1" ${word}`, CLI, fs]))[0];
    expect(viaShell(m![1]!)).toMatchObject({ name: '"\\"quoted\\""', size: 'literal'.length });
    expect(viaShell(m![2]!)).toMatchObject({ name: 'quoted' });
  });
  test('the quoted form that ls prints names the literal one alone', () => {
    const r = imgdedup(['ls', '--json', fs, '"/srv/\\"quoted\\""']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)[0]).toMatchObject({ name: '"\\"quoted\\""', size: 'literal'.length });
  });
  test('only the literal name exists: it is used', () => {
    const r = imgdedup(['ls', '--json', fs, '/q/"only"']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)[0]).toMatchObject({ size: 'literal'.length });
  });
  test('only the unquoted name exists: it is used', () => {
    const r = imgdedup(['ls', fs, '/r/"plain"']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('plain\n');
  });
});

test('-R lists depth first, pre-order, siblings sorted by name bytes', () => {
  const r = imgdedup(['ls', '-R', '--json', fs, '/']);
  expect(r.status, r.stderr).toBe(0);
  const entries = JSON.parse(r.stdout) as Array<{ path: string; pathBytes?: string }>;
  const ours = entries.map((e) => (e.pathBytes !== undefined ? Buffer.from(e.pathBytes, 'base64').toString() : e.path)).filter((p) => !p.startsWith('/lost+found'));
  expect(ours).toEqual(preOrder(src));
  // The case that tells pre-order from sorting full paths: "/a-b" sorts between "/a" and "/a/x".
  expect(ours.slice(0, 4)).toEqual(['/a', '/a/x', '/a/x/y', '/a-b']);
});
