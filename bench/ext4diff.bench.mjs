// `imgdedup diff` (issue 5): a multi-GiB ext4 image and a qcow2 overlay holding an update
// (files replaced, added, deleted), vs dumping both trees with `debugfs rdump` and
// comparing them with `diff -rq`; wall time ratio and peak RSS of each.
// Sizes: BENCH_EXT4DIFF_DISK_MIB (default 3072), BENCH_EXT4DIFF_FILL_MIB (files copied
// from /usr into the base, default a quarter of the disk), BENCH_EXT4DIFF_CHANGE_MB
// (bytes of files replaced, default 70).
import { copyFileSync, mkdirSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fmtRatio, measure, sh } from './lib/measure.mjs';
import { mulberry32 } from '../fixtures/prng.mjs';
import { listFiles } from '../fixtures/listFiles.mjs';

const DISK_MIB = Number(process.env.BENCH_EXT4DIFF_DISK_MIB ?? 3072);
const FILL_MIB = Number(process.env.BENCH_EXT4DIFF_FILL_MIB ?? Math.floor(DISK_MIB / 4));
const CHANGE_MB = Number(process.env.BENCH_EXT4DIFF_CHANGE_MB ?? 70);
const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-ext4diff-'));
const cli = new URL('../dist/cli.cjs', import.meta.url).pathname;

const seeded = mulberry32;
const sizedFiles = (root) => listFiles(root).filter((f) => f.size > 0 && f.size <= 8 << 20).map((f) => [f.path, f.size]);

try {
  console.log(`\n## ext4 diff: ${DISK_MIB} MiB disk, ${FILL_MIB} MiB of files, ${CHANGE_MB} MB update`);
  const tree = join(dir, 'tree');
  const files = [];
  let budget = FILL_MIB << 20;
  for (const [p, size] of [...sizedFiles('/usr/lib'), ...sizedFiles('/usr/share'), ...sizedFiles('/usr/bin')]) {
    if (budget <= 0) break;
    if (size > budget) continue;
    const rel = relative('/usr', p);
    mkdirSync(join(tree, dirname(rel)), { recursive: true });
    try {
      copyFileSync(p, join(tree, rel));
    } catch {
      continue;
    }
    budget -= size;
    files.push(['/' + rel, size]);
  }
  const A = join(dir, 'A.raw');
  const B = join(dir, 'B.raw');
  sh('truncate', ['-s', `${DISK_MIB}M`, A]);
  spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree, A], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' }, stdio: 'ignore' });
  rmSync(tree, { recursive: true, force: true });
  sh('cp', ['--sparse=always', A, B]);
  // The update: replace files (new content, same or different size) up to CHANGE_MB, delete
  // some, add some.
  const rnd = seeded(1);
  const payloads = join(dir, 'payloads');
  mkdirSync(payloads);
  const cmds = [];
  let changed = 0;
  let n = 0;
  const picks = files.filter(() => rnd() < 0.5);
  for (const [path, size] of picks) {
    if (changed >= CHANGE_MB * 1e6) break;
    const newSize = Math.max(1, Math.floor(size * (0.8 + rnd() * 0.4)));
    const buf = Buffer.alloc(newSize);
    for (let i = 0; i < newSize; i += 4096) buf[i] = Math.floor(rnd() * 256);
    const pf = join(payloads, `p${n++}`);
    writeFileSync(pf, buf);
    cmds.push(`rm "${path}"`, `write ${pf} "${path}"`);
    changed += newSize;
  }
  for (const [path] of files.slice(-20)) cmds.push(`rm "${path}"`);
  for (let i = 0; i < 20; i++) {
    const pf = join(payloads, `new${i}`);
    writeFileSync(pf, `new file ${i}\n`.repeat(100));
    cmds.push(`write ${pf} /new-${i}.conf`);
  }
  spawnSync('debugfs', ['-w', '-f', '-', B], { input: cmds.join('\n') + '\n', stdio: ['pipe', 'ignore', 'ignore'] });
  rmSync(payloads, { recursive: true, force: true });
  const Aq = join(dir, 'A.qcow2');
  const Bq = join(dir, 'B.qcow2');
  sh('qemu-img', ['convert', '-O', 'qcow2', A, Aq]);
  // qemu-img convert -B copies every allocated cluster; an empty overlay on a full copy,
  // safely rebased onto A, holds only the clusters that differ.
  const full = join(dir, 'Bfull.qcow2');
  sh('qemu-img', ['convert', '-O', 'qcow2', B, full]);
  sh('qemu-img', ['create', '-f', 'qcow2', '-b', full, '-F', 'qcow2', Bq]);
  sh('qemu-img', ['rebase', '-f', 'qcow2', '-b', Aq, '-F', 'qcow2', Bq]);
  rmSync(full);
  const overlayBytes = Number(JSON.parse(sh('qemu-img', ['info', '--output=json', Bq]))['actual-size']);
  console.log(`update: ${(changed / 1e6).toFixed(1)} MB in ${n} replaced files, 20 deleted, 20 added; overlay file ${(overlayBytes / 1e6).toFixed(1)} MB`);

  const ours = measure(process.execPath, [cli, 'diff', '--json', Aq, Bq]);
  const result = JSON.parse(ours.stdout);
  const fs = result.filesystems[0];
  const paths = fs.added.length + fs.removed.length + fs.modified.length;
  const dumpA = join(dir, 'dumpA');
  const dumpB = join(dir, 'dumpB');
  mkdirSync(dumpA);
  mkdirSync(dumpB);
  const peer = measure('sh', ['-c', `debugfs -R "rdump / ${dumpA}" ${A} 2>/dev/null && debugfs -R "rdump / ${dumpB}" ${B} 2>/dev/null && (diff -rq --no-dereference ${dumpA} ${dumpB} > ${join(dir, 'peer.txt')}; true)`]);
  const peerLines = sh('wc', ['-l', join(dir, 'peer.txt')]).trim().split(' ')[0];
  console.log(`imgdedup diff (overlay, ${fs.stats.mode}): ${ours.seconds.toFixed(2)} s, peak RSS ${(ours.maxRssKiB / 1024).toFixed(0)} MiB; ${paths} paths (${fs.added.length} A, ${fs.removed.length} D, ${fs.modified.length} M), ownership scan: ${fs.stats.ownershipScan}`);
  console.log(`rdump both + diff -rq: ${peer.seconds.toFixed(2)} s, peak RSS ${(peer.maxRssKiB / 1024).toFixed(0)} MiB; ${peerLines} lines`);
  console.log(`ratio imgdedup/rdump-and-compare: ${fmtRatio(ours.seconds, peer.seconds)} (lower is better)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
