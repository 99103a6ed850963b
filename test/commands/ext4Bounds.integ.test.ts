/**
 * Lengths read from disk are bounded by their structure, and directory loops end: `ls` and
 * `diff` on images corrupted with `debugfs -w` answer fast, in bounded memory, with a
 * typed error (exit 2) or a warning, never exit 70, a hang or a huge allocation. Oracles:
 * `debugfs imap` for where an inode lives, `debugfs ls -p` for listings, `e2fsck -fn` for
 * what is corruption.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, openSync, closeSync, writeSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { CLI, imgdedup, run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseLsP } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-bounds-');
let clean = '';
/** The same tree without inline_data: its long symlink target lives in a block. */
let blockLinks = '';

/** Device byte offset of inode `ino`, from `debugfs imap` ("located at block B, offset 0xO"). */
function inodeOffset(image: string, ino: number, blockSize: number): number {
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfsBatch(image, [`imap <${ino}>`])[0]!)!;
  return Number(m[1]) * blockSize + parseInt(m[2]!, 16);
}

function inoOf(image: string, dir: string, name: string): number {
  return parseLsP(debugfsBatch(image, [`ls -p ${dir}`])[0]!).find((e) => e.name === name)!.ino;
}

/** A copy of the clean image (or of `from`) changed by debugfs commands. */
function variant(name: string, commands: readonly string[], from = clean): string {
  const image = join(tmp(), name);
  copyFileSync(from, image);
  debugfsWrite(image, commands);
  return image;
}

/** Runs the CLI under /usr/bin/time: exit status, output, peak RSS (MiB) and seconds, with a time limit. */
function measured(args: readonly string[], timeoutMs = 30_000): { status: number; stdout: string; stderr: string; rssMiB: number; seconds: number } {
  // coreutils timeout kills the CLI itself (a signal to /usr/bin/time would orphan it).
  const limit = ['timeout', '-s', 'KILL', String(timeoutMs / 1000)];
  const r = spawnSync('/usr/bin/time', ['-f', 'TIME %M %e', ...limit, process.execPath, CLI, ...args], { encoding: 'utf8', timeout: timeoutMs + 10_000, maxBuffer: 1 << 30 });
  const m = /TIME (\d+) ([\d.]+)\s*$/.exec(r.stderr ?? '');
  if (m === null) throw new Error(`did not finish within ${timeoutMs} ms (status ${r.status}, signal ${r.signal})`);
  // GNU time adds "Command exited with non-zero status N" (or "Command terminated by signal N") before its own line.
  const stderr = r.stderr.slice(0, m.index).replace(/^Command (exited with non-zero status|terminated by signal) \d+\n/m, '');
  if (r.status === 137) throw new Error(`did not finish within ${timeoutMs} ms`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr, rssMiB: Number(m[1]) / 1024, seconds: Number(m[2]) };
}

