/**
 * Interrupting a command that writes (Ctrl-C, SIGTERM, a lost terminal's SIGHUP) removes its
 * temporary outputs and exits 130 / 143 / 129, as a shell reports a process killed by those signals.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CLI } from './helpers/run.js';
import { useTempDir } from './helpers/tmp.js';

const tmp = useTempDir('imgdedup-signals-');
const MiB = 1024 * 1024;
/** Big enough that the conversion is still running when the signal arrives (seconds, not milliseconds). */
const SOURCE_MIB = 256;
let src: string;

beforeAll(() => {
  src = join(tmp(), 'src.raw');
  const fd = openSync(src, 'w');
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < SOURCE_MIB; i++) {
    chunk.fill(1 + (i % 250));
    writeSync(fd, chunk);
  }
  closeSync(fd);
});

const temporaries = (dir: string) => readdirSync(dir).filter((n) => n.includes('.tmp-'));

/** Starts a conversion into a fresh directory, sends `signal` once its temporary output exists, and returns the exit. */
async function interrupt(signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP', format: string): Promise<{ dir: string; code: number | null; stderr: string; out: string }> {
  const dir = join(tmp(), `${signal}-${format}`);
  mkdirSync(dir);
  const out = join(dir, `out.${format}`);
  const child = spawn(process.execPath, [CLI, 'convert', '-O', format, src, out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  while (temporaries(dir).length === 0 && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  expect(temporaries(dir), 'the temporary output appeared').toHaveLength(1);
  child.kill(signal);
  return { dir, code: await exited, stderr, out };
}

describe('an interrupted convert leaves nothing behind', () => {
  test.each([
    ['SIGINT', 'qcow2', 130],
    ['SIGTERM', 'raw', 143],
    ['SIGINT', 'vmdk', 130],
    ['SIGHUP', 'qcow2', 129],
  ] as const)('%s during convert -O %s: exit %i, no temporary file, no output', async (signal, format, status) => {
    const r = await interrupt(signal, format);
    expect(r.code, r.stderr).toBe(status);
    expect(r.stderr).toMatch(`imgdedup: interrupted by ${signal}`);
    expect(readdirSync(r.dir)).toEqual([]);
    expect(existsSync(r.out)).toBe(false);
  }, 30_000);
});
