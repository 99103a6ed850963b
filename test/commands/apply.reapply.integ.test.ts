/**
 * `imgdedup apply` of an update the image already holds: nothing is rewritten. The second
 * apply's overlay stores no cluster (qemu-img map), its summary counts every entry
 * unchanged, and the filesystem debugfs reads through it is the first output's, strictly
 * e2fsck-clean. A file whose bytes differ while its size, mode, owner and mtime do not is
 * still found changed (content is compared), and so is an xattr change alone.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { makeExt4Image, seeded } from '../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean } from '../helpers/e2fsck.js';
import { qemuImg, qemuMap } from '../helpers/qemu.js';
import { imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { dumpTree } from '../blockdiff/treeOracle.js';
import { debugfsBatch, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-reapply-');
const MTIME = 1_650_000_000;

function random(n: number, seed: number): Buffer {
  const r = seeded(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function put(root: string, p: string, data: string | Buffer): void {
  mkdirSync(dirname(join(root, p)), { recursive: true });
  writeFileSync(join(root, p), data);
}

/** An update: new and replaced files (one of several blocks, one inline-sized), a new directory, a symlink, an xattr. */
function updateTree(root: string): void {
  put(root, 'etc/motd', 'welcome, patched\n');
  put(root, 'etc/new.conf', 'x=2\n');
  sh('setfattr', ['-n', 'user.origin', '-v', 'wave-7', join(root, 'etc/new.conf')]);
  put(root, 'usr/lib/libnew.so.2', random(300_000, 5));
  put(root, 'usr/lib/libold.so.1', random(40_000, 4));
  put(root, 'srv/www/index.html', '<h1>hi</h1>\n');
  symlinkSync('libnew.so.2', join(root, 'usr/lib/libnew.so'));
  // Times last, deepest first (creating children changes a directory's mtime).
  for (const p of ['usr/lib/libnew.so.2', 'usr/lib/libold.so.1', 'etc/motd', 'etc/new.conf', 'srv/www/index.html', 'srv/www', 'srv', 'usr/lib', 'usr', 'etc']) {
    utimesSync(join(root, p), MTIME, MTIME);
  }
  execFileSync('touch', ['-h', '-d', `@${MTIME}`, join(root, 'usr/lib/libnew.so')]);
}

/** The update's paths with everything debugfs says of them (stat fields but times of change, xattrs) and their content. */
function facts(image: string, work: string): Map<string, unknown> {
  const tree = dumpTree(image, work);
  const paths = [...tree.keys()].filter((p) => p !== '/lost+found').sort();
  const stats = debugfsBatch(image, paths.map((p) => `stat "${p}"`)).map(parseStat);
  return new Map(
    paths.map((p, i) => {
      const s = stats[i]!;
      const n = tree.get(p)!;
      return [p, { type: s.type, mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, links: s.links, mtime: s.mtime, xattrs: s.xattrs, content: n.content?.toString('base64'), target: n.target }];
    }),
  );
}

interface ApplyJson {
  added: number;
  replaced: number;
  deleted: number;
  unchanged: number;
  blocksAllocated: number;
}

describe('apply of an update the image already holds', () => {
  let dir = '';
  let first = '';
  let updates = '';
  let firstRun: ApplyJson | undefined;
  beforeAll(() => {
    dir = tmp();
    const base = join(dir, 'base-tree');
    put(base, 'etc/os-release', 'ID=golden\n');
    put(base, 'etc/motd', 'welcome\n');
    put(base, 'usr/lib/libold.so.1', random(70_000, 1));
    const fs = join(dir, 'base.raw');
    makeExt4Image(fs, base, { args: ['-b', '4096', '-N', '1024'], sizeMiB: 32 });
    updates = join(dir, 'updates');
    updateTree(updates);
    first = join(dir, 'first.raw');
    const r = imgdedup(['apply', fs, updates, '-o', first, '--json']);
    expect(r.status, r.stderr).toBe(0);
    firstRun = JSON.parse(r.stdout) as ApplyJson;
  }, 60_000);

  test('a second apply rewrites nothing: every entry unchanged, an empty overlay, the same tree', () => {
    expect(firstRun).toMatchObject({ added: 6, replaced: 5, unchanged: 0 });
    const out = join(dir, 'again.qcow2');
    const r = imgdedup(['apply', '--overlay', first, updates, '-o', out, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as ApplyJson;
    // etc, etc/motd, etc/new.conf, srv, srv/www, srv/www/index.html, usr, usr/lib and its three entries.
    expect(res).toMatchObject({ added: 0, replaced: 0, deleted: 0, unchanged: 11, blocksAllocated: 0 });
    expect(qemuMap(out).filter((e) => e.depth === 0 && e.data)).toEqual([]);
    const flat = join(dir, 'again.raw');
    qemuImg('convert', '-O', 'raw', out, flat);
    expectStrictFsckClean(flat);
    expect(facts(flat, join(dir, 'dump-again'))).toEqual(facts(first, join(dir, 'dump-first')));
  }, 60_000);

  test('a file with other bytes but the same size, mode, owner and mtime is rewritten; so is one whose xattr alone changed', () => {
    const changed = join(dir, 'updates-changed');
    sh('cp', ['-a', updates, changed]);
    const lib = join(changed, 'usr/lib/libold.so.1');
    const bytes = random(40_000, 4);
    bytes[39_999] = bytes[39_999]! ^ 1;
    writeFileSync(lib, bytes);
    utimesSync(lib, MTIME, MTIME);
    sh('setfattr', ['-n', 'user.origin', '-v', 'wave-8', join(changed, 'etc/new.conf')]);
    const out = join(dir, 'changed.raw');
    const r = imgdedup(['apply', first, changed, '-o', out, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout) as ApplyJson).toMatchObject({ added: 0, replaced: 2, deleted: 0, unchanged: 9 });
    expectStrictFsckClean(out);
    const got = facts(out, join(dir, 'dump-changed'));
    expect((got.get('/usr/lib/libold.so.1') as { content: string }).content).toBe(bytes.toString('base64'));
    expect((got.get('/etc/new.conf') as { xattrs: Array<{ name: string; value: string }> }).xattrs.map((x) => [x.name, x.value])).toEqual([['user.origin', '"wave-8"']]);
  }, 60_000);
});
