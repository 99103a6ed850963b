// Disk-image layer benchmarks (issue 3), each in paired, alternating runs against
// qemu-img (bench/lib/measure.mjs): sequential read of a 1 GiB allocated qcow2 and
// `convert -O raw` of it (goal: <= 1.5x qemu-img convert -O raw), and `map` of a 1 TiB
// sparse overlay (goal: milliseconds, independent of the virtual size).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareConvertRaw, comparePaired, compareSequentialRead, fmtRatio, sh } from './lib/measure.mjs';

const SIZE_MIB = Number(process.env.BENCH_QCOW2_MIB ?? 1024);
const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-'));
const cli = new URL('../dist/cli.cjs', import.meta.url).pathname;
try {
  const raw = join(dir, 'src.raw');
  sh('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${SIZE_MIB}`, 'status=none']);
  const img = join(dir, 'full.qcow2');
  sh('qemu-img', ['convert', '-O', 'qcow2', raw, img]);
  rmSync(raw);
  console.log(`\n## qcow2: sequential read of ${SIZE_MIB} MiB allocated`);
  compareSequentialRead(img, dir, '<= 1.50x');
  console.log(`\n## qcow2: convert -O raw of ${SIZE_MIB} MiB allocated`);
  compareConvertRaw(img, dir, '<= 1.50x');
  rmSync(img);

  console.log('\n## qcow2: map of sparse overlays (1 GiB vs 1 TiB virtual, same 64 writes)');
  const times = {};
  for (const [label, size] of [['1 GiB', '1G'], ['1 TiB', '1T']]) {
    const base = join(dir, `base-${size}.qcow2`);
    const top = join(dir, `top-${size}.qcow2`);
    sh('qemu-img', ['create', '-f', 'qcow2', base, size]);
    sh('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, size]);
    const writes = [];
    for (let i = 0; i < 64; i++) writes.push('-c', `write -P ${i} ${i * 7}M 64k`);
    sh('qemu-io', [...writes, top]);
    console.log(`${label} (times include Node start-up):`);
    const r = comparePaired({ name: 'imgdedup map', cmd: process.execPath, args: [cli, 'map', '--json', top] }, [{ name: 'qemu-img map', cmd: 'qemu-img', args: ['map', '--output=json', top] }]);
    times[label] = r.ours;
  }
  console.log(`1 TiB / 1 GiB median map time: ${fmtRatio(times['1 TiB'], times['1 GiB'])} (goal: ~1x, independent of virtual size)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
