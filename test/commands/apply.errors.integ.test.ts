/**
 * What `apply` refuses, and how: a filesystem that is not clean (each dirty state), the
 * features the writer cannot keep correct, an MMP block in use, an update that does not
 * fit (NO_SPACE with the bytes), a bad update entry (BAD_UPDATE), an output that exists.
 * Each is a typed error with a non-zero exit, BASE is unchanged and nothing is written
 * next to the output. A whiteout for a missing path is a warning, not an error.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean, strictFsck } from '../helpers/e2fsck.js';
import { imgdedup } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-apply-err-');
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
let tree = '';
let update = '';

beforeAll(() => {
  tree = join(tmp(), 'tree');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  writeFileSync(join(tree, 'etc/motd'), 'hello\n');
  update = join(tmp(), 'update');
  mkdirSync(join(update, 'etc'), { recursive: true });
  writeFileSync(join(update, 'etc/motd'), 'patched\n');
});

function image(name: string, args: string[] = [], sizeMiB = 16, type?: 'ext3'): string {
  const img = join(tmp(), `${name}.raw`);
  makeExt4Image(img, tree, { args: ['-N', '256', ...args], sizeMiB, ...(type ? { type } : {}) });
  return img;
}

/** The inode number of entry `name` of directory `dir` (`debugfs ls -l`). */
function inoOf(img: string, dir: string, name: string): number {
  const listing = execFileSync('debugfs', ['-R', `ls -l ${dir}`, img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return Number(new RegExp(`^\\s*(\\d+)\\s.*\\s${name}\\s*$`, 'm').exec(listing)![1]);
}

/** Runs apply expecting failure: the error object, BASE unchanged, no file left in the output's directory. */
function refused(base: string, upd: string, expected: { status: number; code: string }): Record<string, unknown> {
  const before = sha(base);
  const outDir = join(tmp(), `out-${expected.code}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(outDir);
  const r = imgdedup(['--json', 'apply', base, upd, '-o', join(outDir, 'out.raw')]);
  expect(r.status, r.stderr).toBe(expected.status);
  const err = JSON.parse(r.stderr) as { code: string; message: string; data: Record<string, unknown> };
  expect(err.code).toBe(expected.code);
  expect(sha(base)).toBe(before);
  expect(readdirSync(outDir)).toEqual([]);
  return { ...err.data, message: err.message };
}

describe('a filesystem that is not clean is refused (DIRTY_FILESYSTEM, exit 2)', () => {
  test.each([
    ['not cleanly unmounted', ['ssv state 0'], /not cleanly unmounted/],
    ['recorded errors', ['ssv state 3'], /recorded errors/],
    ['orphans', ['ssv last_orphan 12'], /orphan/],
    ['a journal to replay', ['feature needs_recovery'], /journal needs recovery/],
  ])('%s', (name, cmds, reason) => {
    const img = image(`dirty-${name.replace(/\W/g, '_')}`);
    debugfsWrite(img, cmds);
    const e = refused(img, update, { status: 2, code: 'DIRTY_FILESYSTEM' });
    expect(e.message).toMatch(reason);
    expect(e.message).toMatch(/shut the VM down cleanly or run e2fsck/);
  });
});

describe('damage e2fsck would repair is refused, not written on (found by a new user)', () => {
  const upd = (): string => {
    const u = join(tmp(), 'etc-update');
    mkdirSync(join(u, 'etc'), { recursive: true });
    writeFileSync(join(u, 'etc/motd'), 'patched\n');
    return u;
  };
  test.each([
    ['a directory reached by a path but with no links', ['sif /etc links_count 0'], /no links/, 'i_links_count'],
    ['an entry that says directory over an inode that is not one', ['sif /etc mode 0100644'], /type differs from its directory entry's file_type/, 'i_mode'],
  ])('%s: CORRUPT_IMAGE naming the inode', (name, cmds, detail, field) => {
    const img = image(`damaged-${name.replace(/\W/g, '_').slice(0, 30)}`);
    const ino = inoOf(img, '/', 'etc');
    debugfsWrite(img, cmds);
    const e = refused(img, upd(), { status: 2, code: 'CORRUPT_IMAGE' });
    expect(e.message).toMatch(detail);
    expect(e.structure).toBe(`ext4.inode[${ino}].${field}`);
  });

  test('errors the kernel counted while the state still says clean: DIRTY_FILESYSTEM', () => {
    const img = image('error-count');
    debugfsWrite(img, ['ssv error_count 3']);
    const e = refused(img, update, { status: 2, code: 'DIRTY_FILESYSTEM' });
    expect(e.message).toMatch(/s_error_count 3/);
  });
});

describe('damage in the directories the update goes through is refused, though the update does not touch the damaged entry (found by a new user)', () => {
  let damagedTree = '';
  let etcUpdate = '';
  beforeAll(() => {
    damagedTree = join(tmp(), 'damaged-tree');
    mkdirSync(join(damagedTree, 'etc'), { recursive: true });
    mkdirSync(join(damagedTree, 'usr/share/doc'), { recursive: true });
    writeFileSync(join(damagedTree, 'etc/motd'), 'hello\n');
    writeFileSync(join(damagedTree, 'etc/hosts'), '127.0.0.1 localhost\n');
    symlinkSync('etc/motd', join(damagedTree, 'ln'));
    etcUpdate = join(tmp(), 'motd-update');
    mkdirSync(join(etcUpdate, 'etc'), { recursive: true });
    writeFileSync(join(etcUpdate, 'etc/motd'), 'patched\n');
  });

  const treeImage = (name: string): string => {
    const img = join(tmp(), `${name}.raw`);
    makeExt4Image(img, damagedTree, { args: ['-N', '256'], sizeMiB: 16 });
    return img;
  };

  test.each([
    ['a symlink in / whose inode says directory', '/', 'ln', ['sif /ln mode 040755'], 'i_mode', /incorrect filetype/],
    ['a file next to the updated one whose inode says fifo', '/etc', 'hosts', ['sif /etc/hosts mode 010644'], 'i_mode', /incorrect filetype/],
    ['a file next to the updated one whose inode is deleted', '/etc', 'hosts', ['sif /etc/hosts links_count 0'], 'i_links_count', /deleted\/unused inode|Unattached|links_count/i],
  ])('%s: CORRUPT_IMAGE naming that inode, nothing written', (name, dir, entry, cmds, field, fsckSays) => {
    const img = treeImage(`untouched-${name.replace(/\W/g, '_').slice(0, 40)}`);
    const ino = inoOf(img, dir, entry);
    debugfsWrite(img, cmds);
    // The oracle: e2fsck finds the damage.
    const fsck = strictFsck(img);
    expect(fsck.clean).toBe(false);
    expect(fsck.output).toMatch(fsckSays);
    const e = refused(img, etcUpdate, { status: 2, code: 'CORRUPT_IMAGE' });
    expect(e.structure).toBe(`ext4.inode[${ino}].${field}`);
  });

  test('the same tree undamaged takes the update and stays strictly clean', () => {
    const img = treeImage('untouched-healthy');
    const out = join(tmp(), 'untouched-healthy-out.raw');
    const r = imgdedup(['apply', img, etcUpdate, '-o', out]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(out);
  });
});

describe('what the writer cannot keep correct is refused by name (WRITE_REFUSED, exit 2)', () => {
  test.each([
    ['quota', ['-O', 'quota'], undefined],
    ['casefold', ['-O', 'casefold'], undefined],
    ['^extent', [], 'ext3' as const],
  ])('%s', (feature, args, type) => {
    const img = image(`feature-${feature.replace(/\W/g, '_')}`, args, 16, type);
    const e = refused(img, update, { status: 2, code: 'WRITE_REFUSED' });
    expect(e.feature).toBe(feature);
  });

  test('project quota (refused as quota or project, whichever is named first)', () => {
    const img = image('feature-project', ['-I', '256', '-O', 'project']);
    const e = refused(img, update, { status: 2, code: 'WRITE_REFUSED' });
    expect(String(e.feature)).toMatch(/^(quota|project)$/);
  });

  test('an MMP block that is in use; a clean one is written and stays clean', () => {
    const img = image('mmp', ['-b', '4096', '-O', 'mmp']);
    const ok = imgdedup(['apply', img, update, '-o', `${img}.out`]);
    expect(ok.status, ok.stderr).toBe(0);
    expectStrictFsckClean(`${img}.out`);
    // A node that has it mounted keeps a running sequence number in the MMP block (debugfs -w
    // would restore "clean" on exit, so the bytes are written directly).
    const mmpBlock = Number(/MMP block number:\s+(\d+)/.exec(execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))![1]);
    const bytes = readFileSync(img);
    bytes.writeUInt32LE(0x1234, mmpBlock * 4096 + 4);
    writeFileSync(img, bytes);
    const e = refused(img, update, { status: 2, code: 'WRITE_REFUSED' });
    expect(e.message).toMatch(/multi-mount protection/);
  });
});

describe('bad updates are refused before anything is written', () => {
  test('an update larger than the free space is NO_SPACE with the bytes needed and free', () => {
    const img = image('small', ['-b', '4096'], 8);
    const big = join(tmp(), 'big-update');
    mkdirSync(big);
    execFileSync('dd', ['if=/dev/urandom', `of=${join(big, 'huge.bin')}`, 'bs=1M', 'count=12', 'status=none']);
    const e = refused(img, big, { status: 2, code: 'NO_SPACE' });
    expect(e.bytesNeeded).toBeGreaterThanOrEqual(12 << 20);
    expect(e.bytesFree).toBeLessThan(8 << 20);
  });

  test('a sparse file larger than the filesystem is not NO_SPACE: only what it stores counts, and its holes stay holes', () => {
    const img = image('sparse-fits', ['-b', '4096'], 8);
    const upd = join(tmp(), 'sparse-update');
    mkdirSync(upd);
    const f = join(upd, 'sparse.img');
    execFileSync('truncate', ['-s', '64M', f]);
    execFileSync('dd', ['if=/dev/urandom', `of=${f}`, 'bs=4k', 'count=2', 'seek=1000', 'conv=notrunc', 'status=none']);
    const out = join(tmp(), 'sparse-out.raw');
    const r = imgdedup(['apply', img, upd, '-o', out]);
    expect(r.status, r.stderr).toBe(0);
    expectStrictFsckClean(out);
    const stat = execFileSync('debugfs', ['-R', 'stat /sparse.img', out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(stat).toMatch(/Size: 67108864\b/);
    const dumped = join(tmp(), 'sparse-dump');
    execFileSync('debugfs', ['-R', `dump /sparse.img ${dumped}`, out], { stdio: 'ignore' });
    expect(sha(dumped)).toBe(sha(f));
  });

  async function tarWith(name: string, entries: Array<{ name: string; body?: string }>): Promise<string> {
    const file = join(tmp(), name);
    const p = pack();
    for (const e of entries) p.entry({ name: e.name, mode: 0o644 }, e.body ?? '');
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p) chunks.push(c as Buffer);
    writeFileSync(file, Buffer.concat(chunks));
    return file;
  }

  test("an entry with a '..' component is BAD_UPDATE naming the entry", async () => {
    const img = image('dotdot');
    const layer = await tarWith('dotdot.tar', [{ name: 'etc/ok', body: 'x' }, { name: 'etc/../../escape', body: 'y' }]);
    const e = refused(img, layer, { status: 2, code: 'BAD_UPDATE' });
    expect(e.message).toMatch(/\.\./);
  });

  test('a name over 255 bytes is BAD_UPDATE', async () => {
    const img = image('longname');
    const layer = await tarWith('long.tar', [{ name: `etc/${'n'.repeat(256)}`, body: 'x' }]);
    refused(img, layer, { status: 2, code: 'BAD_UPDATE' });
  });

  test('a whiteout for a path that does not exist is a warning, and the rest applies', () => {
    const img = image('whiteout');
    const upd = join(tmp(), 'wh-update');
    mkdirSync(join(upd, 'etc'), { recursive: true });
    writeFileSync(join(upd, 'etc/.wh.nothing-here'), '');
    writeFileSync(join(upd, 'etc/new'), 'n\n');
    const r = imgdedup(['apply', img, upd, '-o', `${img}.out`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*whiteout for \/etc\/nothing-here, which does not exist/);
    expectStrictFsckClean(`${img}.out`);
  });
});

describe('the command line', () => {
  test('an existing output is OUTPUT_EXISTS unless --force; -o is required without --dry-run', () => {
    const img = image('cli');
    writeFileSync(`${img}.out`, 'precious');
    const r = imgdedup(['apply', img, update, '-o', `${img}.out`]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/OUTPUT_EXISTS/);
    expect(readFileSync(`${img}.out`, 'utf8')).toBe('precious');
    expect(imgdedup(['apply', img, update, '-o', `${img}.out`, '--force']).status).toBe(0);
    expectStrictFsckClean(`${img}.out`);
    const u = imgdedup(['apply', img, update]);
    expect(u.status).toBe(1);
    expect(u.stderr).toMatch(/-o OUT/);
  });

  test('--dry-run writes nothing and lists the changes', () => {
    const img = image('dry');
    const before = sha(img);
    const r = imgdedup(['apply', '--dry-run', img, update]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^M \/etc\/motd$/m);
    expect(r.stdout).toMatch(/would apply/);
    expect(sha(img)).toBe(before);
  });
});
