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

describe('command line', () => {
  const oneLine = (s: string) => s.trim().split('\n');

  test('a bare imgdedup prints the help on stderr and exits 1, like git and qemu-img', () => {
    const r = imgdedup([]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/Usage: imgdedup/);
  });
  test('help COMMAND prints that help (exit 0); help of an unknown command is a usage error', () => {
    const h = imgdedup(['help', 'map']);
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/Usage: imgdedup map/);
    expect(imgdedup(['help']).status).toBe(0);
    const r = imgdedup(['help', 'frob']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\[USAGE\].*unknown command 'frob'/);
  });
  test('--json and --debug work before or after the command', () => {
    for (const args of [['--json', 'info', image], ['info', image, '--json'], ['info', '--json', image]]) {
      const r = imgdedup(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect((JSON.parse(r.stdout) as { format: string }).format).toBe('qcow2');
    }
    expect(imgdedup(['--debug', 'info', image]).status).toBe(0);
    expect(imgdedup(['info', image, '--debug']).status).toBe(0);
  });
  test('a usage error under --json is one JSON object on stderr, whichever side of the command --json is', () => {
    for (const args of [['--json', 'info', '--frob', image], ['info', '--frob', image, '--json']]) {
      const r = imgdedup(args);
      expect(r.status).toBe(1);
      expect(oneLine(r.stderr), r.stderr).toHaveLength(1);
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'USAGE', message: "unknown option '--frob'" });
    }
  });
  test('a usage error is one error line plus a hint naming the command', () => {
    const r = imgdedup(['info', '--frob', image]);
    expect(r.status).toBe(1);
    expect(oneLine(r.stderr)).toEqual(["imgdedup: error [USAGE]: unknown option '--frob'", '(run "imgdedup info --help" for usage)']);
  });
  test('a missing file is named as the user wrote it, without Node internals', () => {
    const missing = join(tmp(), 'nope.qcow2');
    for (const cmd of ['info', 'map', 'check']) {
      const r = imgdedup([cmd, missing]);
      expect(r.status, cmd).toBe(5);
      expect(r.stderr.trim()).toBe(`imgdedup: error [IO]: ${missing}: cannot open: no such file or directory`);
    }
  });
});

describe('IMAGE:PART, parsed the same way by every command', () => {
  test('commands that work on whole images refuse IMAGE:PART as a usage error, not a missing file', () => {
    for (const args of [['info', `${image}:2`], ['map', `${image}:2`], ['check', `${image}:1`], ['convert', `${image}:1`, join(tmp(), 'o.qcow2')], ['diff', image, `${image}:1`]]) {
      const r = imgdedup(args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`\\[USAGE\\].*${args[0]} works on whole images`));
    }
  });
  test('IMAGE:abc and IMAGE:0 are usage errors when IMAGE exists; a missing IMAGE:abc is a missing file', () => {
    for (const cmd of ['info', 'ls']) {
      for (const part of ['abc', '0']) {
        const r = imgdedup([cmd, `${image}:${part}`]);
        expect(r.status, `${cmd} :${part}`).toBe(1);
        expect(r.stderr).toMatch(`"${part}" is not a partition number`);
      }
    }
    const r = imgdedup(['ls', join(tmp(), 'nope:abc')]);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/nope:abc: cannot open: no such file or directory/);
  });
  test('a file whose name contains ":N" is read whole when it exists', () => {
    const colon = join(tmp(), 'odd:2');
    qemuImg('create', '-f', 'qcow2', colon, '1M');
    const r = imgdedup(['--json', 'info', colon]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { virtualSize: number }).virtualSize).toBe(1048576);
  });
});
