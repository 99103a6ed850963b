/**
 * A command that fails prints nothing on stdout: no half table, no unterminated JSON array
 * (map and ls stream their entries, so they hold them back until the command has succeeded).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { closeSync, mkdirSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { imgdedup, sh } from './helpers/run.js';
import { qemuImg, qemuIo } from './helpers/qemu.js';
import { useTempDir } from './helpers/tmp.js';

const tmp = useTempDir('imgdedup-output-');
let badMap: string;
let badDir: string;

/** A 1 GiB qcow2 whose second L2 table maps a cluster 1 TiB past the end of the file. */
function corruptSecondL2(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    const u64 = (at: number): bigint => {
      const b = Buffer.alloc(8);
      readSync(fd, b, 0, 8, at);
      return b.readBigUInt64BE();
    };
    const l1 = Number(u64(40));
    const l2 = Number(u64(l1 + 8) & 0x00fffffffffffe00n);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(0x8000000000000000n | (1n << 40n));
    writeSync(fd, entry, 0, 8, l2 + ((600 - 512) * 16) * 8); // guest 600 MiB: entry 1408 of the second table
  } finally {
    closeSync(fd);
  }
}

beforeAll(() => {
  badMap = join(tmp(), 'bad-l2.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', badMap, '1G');
  qemuIo(badMap, ['write -P 1 0 64k', 'write -P 2 1M 64k', 'write -P 3 600M 64k']);
  corruptSecondL2(badMap);
  // An ext4 filesystem whose /b directory block is overwritten: ls -R lists / and /a before it fails.
  const src = join(tmp(), 'tree');
  for (const d of ['a', 'b']) {
    mkdirSync(join(src, d), { recursive: true });
    for (const f of ['1', '2', '3']) writeFileSync(join(src, d, `${d}${f}`), f);
  }
  badDir = join(tmp(), 'fs.img');
  sh('truncate', ['-s', '8M', badDir]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, badDir]);
  sh('debugfs', ['-w', '-R', 'zap_block -f /b -p 0xff 0', badDir]);
});

describe('nothing on stdout when the command fails', () => {
  test.each([[[]], [['--json']]])('map %j on an image with a corrupt second L2 table', (flags) => {
    const r = imgdedup(['map', ...flags, badMap]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/CORRUPT_IMAGE.*qcow2\.l2_entry/);
    expect(r.stdout).toBe('');
  });
  test.each([[['-R']], [['-R', '--json']], [['-lR']]])('ls %j on a filesystem with a corrupt directory', (flags) => {
    const r = imgdedup(['ls', ...flags, badDir]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/CORRUPT_IMAGE.*ext4\.dir/);
    expect(r.stdout).toBe('');
  });
  test('the same listing of a healthy directory is printed', () => {
    const r = imgdedup(['ls', '-R', badDir, '/a']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('/a/a1\n/a/a2\n/a/a3\n');
  });
});
