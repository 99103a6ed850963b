// ext4 reader benchmarks (issue 5): the block ownership table of a 1 TiB filesystem
// must stay within a few hundred MiB. Peer: `e2fsck -fn`, which also accounts for
// every block, on the same image in the same run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fmtRatio, measure, sh } from './lib/measure.mjs';

const SIZE = process.env.BENCH_EXT4_SIZE ?? '1T';
const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-'));
const script = new URL('./lib/ext4Ownership.mjs', import.meta.url).pathname;
try {
  console.log(`\n## ext4: block ownership of a ${SIZE} filesystem (sparse raw file)`);
  const img = join(dir, 'fs.raw');
  sh('truncate', ['-s', SIZE, img]);
  const mk = measure('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', img]);
  console.log(`mkfs.ext4: ${mk.seconds.toFixed(1)} s`);
  const ours = measure(process.execPath, [script, img]);
  const r = JSON.parse(ours.stdout);
  const peer = measure('/bin/sh', ['-c', `e2fsck -fn ${img} >/dev/null 2>&1; test $? -le 1`]);
  console.log(`imgdedup blockOwnership: ${ours.seconds.toFixed(2)} s, peak RSS ${(ours.maxRssKiB / 1024).toFixed(0)} MiB, ${r.runs} owner runs, ${r.freeRuns} free runs`);
  console.log(`e2fsck -fn:              ${peer.seconds.toFixed(2)} s, peak RSS ${(peer.maxRssKiB / 1024).toFixed(0)} MiB`);
  console.log(`ratio imgdedup/e2fsck: time ${fmtRatio(ours.seconds, peer.seconds)}, memory ${fmtRatio(ours.maxRssKiB, peer.maxRssKiB)} (goal: a few hundred MiB)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
