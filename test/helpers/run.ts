/** Runs the oracles (qemu-img, e2fsprogs, ...) and our built CLI. */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The CLI under test; IMGDEDUP_CLI=path runs the tests against another build (e.g. the old one, to see a regression test fail). */
export const CLI = process.env.IMGDEDUP_CLI ?? join(ROOT, 'dist', 'cli.cjs');

/** Runs a command, returns stdout; throws with stderr on non-zero exit. */
export function sh(cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; input?: string | Uint8Array; cwd?: string } = {}): string {
  return execFileSync(cmd, args, {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
}

export interface RunResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command and returns its exit status and output, whatever the status. */
export function run(cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): RunResult {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the built imgdedup CLI (dist/cli.cjs; `npm test` builds it first). */
export function imgdedup(args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): RunResult {
  return run(process.execPath, [CLI, ...args], options);
}
