/** diffDisks over two image files, each opened through its whole backing chain. */
import { openChain, type ImageChain } from '../../src/diskimage/openChain.js';
import { diffDisks, type DiskDiff } from '../../src/blockdiff/diffDisk.js';
import type { DiffSide } from '../../src/blockdiff/changedRanges.js';

/** A diff side whose layers are the chain's images, top first. */
export function side(name: string, chain: ImageChain): DiffSide {
  return { name, device: chain.device, layers: chain.layers.map((l) => ({ id: l.path, device: l })) };
}

export async function diffPaths(a: string, b: string): Promise<DiskDiff> {
  const ca = await openChain(a);
  const cb = await openChain(b);
  try {
    return await diffDisks(side(a, ca), side(b, cb));
  } finally {
    await ca.close();
    await cb.close();
  }
}
