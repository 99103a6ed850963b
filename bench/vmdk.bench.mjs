// VMDK benchmarks (issue 4): sequential read of a monolithicSparse and a streamOptimized
// VMDK vs `qemu-img convert -O raw` of the same file, as a ratio.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareSequentialRead, sh } from './lib/measure.mjs';

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
} finally {
  rmSync(dir, { recursive: true, force: true });
}
