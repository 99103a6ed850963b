// Runs a command under /usr/bin/time and returns wall seconds and peak RSS (KiB).
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';

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

const READ_ALL = new URL('./readAll.mjs', import.meta.url).pathname;

/**
 * Sequential read of `img` by imgdedup (library, through its chain) against
 * `qemu-img convert -O raw` of the same file, best of 3 each; prints both and the ratio.
 */
export function compareSequentialRead(img, scratchDir, goal) {
  const out = `${scratchDir}/out.raw`;
  const peer = bestOf(3, () => {
    rmSync(out, { force: true });
    return measure('qemu-img', ['convert', '-O', 'raw', img, out]);
  });
  rmSync(out, { force: true });
  const ours = bestOf(3, () => measure(process.execPath, [READ_ALL, img]));
  console.log(`qemu-img convert -O raw: ${peer.seconds.toFixed(2)} s, peak RSS ${(peer.maxRssKiB / 1024).toFixed(0)} MiB`);
  console.log(`imgdedup read (library): ${ours.seconds.toFixed(2)} s, peak RSS ${(ours.maxRssKiB / 1024).toFixed(0)} MiB`);
  console.log(`ratio imgdedup/qemu-img: ${fmtRatio(ours.seconds, peer.seconds)}${goal ? ` (goal ${goal})` : ''}`);
}
