/**
 * Argument checks that name exactly what is wrong: strict IMAGE:PART numbers, a diff hint
 * that keeps both images, convert options that do not apply to the output format.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { imgdedup } from './helpers/run.js';
import { qemuImg } from './helpers/qemu.js';
import { useTempDir } from './helpers/tmp.js';

const tmp = useTempDir('imgdedup-args-');
let a = '';
let b = '';

beforeAll(() => {
  a = join(tmp(), 'd1.raw');
  b = join(tmp(), 'd2.raw');
  qemuImg('create', '-q', '-f', 'raw', a, '1M');
  qemuImg('create', '-q', '-f', 'raw', b, '1M');
});

describe('IMAGE:PART is a decimal number from 1, without sign or leading zeros', () => {
  test.each(['01', '+1', '1.0', ' 1', '0x1'])('IMAGE:%s is a usage error', (part) => {
    const r = imgdedup(['ls', `${a}:${part}`]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`"${part}" is not a partition number`);
  });
});

test('diff IMAGE:1 IMAGE:1: the hint keeps both images', () => {
  const r = imgdedup(['diff', `${a}:1`, `${b}:1`]);
  expect(r.status).toBe(1);
  expect(r.stderr).toContain(`try "imgdedup diff ${a} ${b}"`);
});

test('convert IMAGE:1 DST: the hint keeps DST', () => {
  const r = imgdedup(['convert', `${a}:1`, join(tmp(), 'o.qcow2')]);
  expect(r.status).toBe(1);
  expect(r.stderr).toContain(`try "imgdedup convert ${a} ${join(tmp(), 'o.qcow2')}"`);
});

describe('convert -O raw refuses the options that only qcow2 or VMDK output has, naming the one given', () => {
  test.each([
    [['--cluster-size', '4k'], '--cluster-size', ['--backing', 'extended L2', '--extended-l2']],
    [['--backing', 'd2.raw'], '--backing', ['--cluster-size', 'extended L2', '--extended-l2']],
    [['--extended-l2'], '--extended-l2', ['--cluster-size', '--backing']],
  ])('%j', (opts, named, notNamed) => {
    const out = join(tmp(), 'out.raw');
    const r = imgdedup(['convert', '-O', 'raw', ...opts, a, out], { cwd: tmp() });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('[USAGE]');
    expect(r.stderr).toContain(named);
    for (const other of notNamed) expect(r.stderr).not.toContain(other);
    expect(existsSync(out)).toBe(false);
  });
});
