/**
 * Refcount structure sizing for writers (qcow2.rst, "Host cluster management"):
 * the refcount table and blocks must themselves be counted, so their size is a
 * fixed point of "clusters to cover = clusters before them + their own clusters".
 */
import { InternalError } from '../../errors.js';

export interface RefcountPlan {
  /** Clusters in the refcount table. */
  readonly refcountTableClusters: number;
  /** Number of refcount blocks. */
  readonly refcountBlocks: number;
  /** Total host clusters, the refcount structures included. */
  readonly totalClusters: number;
}

/**
 * Sizes the refcount table and blocks that cover `baseClusters` host clusters plus
 * themselves, for refcount entries of 2^refcountOrder bits. Throws INTERNAL if the
 * iteration does not settle (it always does: each step adds less than it covers).
 */
export function planRefcounts(baseClusters: number, clusterSize: number, refcountOrder: number): RefcountPlan {
  const entriesPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  const tableEntriesPerCluster = clusterSize / 8;
  let blocks = 0;
  let tableClusters = 0;
  for (let i = 0; i < 64; i++) {
    const total = baseClusters + tableClusters + blocks;
    const needBlocks = Math.ceil(total / entriesPerBlock);
    const needTable = Math.max(1, Math.ceil(needBlocks / tableEntriesPerCluster));
    if (needBlocks === blocks && needTable === tableClusters) {
      return { refcountTableClusters: tableClusters, refcountBlocks: blocks, totalClusters: total };
    }
    blocks = needBlocks;
    tableClusters = needTable;
  }
  throw new InternalError('refcount layout did not reach a fixed point', { baseClusters, clusterSize });
}
