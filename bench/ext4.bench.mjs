// ext4 reader benchmarks. Peer: `e2fsck -fn` on the same image in the same run, which
// also reads every inode and accounts for every block.
// 1. 100,000 small files (issue "Speed"; goal <= 4x e2fsck -fn): `ls -R -l`, a library
//    walk that stats every entry (Ext4Fs.listings, lib/ext4Walk.mjs), the block ownership
//    table, and `diff` of an overlay with ~1,000 files edited in place (which
//    needs an ownership scan of both sides; its peer checks both filesystems, and the
//    ratio against one e2fsck is printed too). Each as the median of BENCH_EXT4_PAIRS
//    (default 5) paired runs, ours and e2fsck alternating which goes first.
// 2. The block ownership table of a BENCH_EXT4_SIZE (default 1 TiB) filesystem must stay
//    within a few hundred MiB (issue 5).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fmtRatio, measure, sh } from './lib/measure.mjs';
import { smallFilesImage } from './lib/smallFilesImage.mjs';

const SIZE = process.env.BENCH_EXT4_SIZE ?? '1T';
const PAIRS = Number(process.env.BENCH_EXT4_PAIRS ?? 5);
const cli = new URL('../dist/cli.cjs', import.meta.url).pathname;
const script = new URL('./lib/ext4Ownership.mjs', import.meta.url).pathname;
const walkScript = new URL('./lib/ext4Walk.mjs', import.meta.url).pathname;
const e2fsck = (img) => () => measure('/bin/sh', ['-c', `e2fsck -fn ${img} >/dev/null 2>&1; test $? -le 1`]);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** `pairs` paired runs of ours and the peer, alternating which runs first; medians and the median ratio. */
function paired(pairs, ours, peer) {
  const runs = [];
  for (let i = 0; i < pairs; i++) {
    let a;
    let b;
    if (i % 2 === 0) {
      a = ours();
      b = peer();
    } else {
      b = peer();
      a = ours();
    }
    runs.push({ ours: a, peer: b, ratio: a.seconds / b.seconds });
  }
  return {
    ours: median(runs.map((r) => r.ours.seconds)),
    peer: median(runs.map((r) => r.peer.seconds)),
    ratio: median(runs.map((r) => r.ratio)),
    oursRssKiB: Math.max(...runs.map((r) => r.ours.maxRssKiB)),
    last: runs[runs.length - 1].ours,
  };
}

const report = (label, r, goal) =>
  console.log(
    `${label}: ${r.ours.toFixed(2)} s (peak RSS ${(r.oursRssKiB / 1024).toFixed(0)} MiB) vs e2fsck -fn ${r.peer.toFixed(2)} s; median paired ratio ${r.ratio.toFixed(2)}x${goal ? ` (goal ${goal})` : ''}`,
  );

console.log(`\n## ext4: 100,000 small files, 2 GiB (medians of ${PAIRS} paired runs; the machine's load skews absolute times)`);
const img = smallFilesImage();
console.log(`image: ${img.files} files; overlay: ${img.edited} files edited in place`);
// Like e2fsck, through sh with stdout to /dev/null: what is timed is the tool, not this
// harness reading 7 MB of listing from a pipe (20-30 ms). The listing is counted untimed.
const ls = paired(PAIRS, () => measure('/bin/sh', ['-c', `"${process.execPath}" "${cli}" ls -R -l "${img.base}" >/dev/null`]), e2fsck(img.base));
const lines = measure(process.execPath, [cli, 'ls', '-R', '-l', img.base]).stdout.split('\n').filter((l) => l !== '').length;
report(`imgdedup ls -R -l > /dev/null (${lines} entries)`, ls, '<= 4x');
const walk = paired(PAIRS, () => measure(process.execPath, [walkScript, img.base]), e2fsck(img.base));
report(`walk + stat of every entry (library, ${JSON.parse(walk.last.stdout).entries} entries)`, walk, '<= 4x');
const own = paired(PAIRS, () => measure(process.execPath, [script, img.base]), e2fsck(img.base));
report(`blockOwnership (library, ${JSON.parse(own.last.stdout).runs} owner runs)`, own, '<= 4x');
// diff reads two filesystems (the base's and the overlay's): its peer is e2fsck -fn of both,
// the overlay's flattened to raw beforehand (untimed). Against one e2fsck it is shown too.
const flatDir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-flat-'));
try {
  const overlayRaw = join(flatDir, 'overlay.raw');
  sh('qemu-img', ['convert', '-O', 'raw', img.overlay, overlayRaw]);
  const e2fsckBoth = () => measure('/bin/sh', ['-c', `e2fsck -fn ${img.base} >/dev/null 2>&1; test $? -le 1 && e2fsck -fn ${overlayRaw} >/dev/null 2>&1; test $? -le 1`]);
  const diff = paired(PAIRS, () => measure(process.execPath, [cli, 'diff', '--json', img.base, img.overlay]), e2fsckBoth);
  const fsd = JSON.parse(diff.last.stdout).filesystems[0];
  report(`imgdedup diff of the overlay (${fsd.modified.length} modified of ${img.edited} edited, ownership scan: ${fsd.stats.ownershipScan}), against e2fsck -fn of both filesystems`, diff, '<= 4x');
  const one = paired(PAIRS, () => measure(process.execPath, [cli, 'diff', '--json', img.base, img.overlay]), e2fsck(img.base));
  report('  the same diff against e2fsck -fn of the base alone (for reference)', one);
} finally {
  rmSync(flatDir, { recursive: true, force: true });
}

const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-'));
try {
  console.log(`\n## ext4: block ownership of a ${SIZE} filesystem (sparse raw file)`);
  const big = join(dir, 'fs.raw');
  sh('truncate', ['-s', SIZE, big]);
  const mk = measure('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', big]);
  console.log(`mkfs.ext4: ${mk.seconds.toFixed(1)} s`);
  const ours = measure(process.execPath, [script, big]);
  const r = JSON.parse(ours.stdout);
  const peer = e2fsck(big)();
  console.log(`imgdedup blockOwnership: ${ours.seconds.toFixed(2)} s, peak RSS ${(ours.maxRssKiB / 1024).toFixed(0)} MiB, ${r.runs} owner runs, ${r.freeRuns} free runs`);
  console.log(`e2fsck -fn:              ${peer.seconds.toFixed(2)} s, peak RSS ${(peer.maxRssKiB / 1024).toFixed(0)} MiB`);
  console.log(`ratio imgdedup/e2fsck: time ${fmtRatio(ours.seconds, peer.seconds)}, memory ${fmtRatio(ours.maxRssKiB, peer.maxRssKiB)} (goal: a few hundred MiB)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
