/**
 * `imgdedup ls` end to end: an ext4 filesystem in partition 2 of a GPT disk, as a qcow2
 * overlay on a qcow2 base; listings against `debugfs ls -p` and `stat` of the same filesystem.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { imgdedup, sh } from '../helpers/run.js';
import { qemuImg } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseLsP, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-ls-');
const PART_START = 2 * 1024 * 1024;
let fsImage = '';
let overlay = '';
let raw = '';

beforeAll(() => {
  const src = join(tmp(), 'src');
  mkdirSync(join(src, 'etc/sub'), { recursive: true });
  writeFileSync(join(src, 'etc/hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(src, 'etc/sub/deep'), 'x'.repeat(5000));
  symlinkSync('hosts', join(src, 'etc/link'));
  execFileSync('chmod', ['4755', join(src, 'etc/sub/deep')]);
  fsImage = join(tmp(), 'fs.img');
  makeExt4Image(fsImage, src, { args: ['-b', '4096'], sizeMiB: 16 });
  raw = join(tmp(), 'disk.raw');
  execFileSync('truncate', ['-s', '24M', raw]);
  sh('sgdisk', ['-n', '1:2048:+1M', '-t', '1:ef00', '-n', `2:${PART_START / 512 + 2048}:+16M`, '-t', '2:8300', raw]);
  execFileSync('dd', [`if=${fsImage}`, `of=${raw}`, 'bs=1M', `seek=${(PART_START + 1024 * 1024) / (1024 * 1024)}`, 'conv=notrunc', 'status=none']);
  const base = join(tmp(), 'base.qcow2');
  qemuImg('convert', '-O', 'qcow2', raw, base);
  overlay = join(tmp(), 'client.qcow2');
  qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', overlay);
});

describe('imgdedup ls', () => {
  test('lists a directory of partition 2 of a qcow2 overlay like debugfs ls', () => {
    const r = imgdedup(['ls', `${overlay}:2`, '/etc']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const theirs = parseLsP(debugfsBatch(fsImage, ['ls -p /etc'])[0]!).map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
    expect(r.stdout.trim().split('\n')).toEqual(theirs);
  });

  test('-l shows mode, links, uid, gid, size, mtime and symlink targets as debugfs stat has them', () => {
    const r = imgdedup(['ls', '-l', `${overlay}:2`, '/etc']);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const names = ['hosts', 'link', 'sub'];
    const stats = debugfsBatch(fsImage, names.map((n) => `stat /etc/${n}`)).map(parseStat);
    names.forEach((n, i) => {
      const d = stats[i]!;
      const line = lines.find((l) => l.endsWith(` ${n}`) || l.includes(` ${n} -> `))!;
      const cols = line.split(/\s+/);
      const typeChar = { regular: '-', symlink: 'l', directory: 'd' }[d.type];
      expect(cols[0]!.slice(0, 1)).toBe(typeChar);
      expect(Number(cols[1])).toBe(d.links);
      expect(Number(cols[2])).toBe(d.uid);
      expect(Number(cols[3])).toBe(d.gid);
      expect(Number(cols[4])).toBe(d.size);
      expect(`${cols[5]} ${cols[6]}`).toBe(new Date(d.mtime.sec * 1000).toISOString().slice(0, 16).replace('T', ' '));
    });
    expect(lines.find((l) => l.includes(' link -> hosts'))).toMatch(/^lrwxrwxrwx /);
    const deep = imgdedup(['ls', '-l', `${overlay}:2`, '/etc/sub/deep']);
    expect(deep.stdout).toMatch(/^-rwsr-xr-x +1 +0 +0 +5000 /);
  });

  test('-R --json lists everything below a path; --offset on the raw disk gives the same', () => {
    const a = JSON.parse(imgdedup(['ls', '-R', '--json', `${overlay}:2`, '/']).stdout) as Array<{ path: string; ino: number; mode: number }>;
    const b = JSON.parse(imgdedup(['ls', '-R', '--json', '--offset', String(PART_START + 1024 * 1024), raw, '/']).stdout) as typeof a;
    expect(b).toEqual(a);
    expect(a.map((e) => e.path)).toEqual(expect.arrayContaining(['/etc', '/etc/hosts', '/etc/link', '/etc/sub', '/etc/sub/deep', '/lost+found']));
    const root = parseLsP(debugfsBatch(fsImage, ['ls -p /'])[0]!);
    for (const e of root.filter((x) => x.name !== '.' && x.name !== '..')) {
      expect(a.find((x) => x.path === `/${e.name}`)).toMatchObject({ ino: e.ino, mode: e.mode });
    }
  });

  test('without :PART the only ext4 partition is used', () => {
    const r = imgdedup(['ls', overlay, '/etc']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('hosts');
  });

  test('errors: missing path (exit 1), missing partition (exit 1), not ext4 (exit 2)', () => {
    const missing = imgdedup(['ls', `${overlay}:2`, '/nope']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('/nope: no such file or directory');
    const part = imgdedup(['ls', `${overlay}:7`]);
    expect(part.status).toBe(1);
    const notExt = imgdedup(['ls', '--json', `${overlay}:1`]);
    expect(notExt.status).toBe(2);
    // Partition 1 (at 1 MiB) was never formatted.
    expect(JSON.parse(notExt.stderr)).toMatchObject({ code: 'UNSUPPORTED_FORMAT', data: { deviceOffset: 1024 * 1024 } });
    expect(notExt.stderr).toContain('partition 1 holds no recognised filesystem');
  });
});
