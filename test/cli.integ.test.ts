/** The built CLI: exit codes, error lines, --json and --help, as a user sees them. */
import { beforeAll, describe, expect, test } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { imgdedup } from './helpers/run.js';
import { qemuImg, qemuIo, qemuMap } from './helpers/qemu.js';
import { useTempDir } from './helpers/tmp.js';

const tmp = useTempDir();
let image: string;

beforeAll(() => {
  image = join(tmp(), 'disk.qcow2');
  qemuImg('create', '-f', 'qcow2', image, '4M');
  qemuIo(image, ['write -P 9 64k 128k']);
});

describe('exit codes', () => {
  test('0 on success', () => {
    expect(imgdedup(['info', image]).status).toBe(0);
  });
  test('0 for --help and --version', () => {
    const help = imgdedup(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Exit codes:/);
    const v = imgdedup(['--version']);
    expect(v.status).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
  test('1 for usage errors: unknown command, missing argument, bad option value', () => {
    expect(imgdedup(['frobnicate']).status).toBe(1);
    expect(imgdedup(['info']).status).toBe(1);
    expect(imgdedup(['info', '-f', 'vhdx', image]).status).toBe(1);
  });
  test('2 for corrupt input, with file, structure and offset in one line and no stack trace', () => {
    const bad = join(tmp(), 'bad.qcow2');
    const b = Buffer.alloc(4096);
    b.write('QFI\xfb', 0, 'latin1');
    b.writeUInt32BE(3, 4);
    b.writeUInt32BE(30, 20); // cluster_bits
    writeFileSync(bad, b);
    const r = imgdedup(['info', bad]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${bad}: qcow2.header.cluster_bits at byte 20`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
  test('2 with a JSON error object on stderr under --json', () => {
    const bad = join(tmp(), 'bad2.qcow2');
    writeFileSync(bad, Buffer.from('QFI\xfb\x00\x00\x00\x09', 'latin1'));
    const r = imgdedup(['info', '--json', bad]);
    expect(r.status).toBe(2);
    const err = JSON.parse(r.stderr) as { code: string; data: { file: string; offset: number } };
    expect(err.code).toBe('UNSUPPORTED_FEATURE');
    expect(err.data).toMatchObject({ file: bad, offset: 4 });
  });
  test('5 for a missing file', () => {
    const r = imgdedup(['info', join(tmp(), 'missing.qcow2')]);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/\[IO\].*missing\.qcow2/);
  });
});

describe('output', () => {
  test('info --json describes the image', () => {
    const r = imgdedup(['info', '--json', image]);
    const j = JSON.parse(r.stdout) as { format: string; virtualSize: number; clusterSize: number; storedBytes: number };
    expect(j).toMatchObject({ format: 'qcow2', virtualSize: 4 * 1024 * 1024, clusterSize: 65536, storedBytes: 128 * 1024 });
  });
  test('map --json has the entries of qemu-img map --output=json', () => {
    const r = imgdedup(['map', '--json', image]);
    expect(r.status).toBe(0);
    const ours = (JSON.parse(r.stdout) as Array<Record<string, unknown>>).map(({ file: _f, compressed: _c, ...e }) => e);
    expect(ours).toEqual(qemuMap(image));
  });
  test('every command has --help with an example', () => {
    for (const cmd of ['info', 'map']) {
      const r = imgdedup([cmd, '--help']);
      expect(r.status, cmd).toBe(0);
      expect(r.stdout, cmd).toMatch(/Example/);
    }
  });
});
