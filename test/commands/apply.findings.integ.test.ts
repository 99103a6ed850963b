/**
 * Regressions from testing `apply` as a new user would (each case is one finding): freed
 * inodes that e2fsck took for garbage, an output naming a file of BASE's backing chain, xattrs
 * on a filesystem without ext_attr, a whiteout after its own entry in a tar, a layer
 * directory with a stray file, a replaced directory's children listed as added, a
 * corrupt block bitmap reported as an internal error, an update given through a symlink,
 * and running out of inodes found only half-way.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { describe, expect, test } from 'vitest';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean } from '../helpers/e2fsck.js';
import { qemuImg } from '../helpers/qemu.js';
import { imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-apply-findings-');

function dir(name: string, files: Record<string, string>): string {
  const root = join(tmp(), name);
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), c);
  }
  mkdirSync(root, { recursive: true });
  return root;
}

async function tar(name: string, entries: Array<{ name: string; body?: string; type?: 'directory' }>): Promise<string> {
  const file = join(tmp(), name);
  const p = pack();
  for (const e of entries) p.entry({ name: e.name, mode: e.type ? 0o755 : 0o644, ...(e.type ? { type: e.type } : {}) }, e.body ?? '');
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  writeFileSync(file, Buffer.concat(chunks));
  return file;
}

describe('apply, after a new user tried it', () => {
  test('deleting most files of an inode-table block leaves no "garbage" inode (freed inodes keep an empty extent root)', () => {
    const files: Record<string, string> = {};
    const wh: Record<string, string> = {};
    for (let i = 1; i <= 40; i++) files[`d/f${i}`] = `${i}\n`;
    for (let i = 1; i <= 39; i++) wh[`d/.wh.f${i}`] = '';
    const img = join(tmp(), 'garbage.raw');
    makeExt4Image(img, dir('garbage-base', files), { args: ['-b', '4096'], sizeMiB: 64 });
    const r = imgdedup(['apply', img, dir('garbage-upd', wh), '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(`${img}.out`);
  });

  test('times a 128-byte inode cannot hold (after 2038) are clamped as the kernel clamps them, and the summary says so', () => {
    const img = join(tmp(), 'y2038.raw');
    makeExt4Image(img, dir('y2038-base', { 'etc/x': 'x' }), { args: ['-I', '128'], sizeMiB: 32 });
    const upd = dir('y2038-upd', { 'etc/later': 'later\n', 'etc/now': 'now\n' });
    execFileSync('touch', ['-h', '-d', '2040-01-01 00:00:00 UTC', join(upd, 'etc/later')]);
    const r = imgdedup(['--json', 'apply', img, upd, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    const warnings = (JSON.parse(r.stdout) as { warnings: string[] }).warnings;
    expect(warnings.filter((w) => /cannot store/.test(w))).toEqual([expect.stringMatching(/^1 entry has times .*128-byte inodes hold 1901-12-13 to 2038-01-19.*first: \/etc\/later/)]);
    expectStrictFsckClean(`${img}.out`);
    const [later] = debugfsBatch(`${img}.out`, ['stat /etc/later']);
    expect(later).toMatch(/mtime: 0x7fffffff/);
  });

  test("an output that is a file of BASE's backing chain is refused, even with --force", () => {
    const img = join(tmp(), 'chain.raw');
    makeExt4Image(img, dir('chain-base', { 'etc/x': 'x' }), { args: [], sizeMiB: 32 });
    const lower = join(tmp(), 'lower.qcow2');
    const top = join(tmp(), 'top.qcow2');
    qemuImg('convert', '-O', 'qcow2', img, lower);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', lower, '-F', 'qcow2', top);
    const before = readFileSync(lower);
    const r = imgdedup(['apply', '--overlay', top, dir('chain-upd', { 'srv/f': 'x' }), '-o', lower, '--force']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/backing chain/);
    expect(readFileSync(lower).equals(before)).toBe(true);
  });

  test('xattrs on a filesystem without ext_attr are BAD_UPDATE, not a damaged output', () => {
    const img = join(tmp(), 'noxattr.raw');
    makeExt4Image(img, dir('noxattr-base', { 'etc/x': 'x' }), { args: ['-O', '^ext_attr'], sizeMiB: 32 });
    const upd = dir('noxattr-upd', { f: 'x\n' });
    sh('setfattr', ['-n', 'user.a', '-v', 'q'.repeat(500), join(upd, 'f')]);
    const r = imgdedup(['--json', 'apply', img, upd, '-o', `${img}.out`]);
    expect(r.status).toBe(2);
    // It names the image and the path (found by a new user: only "ext4.inode[N].xattrs" before).
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'BAD_UPDATE', data: { file: img, path: '/f' } });
  });

  test('a whiteout after its own entry in the same tar layer does not delete it', async () => {
    const img = join(tmp(), 'wh-order.raw');
    makeExt4Image(img, dir('wh-base', { 'srv/old': 'o' }), { args: [], sizeMiB: 32 });
    const layer = await tar('wh-order.tar', [{ name: 'srv/a', body: 'new' }, { name: 'srv/.wh.a' }, { name: 'srv/.wh.old' }]);
    const r = imgdedup(['apply', img, layer, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    const [ls] = debugfsBatch(`${img}.out`, ['ls /srv']);
    expect(ls).toMatch(/\ba\b/);
    expect(ls).not.toMatch(/\bold\b/);
  });

  test("a whiteout after the layer's own directory of that name hides what was below it and keeps what the layer put there, in either order (found by a new user: the base's children were kept)", async () => {
    const img = join(tmp(), 'wh-dir.raw');
    makeExt4Image(img, dir('wh-dir-base', { 'srv/old/sub/x': 'x', 'srv/old/y': 'y', 'srv/opq/b/x': 'x', 'srv/opq/z': 'z' }), { args: [], sizeMiB: 32 });
    const ls = async (name: string, entries: Parameters<typeof tar>[1]): Promise<string[]> => {
      const out = `${img}.${name}`;
      const r = imgdedup(['apply', img, await tar(`${name}.tar`, entries), '-o', out]);
      expect(r.status, r.stderr).toBe(0);
      expectStrictFsckClean(out);
      return debugfsBatch(out, ['ls /srv/old', 'ls /srv/opq', 'ls /srv/opq/b']).map((l) => l.split(/\s+/).filter((w) => /^[a-z.]+$/.test(w) && w !== '.' && w !== '..').sort().join(' '));
    };
    // GNU tar order (the directory, then the whiteout beside it), and the whiteout first.
    const dirThenWh = [{ name: 'srv/old/', type: 'directory' as const }, { name: 'srv/old/mine', body: 'm' }, { name: 'srv/.wh.old' }];
    const whThenDir = [{ name: 'srv/.wh.old' }, { name: 'srv/old/', type: 'directory' as const }, { name: 'srv/old/mine', body: 'm' }];
    // An opaque directory keeps the layer's own subdirectory but not what the base had in it.
    const opq = [{ name: 'srv/opq/b/', type: 'directory' as const }, { name: 'srv/opq/b/new', body: 'n' }, { name: 'srv/opq/.wh..wh..opq' }];
    expect(await ls('dirwh', [...dirThenWh, ...opq])).toEqual(['mine', 'b', 'new']);
    expect(await ls('whdir', [...whThenDir, ...opq])).toEqual(['mine', 'b', 'new']);
  });

  test("free counts: a stale superblock summary is not carried into OUT (the bitmaps are counted), and a group the update writes whose descriptor count disagrees with its bitmap is CORRUPT_IMAGE (found by a new user: both reached OUT)", () => {
    const upd = dir('counts-upd', { 'srv/new': 'new\n' });
    const base = (name: string, script: string): string => {
      const img = join(tmp(), `${name}.raw`);
      makeExt4Image(img, dir(`${name}-tree`, { 'srv/old': 'o' }), { args: ['-b', '4096', '-O', '^metadata_csum'], sizeMiB: 32 });
      execFileSync('debugfs', ['-w', '-f', '-', img], { input: script, stdio: ['pipe', 'ignore', 'ignore'] });
      return img;
    };
    for (const field of ['free_blocks_count', 'free_inodes_count']) {
      const stale = base(`sb-${field}`, `ssv ${field} 7\n`);
      // The oracle agrees the input is off: e2fsck counts otherwise.
      expect(spawnSync('e2fsck', ['-fn', stale], { encoding: 'utf8' }).stdout).toMatch(/count wrong/i);
      const ok = imgdedup(['apply', stale, upd, '-o', `${stale}.out`]);
      expect(ok.status, ok.stderr).toBe(0);
      expectStrictFsckClean(`${stale}.out`);
      const damaged = base(`bg-${field}`, `set_bg 0 ${field} 7\n`);
      const r = imgdedup(['--json', 'apply', damaged, upd, '-o', `${damaged}.out`]);
      expect(r.status, r.stderr).toBe(2);
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: { file: damaged, structure: `ext4.group_desc[0].bg_${field}`, actual: 7 } });
    }
  });

  test("running out of room after the estimate passed is NO_SPACE said as the update's: where, after how many entries, and the estimate against what was free (found by a new user: one allocation's figures)", () => {
    const files: Record<string, string> = {};
    for (let i = 1; i <= 400; i++) files[`d/file-number-${i}`] = 'x'.repeat(100);
    // Sizes about where the estimate (a block a file) fits and the new directory's blocks do not (580 KiB with e2fsprogs 1.47).
    const upd = dir('short-upd', files);
    const base = dir('short-base', { 'etc/x': 'hi\n' });
    const midway: Array<{ detail: string; estimatedBytesNeeded: number; bytesFreeBefore: number }> = [];
    for (let kib = 568; kib <= 600; kib += 4) {
      const img = join(tmp(), `short-${kib}.raw`);
      execFileSync('truncate', ['-s', `${kib}K`, img]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-b', '1024', '-N', '600', '-d', base, img]);
      const r = imgdedup(['--json', 'apply', img, upd, '-o', `${img}.out`]);
      if (r.status === 0) continue;
      expect(r.status, r.stderr).toBe(2);
      const err = JSON.parse(r.stderr) as { code: string; data: { detail: string; estimatedBytesNeeded?: number; bytesFreeBefore?: number } };
      expect(err.code).toBe('NO_SPACE');
      expect(existsSync(`${img}.out`)).toBe(false);
      if (err.data.estimatedBytesNeeded !== undefined) midway.push(err.data as (typeof midway)[number]);
    }
    expect(midway.length).toBeGreaterThan(0);
    for (const m of midway) {
      expect(m.detail).toMatch(/^the filesystem ran out of room at \/d\/file-number-\d+, after \d+ of the update's 401 entries \(.*\); the update was estimated at \d+ bytes, against \d+ free/);
      expect(m.estimatedBytesNeeded).toBeLessThanOrEqual(m.bytesFreeBefore);
    }
  });

  test("a directory the update adds to whose i_blocks is not what it holds is CORRUPT_IMAGE, not carried into OUT (found by a new user, without metadata_csum)", () => {
    const img = join(tmp(), 'iblocks.raw');
    makeExt4Image(img, dir('iblocks-base', { 'srv/old': 'o' }), { args: ['-b', '4096', '-O', '^metadata_csum'], sizeMiB: 32 });
    execFileSync('debugfs', ['-w', '-R', 'sif /srv blocks 3607101442', img], { stdio: 'ignore' });
    expect(spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' }).stdout).toMatch(/i_blocks is 3607101442, should be 8/);
    const r = imgdedup(['--json', 'apply', img, dir('iblocks-upd', { 'srv/new': 'n' }), '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: { file: img, expected: 8, actual: 3607101442 } });
    expect(existsSync(`${img}.out`)).toBe(false);
  });

  test('an output whose extension names another format than the one written gets a note (found by a new user: --overlay -o ov.raw wrote a qcow2 without a word)', () => {
    const img = join(tmp(), 'ext.raw');
    makeExt4Image(img, dir('ext-base', { 'etc/x': 'x' }), { args: [], sizeMiB: 32 });
    const r = imgdedup(['--json', 'apply', '--overlay', img, dir('ext-upd', { 'etc/y': 'y' }), '-o', join(tmp(), 'ov.raw')]);
    expect(r.status, r.stderr).toBe(0);
    expect(qemuImg('info', '--output=json', join(tmp(), 'ov.raw'))).toMatch(/"format": "qcow2"/);
    expect((JSON.parse(r.stdout) as { warnings: string[] }).warnings).toEqual([expect.stringMatching(/ov\.raw is written as qcow2 .*its extension names raw/)]);
  });

  test('a directory holding layers and a stray file is refused, not applied as a tree', async () => {
    const img = join(tmp(), 'stray.raw');
    makeExt4Image(img, undefined, { args: [], sizeMiB: 32 });
    const layers = join(tmp(), 'layers');
    mkdirSync(layers);
    execFileSync('cp', [await tar('01.tar', [{ name: 'x', body: 'x' }]), join(layers, '01.tar')]);
    writeFileSync(join(layers, 'README.md'), 'notes');
    const r = imgdedup(['--json', 'apply', '--dry-run', img, layers]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stderr).code).toBe('BAD_UPDATE');
  });

  test('what one layer writes and a later layer deletes or replaces is not stored in OUT, nor counted as written: freed blocks are not kept (found by a new user: a deleted file\'s bytes stayed in the new base)', async () => {
    const img = join(tmp(), 'freed.raw');
    makeExt4Image(img, dir('freed-base', { 'etc/x': 'x' }), { args: ['-b', '4096'], sizeMiB: 32 });
    const secret = 'SECRET-LAYER-BYTES-0123456789abcdef'.repeat(4096);
    const replaced = 'OLD-VERSION-OF-A-REPLACED-FILE-xyz'.repeat(4096);
    const layers = join(tmp(), 'freed-layers');
    mkdirSync(layers);
    execFileSync('cp', [await tar('f1.tar', [{ name: 'srv/secret.bin', body: secret }, { name: 'srv/app.bin', body: replaced }]), join(layers, '01.tar')]);
    execFileSync('cp', [await tar('f2.tar', [{ name: 'srv/.wh.secret.bin' }, { name: 'srv/app.bin', body: 'new app\n' }]), join(layers, '02.tar')]);
    const complete = `${img}.out`;
    const overlay = join(tmp(), 'freed-overlay.qcow2');
    for (const args of [['-o', complete], ['--overlay', '-o', overlay]]) {
      const r = imgdedup(['--json', 'apply', img, layers, ...args]);
      expect(r.status, r.stderr).toBe(0);
      // Nor counted: the content written is what the update leaves, the one surviving file's.
      expect(JSON.parse(r.stdout).bytesWritten).toBe(Buffer.byteLength('new app\n'));
    }
    expectStrictFsckClean(complete);
    expect(debugfsBatch(complete, ['cat /srv/app.bin'])[0]).toBe('new app\n');
    // The oracle: the bytes themselves, searched for in the output files.
    for (const f of [complete, overlay]) {
      const bytes = readFileSync(f);
      expect(bytes.indexOf('SECRET-LAYER-BYTES'), f).toBe(-1);
      expect(bytes.indexOf('OLD-VERSION-OF-A-REPLACED'), f).toBe(-1);
    }
  });

  test("a directory a later layer replaces by a file: its children are reported deleted, not added", async () => {
    const img = join(tmp(), 'phantom.raw');
    makeExt4Image(img, undefined, { args: [], sizeMiB: 32 });
    const layers = join(tmp(), 'phantom-layers');
    mkdirSync(layers);
    execFileSync('cp', [await tar('l1.tar', [{ name: 'd', type: 'directory' }, { name: 'd/z', body: 'z' }]), join(layers, '01.tar')]);
    execFileSync('cp', [await tar('l2.tar', [{ name: 'd', body: 'now a file' }]), join(layers, '02.tar')]);
    const r = imgdedup(['apply', '--dry-run', img, layers]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^A \/d$/m);
    expect(r.stdout).not.toMatch(/\/d\/z/);
  });

  test('a block bitmap that disagrees with the inodes is CORRUPT_IMAGE (exit 2), not an internal error', () => {
    const img = join(tmp(), 'badbitmap.raw');
    makeExt4Image(img, dir('bb-base', { 'd/big': 'x'.repeat(200_000) }), { args: ['-b', '4096', '-O', '^metadata_csum'], sizeMiB: 64 });
    const [blocks] = debugfsBatch(img, ['blocks /d/big']);
    const first = Number(blocks!.trim().split(/\s+/)[0]);
    const bitmapBlock = Number(/Block bitmap at (\d+)/.exec(execFileSync('dumpe2fs', [img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))![1]);
    const bytes = readFileSync(img);
    for (let b = first; b < first + 10; b++) bytes[bitmapBlock * 4096 + (b >> 3)]! &= ~(1 << (b & 7));
    writeFileSync(img, bytes);
    const upd = join(tmp(), 'bb-upd');
    mkdirSync(join(upd, 'd'), { recursive: true });
    writeFileSync(join(upd, 'd/.wh.big'), '');
    const r = imgdedup(['--json', 'apply', img, upd, '-o', `${img}.out`]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stderr).code).toBe('CORRUPT_IMAGE');
  });

  test('an update given as a symlink to a tree is read as the tree', () => {
    const img = join(tmp(), 'symlinked.raw');
    makeExt4Image(img, undefined, { args: [], sizeMiB: 32 });
    const link = join(tmp(), 'upd-link');
    symlinkSync(dir('real-upd', { 'etc/motd': 'hi\n' }), link);
    const r = imgdedup(['apply', img, link, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(`${img}.out`);
  });

  test('an update with more new files than free inodes is NO_SPACE before anything is written', () => {
    const img = join(tmp(), 'inodes.raw');
    makeExt4Image(img, undefined, { args: ['-N', '64'], sizeMiB: 32 });
    const files: Record<string, string> = {};
    for (let i = 0; i < 100; i++) files[`f${i}`] = 'x';
    const r = imgdedup(['--json', 'apply', img, dir('many', files), '-o', `${img}.out`]);
    expect(r.status).toBe(2);
    const e = JSON.parse(r.stderr) as { code: string; message: string };
    expect(e.code).toBe('NO_SPACE');
    expect(e.message).toMatch(/free inodes/);
  });
  test('an opaque marker under a parent that is a symlink in BASE empties the directory it points to (merged /usr)', async () => {
    const base = dir('opq-base', { 'usr/lib/keep': 'k\n', 'etc/x': 'x\n' });
    symlinkSync('usr/lib', join(base, 'lib'));
    const img = join(tmp(), 'opq.raw');
    makeExt4Image(img, base, { args: ['-b', '4096'], sizeMiB: 32 });
    const layer = await tar('opq.tar', [{ name: 'lib/.wh..wh..opq' }, { name: 'lib/newf', body: 'n\n' }]);
    const r = imgdedup(['apply', img, layer, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(`${img}.out`);
    const [lib, usrlib] = debugfsBatch(`${img}.out`, ['stat /lib', 'ls /usr/lib']);
    expect(lib).toMatch(/Type: symlink/);
    expect(usrlib).toMatch(/newf/);
    expect(usrlib).not.toMatch(/keep/);
  });
  test("two paths of an update that reach one file through BASE's symlink to a directory (lib/x and usr/lib/x): the later is kept, and a warning names both (found by a new user: silent)", () => {
    const base = dir('twice-base', { 'usr/lib/keep': 'k\n' });
    symlinkSync('usr/lib', join(base, 'lib'));
    const img = join(tmp(), 'twice.raw');
    makeExt4Image(img, base, { args: ['-b', '4096'], sizeMiB: 32 });
    const r = imgdedup(['--json', 'apply', img, dir('twice-upd', { 'lib/x': 'A\n', 'usr/lib/x': 'B\n', 'usr/lib/y': 'y\n' }), '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    const warnings = (JSON.parse(r.stdout) as { warnings: string[] }).warnings;
    expect(warnings.filter((w) => /one path in BASE/.test(w))).toHaveLength(1);
    expect(warnings.join('\n')).toMatch(/\/usr\/lib\/x and \/lib\/x are one path in BASE/);
    expectStrictFsckClean(`${img}.out`);
    // The tree walk gives lib/x before usr/lib/x: the later one's content is the file's.
    expect(debugfsBatch(`${img}.out`, ['cat /usr/lib/x'])[0]).toBe('B\n');
  });
  test("a tree's directory over BASE's symlink to a directory goes through it (merged /usr); a tar layer's replaces it, with a warning", async () => {
    const base = dir('usrmerge-base', { 'usr/lib/keep': 'k\n' });
    symlinkSync('usr/lib', join(base, 'lib'));
    const img = join(tmp(), 'usrmerge.raw');
    makeExt4Image(img, base, { args: ['-b', '4096'], sizeMiB: 32 });
    const r = imgdedup(['--json', 'apply', img, dir('usrmerge-upd', { 'lib/foo': 'foo\n' }), '-o', `${img}.tree`]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { warnings: string[] }).warnings.join('\n')).toMatch(/followed into it/);
    expectStrictFsckClean(`${img}.tree`);
    const [lib, foo, keep] = debugfsBatch(`${img}.tree`, ['stat /lib', 'cat /usr/lib/foo', 'cat /usr/lib/keep']);
    expect(lib).toMatch(/Type: symlink/);
    expect(foo).toBe('foo\n');
    expect(keep).toBe('k\n');
    const layer = await tar('usrmerge.tar', [{ name: 'lib/', type: 'directory' }, { name: 'lib/foo', body: 'foo\n' }]);
    const t = imgdedup(['--json', 'apply', img, layer, '-o', `${img}.tar`]);
    expect(t.status, t.stderr).toBe(0);
    expect((JSON.parse(t.stdout) as { warnings: string[] }).warnings.join('\n')).toMatch(/replaced BASE's symlink to a directory/);
    expectStrictFsckClean(`${img}.tar`);
    expect(debugfsBatch(`${img}.tar`, ['stat /lib'])[0]).toMatch(/Type: directory/);
  });

  test("a tar layer's symlink has mode 0777 as debugfs makes it, not its header's 0644 (found by an outside tester)", async () => {
    const img = join(tmp(), 'symmode.raw');
    makeExt4Image(img, dir('symmode-base', { 'srv/x': 'x\n' }), { args: [], sizeMiB: 32 });
    const file = join(tmp(), 'symmode.tar');
    const p = pack();
    p.entry({ name: 'srv/docs', type: 'symlink', linkname: '/etc', mode: 0o644 });
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p) chunks.push(c as Buffer);
    writeFileSync(file, Buffer.concat(chunks));
    const r = imgdedup(['apply', img, file, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(`${img}.out`);
    // The oracle: the same symlink made by debugfs in a copy of the base.
    execFileSync('cp', [img, `${img}.debugfs`]);
    execFileSync('debugfs', ['-w', '-R', 'symlink /srv/docs /etc', `${img}.debugfs`], { stdio: 'ignore' });
    const [ours] = debugfsBatch(`${img}.out`, ['stat /srv/docs']).map(parseStat);
    const [theirs] = debugfsBatch(`${img}.debugfs`, ['stat /srv/docs']).map(parseStat);
    expect(theirs!.mode).toBe(0o777);
    expect({ type: ours!.type, mode: ours!.mode.toString(8) }).toEqual({ type: theirs!.type, mode: theirs!.mode.toString(8) });
  });

  test('--verify reads OUT back and runs e2fsck on it: damage BASE has where the update does not reach is carried into OUT, and --verify says so (VERIFY_FAILED, exit 4)', () => {
    const img = join(tmp(), 'damaged-elsewhere.raw');
    const blob = 'blob-content-'.repeat(2000);
    makeExt4Image(img, dir('damaged-base', { 'srv/blob': blob, 'etc/x': 'x\n' }), { args: ['-b', '1024', '-O', '^metadata_csum,uninit_bg'], sizeMiB: 32 });
    const upd = dir('damaged-upd', { 'etc/new': 'new\n' });
    // A clean BASE: verified.
    const clean = imgdedup(['--json', 'apply', '--verify', img, upd, '-o', join(tmp(), 'clean-out.raw')]);
    expect(clean.status, clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout).verified).toBe(true);
    // /srv/blob's extent header claims more entries than it can hold; no checksum says so, and the update does not touch the file.
    const imap = sh('debugfs', ['-R', 'imap /srv/blob', img]);
    const blockNo = Number(/located at block (\d+)/.exec(imap)![1]);
    const within = Number(/offset (0x[0-9a-f]+)/.exec(imap)![1]);
    const eEntries = blockNo * 1024 + within + 0x28 + 2;
    const bytes = readFileSync(img);
    bytes[eEntries] = 0x5a;
    writeFileSync(img, bytes);
    expect(spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' }).stdout).toMatch(/corrupt extent header/);
    const carried = imgdedup(['apply', img, upd, '-o', join(tmp(), 'carried-out.raw')]);
    expect(carried.status, carried.stderr).toBe(0);
    const out = join(tmp(), 'verified-out.raw');
    const r = imgdedup(['--json', 'apply', '--verify', img, upd, '-o', out]);
    expect(r.status).toBe(4);
    const err = JSON.parse(r.stderr) as { code: string; data: { file: string; detail: string } };
    expect(err.code).toBe('VERIFY_FAILED');
    expect(err.data.file).toBe(out);
    expect(err.data.detail).toMatch(/corrupt extent header|extent/i);
    // OUT stays for inspection.
    expect(existsSync(out)).toBe(true);
  });

  test("changedBytes is the bytes that differ from BASE (found by a new user: it counted blocks rewritten with their own bytes), and the overlay stores that much", () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 60; i++) files[`srv/d${i % 3}/f${i}`] = `file ${i}\n`.repeat(50 + i);
    const img = join(tmp(), 'changed.raw');
    makeExt4Image(img, dir('changed-base', files), { args: ['-b', '4096'], sizeMiB: 32 });
    const upd: Record<string, string> = {};
    for (let i = 0; i < 60; i += 4) upd[`srv/d${i % 3}/f${i}`] = `file ${i} replaced\n`.repeat(40);
    for (let i = 0; i < 8; i++) upd[`srv/new/n${i}`] = `new ${i}\n`.repeat(300);
    const out = join(tmp(), 'changed-out.raw');
    const r = imgdedup(['--json', 'apply', img, dir('changed-upd', upd), '-o', out]);
    expect(r.status, r.stderr).toBe(0);
    const reported = JSON.parse(r.stdout).changedBytes as number;
    // The oracle: the two raw disks compared 4 KiB block by 4 KiB block.
    const a = readFileSync(img);
    const b = readFileSync(out);
    let differing = 0;
    for (let off = 0; off < Math.max(a.length, b.length); off += 4096) if (!a.subarray(off, off + 4096).equals(b.subarray(off, off + 4096))) differing += 4096;
    expect(differing).toBeGreaterThan(0);
    expect(reported).toBe(differing);
    const ov = join(tmp(), 'changed-ov.qcow2');
    const o = imgdedup(['--json', 'apply', '--overlay', img, dir('changed-upd2', upd), '-o', ov]);
    expect(o.status, o.stderr).toBe(0);
    expect(JSON.parse(o.stdout).changedBytes).toBe(differing);
    const dry = imgdedup(['--json', 'apply', '--dry-run', img, dir('changed-upd3', upd)]);
    expect(JSON.parse(dry.stdout).changedBytes).toBe(differing);
    const map = JSON.parse(sh('qemu-img', ['map', '--output=json', ov])) as Array<{ length: number; depth: number; data: boolean }>;
    expect(map.filter((m) => m.depth === 0 && m.data).reduce((n, m) => n + m.length, 0)).toBe(differing);
  });
});
