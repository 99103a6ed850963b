// Copy-on-write layer (CowDevice): N scattered 4 KiB writes over a 1 TiB qcow2 base,
// held within a small memory budget (the rest spills to a temp file), then emitted
// as a qcow2 overlay with 4 KiB clusters. Peer: qemu-io making the same writes into
// a qcow2 overlay. The two overlays must compare equal. Timings on a shared machine
// are noisy.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fmtRatio, measure, sh } from './lib/measure.mjs';
import { cowWrites } from './lib/cowWrites.mjs';

const N = Number(process.env.BENCH_COW_WRITES ?? 3000);
const BUDGET = Number(process.env.BENCH_COW_BUDGET ?? 8 * 1024 * 1024);
const CLUSTER = 4096;
const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-cow-'));
try {
  console.log(`\n## cow: ${N} scattered 4 KiB writes over a 1 TiB base, memory budget ${BUDGET >> 20} MiB, emitted as a qcow2 overlay`);
  const base = join(dir, 'base.qcow2');
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1T']);
  sh('qemu-io', ['-c', 'write -P 0x5a 0 64M', '-c', 'write -P 0x5b 512G 64M', base]);

  const ours = join(dir, 'ours.qcow2');
  const m = measure(process.execPath, [new URL('./lib/cowWorker.mjs', import.meta.url).pathname, base, ours, String(N), String(BUDGET), String(CLUSTER)]);
  const r = JSON.parse(m.stdout.trim().split('\n').pop());

  const peer = join(dir, 'peer.qcow2');
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, '-b', 'base.qcow2', '-F', 'qcow2', peer]);
  const args = [];
  for (const w of cowWrites(N, 2 ** 40)) args.push('-c', `write -q -P ${w.pattern} ${w.offset} ${w.length}`);
  const q = measure('qemu-io', [...args, peer]);

  const same = sh('qemu-img', ['compare', '-q', ours, peer]) === '' ;
  console.log(`imgdedup: ${m.seconds.toFixed(2)} s wall (writes ${(r.writeMs / 1000).toFixed(2)} s, emit ${(r.emitMs / 1000).toFixed(2)} s, process incl. Node start-up), peak RSS ${(m.maxRssKiB / 1024).toFixed(0)} MiB, spilled ${(r.spilledBytes / 2 ** 20).toFixed(0)} MiB, overlay ${(statSync(ours).size / 2 ** 20).toFixed(1)} MiB`);
  console.log(`qemu-io:  ${q.seconds.toFixed(2)} s wall, peak RSS ${(q.maxRssKiB / 1024).toFixed(0)} MiB, overlay ${(statSync(peer).size / 2 ** 20).toFixed(1)} MiB`);
  console.log(`ratio (wall): ${fmtRatio(m.seconds, q.seconds)}; overlays equal: ${same}`);
  if (!same) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
