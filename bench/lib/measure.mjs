// Runs commands under /usr/bin/time (wall seconds, peak RSS) and compares ours with a
// peer tool in paired, alternating runs.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';

/** Rounds of paired runs (BENCH_PAIRS, default 5). */
export const PAIRS = Number(process.env.BENCH_PAIRS ?? 5);

export function measure(cmd, args, { env } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, ...env } });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const maxRssKiB = Number(lines[lines.length - 1]);
  return { seconds, maxRssKiB, stdout: r.stdout };
}

/** Best of n runs (by wall time). */
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

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`);
const cmdLine = (side) => [side.cmd, ...side.args].map(quote).join(' ');

function runSide(side) {
  side.before?.();
  try {
    return measure(side.cmd, side.args, side.env ? { env: side.env } : {});
  } finally {
    side.after?.();
  }
}

/**
 * Paired, alternating runs: ours, then each peer, then ours again, ... for `pairs`
 * rounds, after one untimed warm-up round. Other work on a shared machine slows runs
 * unevenly; the two runs of a round see about the same load, so the median of the
 * per-round ratios is the number to read (the medians of each side are printed too).
 * A side is { name, cmd, args, env?, before?, after? }; before/after run untimed
 * around every run (e.g. to remove an output file). Prints the command lines used.
 * Returns { ours, oursRssKiB, peers: [{ name, median, ratio, rssKiB }] } with times in seconds
 * and the peak RSS of any run of that side.
 */
export function comparePaired(ours, peers, { pairs = PAIRS, goal } = {}) {
  for (const side of [ours, ...peers]) console.log(`  $ ${cmdLine(side)}`);
  for (const side of [ours, ...peers]) runSide(side); // warm-up: page cache, lazy loading
  const times = [ours, ...peers].map(() => []);
  const rss = [ours, ...peers].map(() => 0);
  for (let i = 0; i < pairs; i++) {
    [ours, ...peers].forEach((side, k) => {
      const m = runSide(side);
      times[k].push(m.seconds);
      rss[k] = Math.max(rss[k], m.maxRssKiB);
    });
  }
  const width = Math.max(...[ours, ...peers].map((s) => s.name.length));
  [ours, ...peers].forEach((side, k) => {
    console.log(`  ${side.name.padEnd(width)}  median ${median(times[k]).toFixed(2)} s  [${times[k].map((t) => t.toFixed(2)).join(' ')}]  peak RSS ${(rss[k] / 1024).toFixed(0)} MiB`);
  });
  const result = { ours: median(times[0]), oursRssKiB: rss[0], peers: [] };
  peers.forEach((peer, j) => {
    const ratios = times[0].map((t, i) => t / times[j + 1][i]);
    const ratio = median(ratios);
    result.peers.push({ name: peer.name, median: median(times[j + 1]), ratio, rssKiB: rss[j + 1] });
    const spread = `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}`;
    console.log(`  ratio ${ours.name} / ${peer.name}: ${ratio.toFixed(2)}x (median of ${pairs} paired ratios, range ${spread})${goal && j === 0 ? ` (goal ${goal})` : ''}`);
  });
  return result;
}

const READ_ALL = new URL('./readAll.mjs', import.meta.url).pathname;
const CLI = new URL('../../dist/cli.cjs', import.meta.url).pathname;

/**
 * Sequential read of `img` by imgdedup (library, through its chain) against
 * `qemu-img convert -O raw` of the same file, and against qemu-img reading without
 * writing (convert into the null-co driver, which discards), in paired runs.
 */
export function compareSequentialRead(img, scratchDir, goal) {
  const out = `${scratchDir}/out.raw`;
  const size = JSON.parse(sh('qemu-img', ['info', '--output=json', img]))['virtual-size'];
  const clean = () => rmSync(out, { force: true });
  return comparePaired(
    { name: 'imgdedup read (library)', cmd: process.execPath, args: [READ_ALL, img] },
    [
      { name: 'qemu-img convert -O raw', cmd: 'qemu-img', args: ['convert', '-O', 'raw', img, out], before: clean, after: clean },
      { name: 'qemu-img convert (null-co, no write)', cmd: 'qemu-img', args: ['convert', '-n', '--target-image-opts', img, `driver=null-co,size=${size}`] },
    ],
    { goal },
  );
}

/**
 * `imgdedup convert -O raw` of `img` against `qemu-img convert -O raw` (which by
 * default writes with cache=unsafe: no flush) and `qemu-img convert -t writeback`
 * (flushes the output at the end, as ours always does), in paired runs.
 */
export function compareConvertRaw(img, scratchDir, goal) {
  const ourOut = `${scratchDir}/ours.raw`;
  const peerOut = `${scratchDir}/peer.raw`;
  const clean = () => {
    // Removing an output drops its dirty pages, so no run pays for another's writeback.
    rmSync(ourOut, { force: true });
    rmSync(peerOut, { force: true });
  };
  // Fast and wrong would not count: the output must read back as the source.
  sh(process.execPath, [CLI, 'convert', '--json', '-O', 'raw', img, ourOut]);
  sh('qemu-img', ['compare', img, ourOut]);
  clean();
  return comparePaired(
    { name: 'imgdedup convert -O raw', cmd: process.execPath, args: [CLI, 'convert', '--json', '-O', 'raw', img, ourOut], before: clean, after: clean },
    [
      { name: 'qemu-img convert -O raw', cmd: 'qemu-img', args: ['convert', '-O', 'raw', img, peerOut], before: clean, after: clean },
      { name: 'qemu-img convert -t writeback -O raw', cmd: 'qemu-img', args: ['convert', '-t', 'writeback', '-O', 'raw', img, peerOut], before: clean, after: clean },
    ],
    { goal },
  );
}
