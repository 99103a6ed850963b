// VMDK benchmarks (issue 4), in paired, alternating runs against qemu-img
// (bench/lib/measure.mjs): sequential read of a monolithicSparse and a streamOptimized
// VMDK, and `convert -O raw` of a monolithicFlat VMDK holding 1 MiB of data, whose
// zero ranges must be found at memory speed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareConvertRaw, compareSequentialRead, sh } from './lib/measure.mjs';

const SIZE_MIB = Number(process.env.BENCH_VMDK_MIB ?? 1024);
const dir = mkdtempSync(join(tmpdir(), 'imgdedup-bench-'));
try {
  const raw = join(dir, 'src.raw');
  // Half random data, half zeros: the sparse format skips the zeros.
  sh('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${SIZE_MIB / 2}`, 'status=none']);
  sh('truncate', ['-s', `${SIZE_MIB}M`, raw]);
  for (const subformat of ['monolithicSparse', 'streamOptimized']) {
    console.log(`\n## vmdk ${subformat}: sequential read of ${SIZE_MIB} MiB virtual (${SIZE_MIB / 2} MiB allocated)`);
    const img = join(dir, `${subformat}.vmdk`);
    sh('qemu-img', ['convert', '-O', 'vmdk', '-o', `subformat=${subformat}`, raw, img]);
    compareSequentialRead(img, dir);
    rmSync(img);
  }
  rmSync(raw);

  console.log(`\n## vmdk monolithicFlat: convert -O raw of ${SIZE_MIB} MiB virtual holding 1 MiB of data`);
  const flat = join(dir, 'flat.vmdk');
  sh('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, `${SIZE_MIB}M`]);
  sh('qemu-io', ['-f', 'vmdk', '-c', `write -P 0x5a ${Math.floor(SIZE_MIB / 3)}M 1M`, flat]);
  compareConvertRaw(flat, dir);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