beforeAll(() => {
  const src = join(tmp(), 'src');
  mkdirSync(join(src, 'd/sub'), { recursive: true });
  mkdirSync(join(src, 'a/b'), { recursive: true });
  // More entries than inline data holds: /d/sub lives in a directory block with a real '.'.
  for (let i = 0; i < 8; i++) writeFileSync(join(src, 'd/sub', `a-name-long-enough-to-need-a-block-${i}`), '');
  writeFileSync(join(src, 'hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(src, 'small'), 'inline me\n');
  writeFileSync(join(src, 'empty'), '');
  symlinkSync('hosts', join(src, 'ln'));
  symlinkSync('t'.repeat(100), join(src, 'slow'));
  clean = join(tmp(), 'clean.raw');
  makeExt4Image(clean, src, { args: ['-b', '4096', '-O', 'inline_data'], sizeMiB: 8 });
  blockLinks = join(tmp(), 'block-links.raw');
  makeExt4Image(blockLinks, src, { args: ['-b', '4096'], sizeMiB: 8 });
}, 60_000);

describe('symlink targets are bounded by where they are kept', () => {
  /** Inline data: the 60 bytes of i_block plus the system.data xattr (`debugfs stat`: "system.data (N)"). */
  const inlineSize = (image: string, path: string): number => 60 + Number(/system\.data \((\d+)\)/.exec(debugfsBatch(image, [`stat ${path}`])[0]!)![1]);
  test.each([
    ['fast symlink (in i_block), i_size 0x40000000', () => clean, 'ln', '0x40000000', () => 59],
    ['fast symlink (in i_block), i_size 0xA000000', () => clean, 'ln', '0xA000000', () => 59],
    ['symlink in a block, i_size one block', () => blockLinks, 'slow', '4096', () => 4095],
    ['symlink in inline data, i_size 0xA000000', () => clean, 'slow', '0xA000000', () => inlineSize(clean, '/slow')],
  ])('%s: ls -l and diff exit 2 with CORRUPT_IMAGE at the inode i_size, fast and small', (_what, from, name, size, max) => {
    const base = from();
    const image = variant(`${name}-${size}-${base === clean ? 'inline' : 'blocks'}.raw`, [`sif /${name} size ${size}`], base);
    const ino = inoOf(base, '/', name);
    const where = { structure: `ext4.inode[${ino}].i_size`, deviceOffset: inodeOffset(base, ino, 4096) + 4, expected: `<= ${max()}`, actual: Number(size) };
    for (const args of [['ls', '-l', '--json', image, '/'], ['diff', '--json', base, image]]) {
      const r = measured(args);
      expect(r.status, r.stderr).toBe(2);
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: where });
      expect(r.rssMiB, args[0]).toBeLessThan(200);
      expect(r.seconds, args[0]).toBeLessThan(20);
    }
  });
});

