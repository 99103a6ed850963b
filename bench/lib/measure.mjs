// Runs a command under /usr/bin/time and returns wall seconds and peak RSS (KiB).
import { spawnSync } from 'node:child_process';

export function measure(cmd, args, { env } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, ...env } });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const maxRssKiB = Number(lines[lines.length - 1]);
  return { seconds, maxRssKiB, stdout: r.stdout };
}

/** Best of n runs (by wall time), to damp noise on a shared machine. */
export function bestOf(n, fn) {
  let best;
  for (let i = 0; i < n; i++) {
    const m = fn();
    if (!best || m.seconds < best.seconds) best = m;
  }
  return best;
}

export function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export function fmtRatio(ours, peer) {
  return (ours / peer).toFixed(2) + 'x';
}
