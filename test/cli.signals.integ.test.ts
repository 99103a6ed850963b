/**
 * Interrupting a command that writes (Ctrl-C, SIGTERM, a lost terminal's SIGHUP) removes its
 * temporary outputs and exits 130 / 143 / 129, as a shell reports a process killed by those signals.
 * A rebase interrupted at any moment leaves its output directory as it was: nothing, or (once
 * it has placed everything) every output.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CLI } from './helpers/run.js';
import { useTempDir } from './helpers/tmp.js';
import { cachedFleet } from '../fixtures/fleet/makeFleet.mjs';

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

describe('an interrupted rebase leaves no partial output', () => {
  // Signals at moments spread over the run: while T is built, while the new base is written
  // and the clients are merged at the same time, while overlays are committed in the background.
  test.each([150, 400, 700, 1000, 1400, 2000])('SIGINT %i ms after the start: exit 130 and DIR as it was, or exit 0 and every output', async (delayMs) => {
    const { dir: fleet, manifest } = cachedFleet('small');
    const out = join(tmp(), `rebase-${delayMs}`);
    const clients = manifest.clients.map((c: { qcow2: string }) => join(fleet, c.qcow2));
    const child = spawn(process.execPath, [CLI, 'rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates'), ...clients, '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await new Promise((r) => setTimeout(r, delayMs));
    child.kill('SIGINT');
    const { code, signal } = await exited;
    const left = existsSync(out) ? readdirSync(out).sort() : [];
    if (code === 0) expect(left).toEqual(['base.qcow2', ...manifest.clients.map((c: { qcow2: string }) => c.qcow2)].sort());
    else {
      // Killed by the signal itself if it came while node was still starting (before any handler or output).
      if (code === null) expect(signal).toBe('SIGINT');
      else expect(code, stderr).toBe(130);
      expect(left, 'nothing left in DIR (it was created by the run, so it is gone too)').toEqual([]);
      expect(existsSync(out)).toBe(false);
    }
  }, 60_000);
});