describe('a file size of 2^32 blocks or more is damage, not a size (e2fsck: "i_size is ..., should be ...")', () => {
  // Past 2^53 a size is not even a JS number exactly: 2^53 + 1 and 2^53 read alike, and
  // diff missed the change. Both sides refused, at the size's high word.
  test.each([
    ['2^53 + 1', '9007199254740993'],
    ['2^32 blocks of 4 KiB', String(2 ** 32 * 4096)],
  ])('%s: ls -l and diff exit 2 with CORRUPT_IMAGE at i_size_high, empty stdout', (_what, size) => {
    const image = variant(`size-${size}.raw`, [`sif /hosts size ${size}`]);
    const ino = inoOf(clean, '/', 'hosts');
    const where = { structure: `ext4.inode[${ino}].i_size_high`, deviceOffset: inodeOffset(clean, ino, 4096) + 0x6c };
    for (const args of [['ls', '-l', '--json', image, '/'], ['ls', '-l', image, '/hosts'], ['diff', '--json', clean, image]]) {
      const r = imgdedup(args);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
    }
    expect(JSON.parse(imgdedup(['--json', 'ls', '-l', image, '/']).stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: where });
  });

  test('the largest size e2fsck accepts (2^32 blocks less one byte) lists as it is', () => {
    const size = 2 ** 32 * 4096 - 1;
    // Without inline_data: an empty inline file may have no size at all.
    const image = variant('size-max.raw', [`sif /empty size ${size}`], blockLinks);
    expect(run('e2fsck', ['-fn', image]).status).toBe(0);
    const r = imgdedup(['ls', '-l', '--json', image, '/empty']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject([{ path: "/empty", size }]);
  });
});

describe('diff never hashes i_size bytes of holes', () => {
  // Not corrupt: a regular file may be sparse, and an inline file reads as zeros past its
  // inline data. Changing the mode makes diff compare the contents of both sides.
  test.each([
    ['a sparse file of 1 TiB', 'empty'],
    ['an inline-data file with i_size 1 TiB', 'small'],
  ])('%s: diff reports the mode change in seconds', (_what, name) => {
    const a = variant(`${name}-big-a.raw`, [`sif /${name} size 0x10000000000`]);
    const b = join(tmp(), `${name}-big-b.raw`);
    copyFileSync(a, b);
    debugfsWrite(b, [`sif /${name} mode 0100600`]);
    const r = measured(['diff', a, b], 60_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter((l) => /^[ADM] /.test(l))).toEqual([`M /${name} (mode)`]);
    expect(r.seconds).toBeLessThan(20);
  });
});

describe('diff of unrelated images with different block sizes reads only written ranges', () => {
  test('a 1 TiB sparse file on both sides (4 KiB and 1 KiB blocks) is compared in seconds', () => {
    const src = join(tmp(), 'bs-src');
    mkdirSync(src);
    writeFileSync(join(src, 'data'), 'x'.repeat(10_000));
    writeFileSync(join(src, 'empty'), '');
    const [a, b] = [join(tmp(), 'bs4k.raw'), join(tmp(), 'bs1k.raw')];
    makeExt4Image(a, src, { args: ['-b', '4096'], sizeMiB: 8 });
    makeExt4Image(b, src, { args: ['-b', '1024'], sizeMiB: 8 });
    for (const image of [a, b]) debugfsWrite(image, ['sif /empty size 0x10000000000']);
    debugfsWrite(b, ['sif /data mode 0100600']);
    const r = measured(['diff', a, b], 60_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter((l) => /^[ADM] /.test(l))).toEqual(['M /data (mode)']);
    expect(r.seconds).toBeLessThan(20);
  });
});

describe('ls -R ends on directory loops', () => {
  /** The clean tree's paths (debugfs), plus `extra`: what ls -R must list, each once. */
  function expectedPaths(extra: string[]): string[] {
    const out: string[] = [];
    const visit = (dir: string): void => {
      for (const e of parseLsP(debugfsBatch(clean, [`ls -p ${dir}`])[0]!)) {
        if (e.name === '.' || e.name === '..') continue;
        const p = `${dir === '/' ? '' : dir}/${e.name}`;
        out.push(p);
        if ((e.mode & 0o170000) === 0o040000) visit(p);
      }
    };
    visit('/');
    return [...out, ...extra].sort();
  }

  /** Renames the '.' entry of directory `dir` to `name` (same length) in its first block. */
  function renameDot(image: string, dir: string, name: string): void {
    const block = Number(debugfsBatch(image, [`blocks ${dir}`])[0]!.trim().split(/\s+/)[0]);
    const fd = openSync(image, 'r+');
    writeSync(fd, Buffer.from(name), 0, 1, block * 4096 + 8);
    closeSync(fd);
  }

  test.each([
    ['a directory hard-linked into itself (ln /d /d/loop)', () => variant('self.raw', ['ln /d /d/loop']), ['/d/loop'], '/d/loop'],
    ['a two-directory cycle (ln /a /a/b/up)', () => variant('cycle.raw', ['ln /a /a/b/up']), ['/a/b/up'], '/a/b/up'],
    [
      "a corrupted '.' entry: renamed, it names its own directory",
      () => {
        const image = variant('dot.raw', []);
        renameDot(image, '/d/sub', 'x');
        return image;
      },
      ['/d/sub/x'],
      '/d/sub/x',
    ],
  ])('%s: every directory listed once, the loop entry shown, a warning, exit 0', (_what, make, extra, loopPath) => {
    const image = make();
    // e2fsck calls it corruption (exit 4: errors left uncorrected under -n).
    expect(run('e2fsck', ['-fn', image]).status).toBe(4);
    // Renaming '.' in place leaves its block's checksum failing: listed anyway (and warned about).
    const r = measured(['ls', '-R', '--ignore-checksums', image, '/'], 20_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter((l) => l !== '').sort()).toEqual(expectedPaths(extra));
    expect(r.stderr).toContain(`warning: ${image}: ${loopPath} is directory inode`);
    expect(r.stderr).toContain('not descended into again');
  });

  test('diff against a looped image ends too and reports the new entry', () => {
    const image = variant('self-diff.raw', ['ln /d /d/loop']);
    for (const extra of [[], ['--full-tree']]) {
      const r = imgdedup(['diff', ...extra, clean, image]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.split('\n').filter((l) => /^[ADM] /.test(l))).toEqual(['A /d/loop']);
    }
    expect(sh('debugfs', ['-R', 'ls -p /d', image])).toContain('/loop/');
  });
});

describe('damage that would otherwise read as an answer: CORRUPT_IMAGE (exit 2), empty stdout', () => {
  // Each is corruption to e2fsck (exit 4 or more under -n); a listing that skipped it would
  // show a tree with entries missing, or a target of nothing, and a diff would report deletions.
  const ino = (name: string): number => inoOf(blockLinks, '/', name);
  test.each([
    ["the root directory's only extent moved to logical block 65537 (a hole at block 0)", 'root-hole', 'sif <2> block[3] 0x10001', () => 'ext4.inode[2].extent', 'directory block not mapped'],
    ["/d's extent moved to logical block 1", 'd-hole', 'sif /d block[3] 1', () => `ext4.inode[${ino('d')}].extent`, 'directory block not mapped'],
    ['/d with i_size one block larger than it maps', 'd-size', 'sif /d size 8192', () => `ext4.inode[${ino('d')}].i_size`, 'directory blocks within i_size are not mapped'],
    ['the root inode made a regular file', 'root-file', 'sif <2> mode 0100644', () => 'ext4.inode[2].i_mode', 'the root inode is not a directory'],
    ['a fast symlink with i_size 0', 'ln-empty', 'sif /ln size 0', () => `ext4.inode[${ino('ln')}].i_size`, 'symlink with an empty target'],
    ['a symlink in a block with i_size 0', 'slow-empty', 'sif /slow size 0', () => `ext4.inode[${ino('slow')}].i_size`, 'symlink with an empty target'],
  ])('%s: ls -R -l, ls PATH below it and diff', (_what, name, command, structure, detail) => {
    const image = variant(`${name}.raw`, [command], blockLinks);
    expect(run('e2fsck', ['-fn', image]).status).toBeGreaterThanOrEqual(4);
    for (const args of [['ls', '-R', '-l', image, '/'], ['ls', '-l', image, '/d/sub'], ['diff', blockLinks, image]]) {
      // A damaged symlink leaves /d/sub readable: only what goes through the damage fails.
      if (args[2] === image && args[3] === '/d/sub' && detail.startsWith('symlink')) continue;
      const r = run(process.execPath, [CLI, '--json', ...args]);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stdout, args.join(' ')).toBe('');
      const err = JSON.parse(r.stderr) as { code: string; data: { structure: string }; message: string };
      expect([err.code, err.data.structure], args.join(' ')).toEqual(['CORRUPT_IMAGE', structure()]);
      expect(err.message).toContain(detail);
    }
  });
});

