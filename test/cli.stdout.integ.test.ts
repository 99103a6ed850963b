/**
 * stdout that cannot be written (a full disk: /dev/full) is an IO error, exit 5, naming
 * stdout, with no stack trace; a reader that goes away (`| head`) is a quiet exit 0.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { CLI, sh } from './helpers/run.js';
import { qemuImg, qemuIo } from './helpers/qemu.js';
import { useTempDir } from './helpers/tmp.js';

const tmp = useTempDir('imgdedup-stdout-');
let qcow: string;
let fs: string;

/** Runs the CLI with stdout on /dev/full. */
function toDevFull(args: readonly string[]): { status: number; stderr: string } {
  const fd = openSync('/dev/full', 'w');
  try {
    const r = spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8' });
    return { status: r.status ?? -1, stderr: r.stderr };
  } finally {
    closeSync(fd);
  }
}

beforeAll(() => {
  qcow = join(tmp(), 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', qcow, '4M');
  qemuIo(qcow, ['write -P 7 0 64k']);
  const src = join(tmp(), 'tree');
  mkdirSync(join(src, 'd'), { recursive: true });
  writeFileSync(join(src, 'd', 'f'), 'x');
  fs = join(tmp(), 'fs.raw');
  sh('truncate', ['-s', '4M', fs]);
  sh('mkfs.ext4', ['-q', '-F', '-d', src, fs]);
});

describe('stdout on a full disk', () => {
  const commands: readonly (readonly string[])[] = [
    ['info'],
    ['info', '--json'],
    ['map'],
    ['map', '--json'],
    ['check'],
    ['check', '--json'],
  ];
  test.each(commands.map((c) => [c]))('%j: IO error naming stdout, exit 5', (cmd) => {
    const r = toDevFull([...cmd, qcow]);
    expect(r.status).toBe(5);
    if (cmd.includes('--json')) {
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'IO', data: { file: 'stdout', errno: 'ENOSPC' } });
    } else expect(r.stderr).toBe('imgdedup: error [IO]: stdout: cannot write the output: no space left on device\n');
  });
  test.each([[['ls', '-R', 'FS']], [['ls', '--json', 'FS', '/d']], [['diff', 'FS', 'FS']], [['diff', '--json', 'FS', 'FS']]])(
    '%j: IO error naming stdout, exit 5',
    (args) => {
      const r = toDevFull(args.map((a) => (a === 'FS' ? fs : a)));
      expect(r.status).toBe(5);
      expect(r.stderr).toMatch(/^(imgdedup: error \[IO\]: stdout: |\{"code":"IO")/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    },
  );
  test('convert: the output is complete, only its report is lost (exit 5)', () => {
    const dst = join(tmp(), 'out.qcow2');
    const r = toDevFull(['convert', qcow, dst]);
    expect(r.status).toBe(5);
    expect(r.stderr).toContain('stdout: cannot write the output');
    expect(sh('qemu-img', ['compare', '-q', qcow, dst])).toBe('');
  });
});

test('a reader that goes away (| head -c1) is a quiet exit 0', () => {
  // Enough lines that the pipe fills after the reader has gone.
  const big = join(tmp(), 'big.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', big, '64M');
  qemuIo(big, Array.from({ length: 2000 }, (_, i) => `write -P 1 ${i * 8192} 4k`));
  const r = spawnSync('bash', ['-c', `"${process.execPath}" "${CLI}" map "${big}" | head -c1 >/dev/null; echo "\${PIPESTATUS[0]}"`], {
    encoding: 'utf8',
  });
  expect(r.stdout).toBe('0\n');
  expect(r.stderr).toBe('');
});
