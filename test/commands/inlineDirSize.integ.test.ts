/**
 * An inline-data directory's i_size is its inline area: the 60 bytes of i_block plus the
 * system.data xattr's value (ext4 doc, inline_data.rst), exactly; e2fsck -fn flags any other
 * size ("i_size is X, should be Y"). `ls` and `diff` refuse such a directory with
 * CORRUPT_IMAGE at its i_size, and read healthy ones (empty, a few entries, entries that
 * continue in system.data) as debugfs does. Oracles: e2fsck -fn (which size is right),
 * debugfs `ls -p` and `imap`.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { imgdedup, run } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseLsP } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-inline-dir-');
let clean = '';

/** Directory entries as ext4 lays them out (ext4 doc, directory.rst, ext4_dir_entry_2), the last one reaching the end. */
function dirRecords(entries: ReadonlyArray<{ ino: number; name: string; fileType: number }>): Buffer {
  const lens = entries.map((e) => 8 + Math.ceil(e.name.length / 4) * 4);
  const out = Buffer.alloc(lens.reduce((a, b) => a + b, 0));
  let at = 0;
  entries.forEach((e, i) => {
    out.writeUInt32LE(e.ino, at);
    out.writeUInt16LE(lens[i]!, at + 4);
    out[at + 6] = e.name.length;
    out[at + 7] = e.fileType;
    out.write(e.name, at + 8, 'latin1');
    at += lens[i]!;
  });
  return out;
}

function inoOf(image: string, dir: string, name: string): number {
  return parseLsP(debugfsBatch(image, [`ls -p ${dir}`])[0]!).find((e) => e.name === name)!.ino;
}

/** Device byte offset of inode `ino`, from `debugfs imap`. */
function inodeOffset(image: string, ino: number): number {
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfsBatch(image, [`imap <${ino}>`])[0]!)!;
  return Number(m[1]) * 4096 + parseInt(m[2]!, 16);
}

/** e2fsck -fn's verdict: its output and, for an i_size finding, the size it says is right. */
function e2fsck(image: string): { clean: boolean; shouldBe?: number; output: string } {
  const r = run('e2fsck', ['-fn', image]);
  const m = /i_size is \d+, should be (\d+)/.exec(r.stdout);
  return { clean: r.status === 0, output: r.stdout, ...(m ? { shouldBe: Number(m[1]) } : {}) };
}

beforeAll(() => {
  const src = join(tmp(), 'src');
  mkdirSync(join(src, 'few'), { recursive: true });
  mkdirSync(join(src, 'empty'));
  for (const n of ['a', 'bb', 'ccc']) writeFileSync(join(src, 'few', n), `${n}\n`);
  clean = join(tmp(), 'clean.raw');
  makeExt4Image(clean, src, { args: ['-b', '4096', '-I', '256', '-O', 'inline_data'], sizeMiB: 8 });
  // mkfs.ext4 -d and debugfs never continue an inline directory in system.data (they move it
  // to a block), the kernel does: /spill gets two entries in i_block (made by debugfs) and two
  // in system.data (fifos made in / and moved there: unlink keeps their link count).
  debugfsWrite(clean, ['mkdir /spill', 'cd /spill', 'mknod in1 p', 'mknod in2 p', 'cd /', 'mknod x1 p', 'mknod x2 p']);
  const moved = ['x1', 'x2'].map((name) => ({ ino: inoOf(clean, '/', name), name, fileType: 5 }));
  const value = join(tmp(), 'system.data');
  writeFileSync(value, dirRecords(moved));
  debugfsWrite(clean, ['unlink /x1', 'unlink /x2', `ea_set -f ${value} /spill system.data`, `sif /spill size ${60 + 24}`]);
}, 60_000);

describe('healthy inline directories read as debugfs lists them', () => {
  test('the fixture is clean and holds inline directories with and without system.data entries', () => {
    expect(e2fsck(clean)).toMatchObject({ clean: true });
    const stats = debugfsBatch(clean, ['stat /empty', 'stat /few', 'stat /spill']);
    for (const s of stats) expect(s).toMatch(/Flags: 0x10000000/);
    expect(stats[2]).toMatch(/system\.data \(24\)/);
  });

  test('ls -R -l --json lists every inline directory entry for entry', () => {
    const r = imgdedup(['ls', '-R', '-l', '--json', clean, '/']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const ours = JSON.parse(r.stdout) as Array<{ path: string; ino: number; mode: number; size: number }>;
    for (const dir of ['/empty', '/few', '/spill']) {
      const theirs = parseLsP(debugfsBatch(clean, [`ls -p ${dir}`])[0]!).filter((e) => e.name !== '.' && e.name !== '..');
      const listed = ours.filter((e) => e.path.startsWith(`${dir}/`));
      expect(listed.map((e) => ({ path: e.path, ino: e.ino, mode: e.mode })).sort((x, y) => x.path.localeCompare(y.path)), dir).toEqual(
        theirs.map((e) => ({ path: `${dir}/${e.name}`, ino: e.ino, mode: e.mode })).sort((x, y) => x.path.localeCompare(y.path)),
      );
    }
    expect(ours.filter((e) => e.path.startsWith('/spill/')).map((e) => e.path).sort()).toEqual(['/spill/in1', '/spill/in2', '/spill/x1', '/spill/x2']);
  });
});

describe('an inline directory whose i_size is not its inline area is CORRUPT_IMAGE at its i_size', () => {
  test.each([
    ['/few', 0],
    ['/few', 4096],
    ['/empty', 0],
    ['/spill', 60],
    ['/spill', 83],
    ['/spill', 100],
  ])('%s with i_size %i: ls, ls -R -l and diff exit 2 where e2fsck says what it should be', (dir, size) => {
    const image = join(tmp(), `${dir.slice(1)}-${size}.raw`);
    copyFileSync(clean, image);
    debugfsWrite(image, [`sif ${dir} size ${size}`]);
    const verdict = e2fsck(image);
    expect(verdict.clean, verdict.output).toBe(false);
    expect(verdict.shouldBe, verdict.output).toBeDefined();
    const ino = inoOf(clean, '/', dir.slice(1));
    const where = { structure: `ext4.inode[${ino}].i_size`, deviceOffset: inodeOffset(clean, ino) + 4, expected: verdict.shouldBe, actual: size };
    for (const args of [['ls', '--json', image, dir], ['ls', '-R', '-l', '--json', image, '/'], ['diff', '--json', clean, image]]) {
      const r = imgdedup(args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(JSON.parse(r.stderr), args.join(' ')).toMatchObject({ code: 'CORRUPT_IMAGE', data: where });
    }
  });
});