describe("an inode whose type is not its directory entry's file_type: ls and diff refuse (CORRUPT_IMAGE at the inode's i_mode, empty stdout)", () => {
  // e2fsck: "Entry 'd' in / (2) has an incorrect filetype". Listed by its inode, /d would
  // show as a file and its entries would be left out.
  test.each([
    ['a directory whose inode says regular file', 'd-file', 'sif /d mode 0100644', 'd'],
    ['a symlink whose inode says directory', 'ln-dir', 'sif /ln mode 040777', 'ln'],
  ])('%s', (_what, name, command, entry) => {
    const image = variant(`${name}.raw`, [command], blockLinks);
    expect(run('e2fsck', ['-fn', image]).status).toBeGreaterThanOrEqual(4);
    const r = run(process.execPath, [CLI, '--json', 'ls', '-R', '-l', image, '/']);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    const err = JSON.parse(r.stderr) as { code: string; data: { structure: string }; message: string };
    expect([err.code, err.data.structure]).toEqual(['CORRUPT_IMAGE', `ext4.inode[${inoOf(blockLinks, '/', entry)}].i_mode`]);
    expect(err.message).toContain("differs from its directory entry's file_type");
    // diff met it as a type change (M /ln (type)), exit 0.
    for (const args of [['diff', blockLinks, image], ['diff', '--full-tree', blockLinks, image], ['diff', image, blockLinks]]) {
      const d = run(process.execPath, [CLI, '--json', ...args]);
      expect(d.status, `${args.join(' ')}: ${d.stderr}`).toBe(2);
      expect(d.stdout).toBe('');
      const de = JSON.parse(d.stderr) as { code: string; data: { structure: string } };
      expect([de.code, de.data.structure]).toEqual(['CORRUPT_IMAGE', `ext4.inode[${inoOf(blockLinks, '/', entry)}].i_mode`]);
    }
  });
});
