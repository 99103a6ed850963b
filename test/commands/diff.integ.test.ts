/**
 * `imgdedup diff` end to end (built CLI): text and JSON agree with the rdump oracle on a
 * small update made with debugfs; exit 0 with or without differences; typed errors with
 * exit codes for bad input.
 */
import { copyFileSync, openSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildScenarioTree, makeOverlay, makeScenarioImage } from '../../fixtures/ext4/diffScenarios.js';
import { debugfsWrite } from '../../fixtures/ext4/ext4Fixtures.js';
import { imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { expectedDiff, type ExpectedDiff } from '../blockdiff/treeOracle.js';

const tmp = useTempDir('imgdedup-diffcli-');
let d = '';
let expected: ExpectedDiff;

beforeAll(() => {
  d = tmp();
  const tree = buildScenarioTree(d, { files: 120, seed: 3 });
  makeScenarioImage(join(d, 'A.raw'), tree, 32);
  copyFileSync(join(d, 'A.raw'), join(d, 'B.raw'));
  writeFileSync(join(d, 'payload'), 'a new file\n');
  debugfsWrite(join(d, 'B.raw'), [
    'write payload /etc/new.conf',
    'rm /usr/lib/old.so',
    'sif /etc/perm.conf mode 0100600',
    'sif /etc/xattr.conf flags 0x80010',
    'ea_set /etc/xattr.conf user.x y',
    'ln /etc/rename-me.conf /etc/moved.conf',
    'unlink /etc/rename-me.conf',
  ], d);
  sh('qemu-img', ['convert', '-O', 'qcow2', join(d, 'A.raw'), join(d, 'A.qcow2')]);
  makeOverlay(join(d, 'B.raw'), join(d, 'A.qcow2'), join(d, 'B.qcow2'));
  expected = expectedDiff(join(d, 'A.raw'), join(d, 'B.raw'), join(d, 'oracle'));
}, 60_000);

describe('imgdedup diff', () => {
  it('prints A/D/M lines equal to the oracle, exit 0', () => {
    const r = imgdedup(['diff', join(d, 'A.qcow2'), join(d, 'B.qcow2')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const want = [
      ...expected.added.map((p) => `A ${p}`),
      ...expected.removed.map((p) => `D ${p}`),
      ...Object.entries(expected.modified).map(([p, k]) => `M ${p} (${k.join(', ')})`),
    ].sort();
    expect(lines.filter((l) => /^[ADM] /.test(l)).sort()).toEqual(want);
    expect(want).toContain('A /etc/new.conf');
    expect(want).toContain('D /usr/lib/old.so');
    expect(want).toContain('M /etc/perm.conf (mode)');
    expect(want).toContain('M /etc/xattr.conf (flags, xattrs)');
    expect(lines[lines.length - 1]).toMatch(new RegExp(`^${want.length} path\\(s\\) differ; \\d+ bytes differ \\(overlay: \\d+ bytes stored in B's own layers compared\\)`));
  });

  it('--json: the result object; single-block directory changes need no ownership scan', () => {
    const r = imgdedup(['diff', '--json', join(d, 'A.qcow2'), join(d, 'B.qcow2')]);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.mode).toBe('overlay');
    const fs = j.filesystems[0];
    expect(fs.fsType).toBe('ext4');
    expect(fs.stats.mode).toBe('incremental');
    expect(fs.stats.ownershipScan).toBe(false);
    expect(fs.added.map((e: { path: string }) => e.path).sort()).toEqual(expected.added);
    const nc = fs.added.find((e: { path: string }) => e.path === '/etc/new.conf');
    expect(nc.type).toBe('file');
    expect(nc.changedBlocks.length).toBeGreaterThan(0);
    expect(fs.removed.map((e: { path: string }) => e.path).sort()).toEqual(expected.removed);
    expect(Object.fromEntries(fs.modified.map((e: { path: string; changes: string[] }) => [e.path, [...e.changes].sort()]))).toEqual(expected.modified);
  });

  it('identical images: no differences, exit 0', () => {
    const r = imgdedup(['diff', join(d, 'A.raw'), join(d, 'A.qcow2')]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^0 path\(s\) differ; 0 bytes differ \(hash: \d+ bytes compared\)/);
  });

  it('a journal that needs recovery: a warning on stderr, in --json, and from ls', () => {
    // A committed, unreplayed jbd2 transaction, written by debugfs (jo/jw/jc).
    const J = join(d, 'J.raw');
    copyFileSync(join(d, 'B.raw'), J);
    writeFileSync(join(d, 'jblocks'), Buffer.alloc(8192, 0x11));
    debugfsWrite(J, ['jo', 'jw -b 300,301 jblocks', 'jc'], d);
    expect(sh('debugfs', ['-R', 'logdump', J])).toMatch(/type 2 \(commit block\)/);
    const warning = `warning: ${J}: filesystem has a journal that needs recovery (needs_recovery set, 1 committed transaction not replayed): what is shown is the state before the journal is replayed; run e2fsck or mount it to replay`;
    const r = imgdedup(['diff', join(d, 'A.raw'), J]);
    expect(r.status).toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([warning]);
    expect(r.stdout).not.toContain('warning');
    const j = JSON.parse(imgdedup(['diff', '--json', join(d, 'A.raw'), J]).stdout);
    expect(j.warnings).toEqual([warning.slice('warning: '.length)]);
    expect(j.filesystems[0].journalNeedsRecovery).toEqual({ a: false, b: true });
    expect(j.filesystems[0].warnings).toEqual(j.warnings);
    const ls = imgdedup(['ls', J, '/etc']);
    expect(ls.status).toBe(0);
    expect(ls.stdout).toContain('perm.conf');
    expect(ls.stderr.trim().split('\n')).toEqual([warning]);
    const lsJson = imgdedup(['ls', '--json', J, '/etc']);
    expect(JSON.parse(lsJson.stdout).map((e: { name: string }) => e.name)).toContain('perm.conf');
    expect(lsJson.stderr.trim().split('\n')).toEqual([warning]);
    // The clean images warn about nothing.
    expect(imgdedup(['ls', join(d, 'B.raw'), '/etc']).stderr).toBe('');
  });

  it('--help documents the exit status', () => {
    const r = imgdedup(['diff', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Exit status 0 whether or not the images differ');
  });

  it('a corrupt ext4 superblock: BAD_CHECKSUM naming the image and s_checksum, exit 2', () => {
    const bad = join(d, 'bad.raw');
    copyFileSync(join(d, 'B.raw'), bad);
    // s_log_block_size (superblock offset 0x18) = 40: a block size no ext4 can have.
    const fd = openSync(bad, 'r+');
    writeSync(fd, Buffer.from([40, 0, 0, 0]), 0, 4, 1024 + 0x18);
    closeSync(fd);
    const r = imgdedup(['diff', '--json', join(d, 'A.raw'), bad]);
    expect(r.status).toBe(2);
    const e = JSON.parse(r.stderr.trim().split('\n')[0]!);
    // metadata_csum: the superblock checksum (s_checksum at 0x3FC) catches it first.
    expect(e.code).toBe('BAD_CHECKSUM');
    expect(e.data.file).toContain('bad.raw');
    expect(e.data.offset).toBe(1024 + 0x3fc);
  });

  it('a missing image: IO, exit 5; a missing argument: usage, exit 1', () => {
    expect(imgdedup(['diff', join(d, 'A.raw'), join(d, 'nope.qcow2')]).status).toBe(5);
    expect(imgdedup(['diff', join(d, 'A.raw')]).status).toBe(1);
  });
});
