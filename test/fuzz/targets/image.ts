/**
 * The fuzz target for disk images (qcow2, VMDK, raw with partition tables): everything a
 * read-only command does with an image file. Runs inside a pool worker (worker.ts).
 */
import { ImgdedupError, InternalError } from '../../../src/errors.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import { checkImage } from '../../../src/diskimage/checkImage.js';
import { readPartitionTable } from '../../../src/diskimage/partition/readPartitionTable.js';
import { detectFilesystem } from '../../../src/diskimage/detectFilesystem.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import type { TargetInputs, TargetResult } from '../protocol.js';

/** Chain open, allocation walks, reads (the start and 3 random places), partitions, then a check of each file. */
export async function imageTarget(input: TargetInputs['image']): Promise<TargetResult> {
  const rnd = mulberry32(input.seed);
  try {
    const chain = await openChain(input.open, { maxDepth: 8 });
    try {
      const dev = chain.device;
      let n = 0;
      for await (const e of dev.allocation()) {
        if (e.length <= 0) throw new Error(`empty extent at ${e.offset}`);
        if (++n > 200_000) break;
      }
      for (const layer of chain.layers) for await (const _e of layer.allocation()) if (++n > 400_000) break;
      const len = Math.min(dev.size, 256 * 1024);
      if (len > 0) await dev.read(0, len);
      for (let i = 0; i < 3 && dev.size > 0; i++) {
        const off = Math.floor(rnd() * dev.size);
        await dev.read(off, Math.min(65536, dev.size - off));
      }
      const table = await readPartitionTable(dev, { file: input.open });
      for (const p of table.partitions.slice(0, 8)) await detectFilesystem(p.device());
    } finally {
      await chain.close();
    }
  } finally {
    // The check reads the image independently of the reader; it must be as robust.
    for (const f of input.checkFiles) await checkImage(f).catch(rethrowUnlessExpected);
  }
  return { outcome: 'ok' };
}

function rethrowUnlessExpected(err: unknown): void {
  if (!(err instanceof ImgdedupError) || err instanceof InternalError) throw err;
}
