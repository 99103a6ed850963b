/**
 * `imgdedup ls` on a filesystem whose metadata checksums fail: refused like diff
 * (BAD_CHECKSUM, exit 2, nothing on stdout), as debugfs refuses it; with
 * --ignore-checksums listed as `debugfs -n` lists it, each failure warned about once.
 */
import { closeSync, copyFileSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { imgdedup, run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { parseLsP, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-ls-csum-');
let clean = '';
/** The root directory's entry "passwd" renamed "shadow" in place: its block's checksum fails. */
let badDir = '';
/** Inode 12's i_uid changed in the inode table: its checksum fails. */
let badInode = '';
/** The same for directory /sub's inode (read by the listing, the path lookup and the descent). */
let badDirInode = '';
let dirBlockByte = 0;

/** `debugfs -n` (checksums not verified) run on `image`. */
const debugfsN = (image: string, cmd: string): string => sh('debugfs', ['-n', '-R', cmd, image]);

function patch(image: string, byte: number, bytes: Uint8Array): void {
  const fd = openSync(image, 'r+');
  writeSync(fd, bytes, 0, bytes.length, byte);
  closeSync(fd);
}

beforeAll(() => {
  clean = join(tmp(), 'clean.raw');
  sh('truncate', ['-s', '64M', clean]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'hash_seed=5d4b9f3e-1c2a-4e8b-9a7d-0f1e2d3c4b5a', '-U', '5d4b9f3e-1c2a-4e8b-9a7d-0f1e2d3c4b5a', clean], { env: { E2FSPROGS_FAKE_TIME: '1600000000' } });
  const content = join(tmp(), 'passwd');
  writeFileSync(content, 'root:x:0:0\n');
  sh('debugfs', ['-w', '-R', `write ${content} passwd`, clean]);
  sh('debugfs', ['-w', '-R', 'mkdir sub', clean]);

  badDir = join(tmp(), 'bad-dir.raw');
  copyFileSync(clean, badDir);
  const rootBlock = Number(sh('debugfs', ['-R', 'blocks /', clean]).trim().split(/\s+/)[0]);
  const block = Buffer.alloc(4096);
  const fd = openSync(clean, 'r');
  readSync(fd, block, 0, 4096, rootBlock * 4096);
  closeSync(fd);
  const at = block.indexOf('passwd');
  expect(at).toBeGreaterThan(0);
  patch(badDir, rootBlock * 4096 + at, Buffer.from('shadow'));
  // The leaf's checksum (ext4_dir_entry_tail.det_checksum) is the block's last 4 bytes.
  dirBlockByte = rootBlock * 4096 + 4096 - 4;

  badInode = damageUid('bad-inode.raw', '/passwd');
  badDirInode = damageUid('bad-dir-inode.raw', '/sub');
});

/** A copy of `clean` with the i_uid of PATH's inode set to 1000 in the inode table (its checksum then fails). */
function damageUid(name: string, path: string): string {
  const image = join(tmp(), name);
  copyFileSync(clean, image);
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(sh('debugfs', ['-R', `imap ${path}`, clean]))!;
  // ext4_inode.i_uid (low 16 bits) at byte 2 of the record.
  patch(image, Number(m[1]) * 4096 + parseInt(m[2]!, 16) + 2, Uint8Array.of(0xe8, 0x03));
  return image;
}

describe('ls of a filesystem whose checksums fail', () => {
  test('the oracles: debugfs refuses the directory, e2fsck reports both', () => {
    expect(run('debugfs', ['-R', 'ls -p /', badDir]).stderr).toContain('Directory block checksum does not match');
    expect(debugfsN(badDir, 'ls -p /')).toContain('/shadow/');
    expect(run('e2fsck', ['-fn', badDir]).status).toBeGreaterThanOrEqual(4);
    expect(run('e2fsck', ['-fn', badInode]).stdout).toMatch(/checksum does not match inode/);
  });

  test.each([
    ['ls -l /', ['-l'], '/'],
    ['ls -R /', ['-R'], '/'],
    ['ls PATH of the renamed entry', [], '/shadow'],
    ['ls PATH of the old name (not a usage error: the directory cannot be trusted)', [], '/passwd'],
    ['ls --json', ['--json'], '/'],
  ])('a damaged directory block: %s is BAD_CHECKSUM at the checksum, exit 2, empty stdout', (_what, opts, path) => {
    const r = imgdedup(['ls', ...opts, badDir, path]);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    if (opts.includes('--json')) {
      const e = JSON.parse(r.stderr) as { code: string; data: { offset: number } };
      expect(e.code).toBe('BAD_CHECKSUM');
      expect(e.data.offset).toBe(dirBlockByte);
    } else expect(r.stderr).toMatch(new RegExp(`^imgdedup: error \\[BAD_CHECKSUM\\]: .*det_checksum at byte ${dirBlockByte}:`));
  });

  test('a damaged inode: ls -l is BAD_CHECKSUM naming the inode, exit 2, empty stdout (not a wrong uid)', () => {
    const r = imgdedup(['ls', '-l', badInode, '/']);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/\[BAD_CHECKSUM\]: .*ext4\.inode\[12\]/);
  });

  test.each([
    ['-l', '/'],
    ['-lR', '/'],
    ['-l', '/shadow'],
  ])('--ignore-checksums %s %s lists what debugfs -n lists, with one warning per failure', (flags, path) => {
    const r = imgdedup(['ls', '--ignore-checksums', flags, badDir, path]);
    expect(r.status, r.stderr).toBe(0);
    const theirs = parseLsP(debugfsN(badDir, 'ls -p /')).filter((e) => e.name !== '.' && e.name !== '..');
    const names = r.stdout.trim().split('\n').map((l) => l.split(/\s+/).pop()!);
    if (path === '/shadow') expect(names).toEqual(['shadow']);
    // The root's entries (-R: its subdirectories are empty).
    else expect(names).toEqual(theirs.map((e) => (flags.includes('R') ? `/${e.name}` : e.name)).sort());
    const warnings = r.stderr.split('\n').filter((l) => l !== '');
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^warning: ${badDir}: ext4\\.dir\\[2:0\\]\\.det_checksum at byte ${dirBlockByte}: checksum mismatch`))]);
  });

  test('--ignore-checksums -l of a damaged inode shows its fields as debugfs -n stat does, warned once', () => {
    const r = imgdedup(['ls', '--ignore-checksums', '-l', badInode, '/']);
    expect(r.status, r.stderr).toBe(0);
    const st = parseStat(debugfsN(badInode, 'stat /passwd'));
    expect(st.uid).toBe(1000);
    const line = r.stdout.split('\n').find((l) => l.endsWith(' passwd'))!;
    expect(Number(line.split(/\s+/)[2])).toBe(st.uid);
    const warnings = r.stderr.split('\n').filter((l) => l !== '');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^warning: .*ext4\.inode\[12\].*checksum mismatch/);
  });

  test.each([
    ['-lR', '/'],
    ['-l', '/sub/'],
    ['-lR', '/sub'],
  ])('--ignore-checksums %s %s of a damaged directory inode, read several times: warned once', (flags, path) => {
    const r = imgdedup(['ls', '--ignore-checksums', flags, badDirInode, path]);
    expect(r.status, r.stderr).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => l !== '');
    expect(warnings).toEqual([expect.stringMatching(/^warning: .*ext4\.inode\[13\].*checksum mismatch/)]);
    expect(imgdedup(['ls', flags, badDirInode, path]).status).toBe(2);
  });

  test('--ignore-checksums --json: the entries on stdout, each warning once on stderr (as for text)', () => {
    const r = imgdedup(['--json', 'ls', '--ignore-checksums', '-R', badDir, '/']);
    expect(r.status, r.stderr).toBe(0);
    const entries = JSON.parse(r.stdout) as Array<{ path: string }>;
    expect(entries.map((e) => e.path)).toContain('/shadow');
    expect(r.stderr.split('\n').filter((l) => l !== '')).toEqual([expect.stringMatching(/^warning: .*det_checksum at byte \d+: checksum mismatch/)]);
  });

  test('an undamaged filesystem: the same listing with or without --ignore-checksums, no warning', () => {
    const a = imgdedup(['ls', '-lR', clean, '/']);
    const b = imgdedup(['ls', '--ignore-checksums', '-lR', clean, '/']);
    expect(a.status, a.stderr).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    expect(a.stderr + b.stderr).toBe('');
  });
});
