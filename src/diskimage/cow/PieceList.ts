/**
 * A sorted list of disjoint guest byte ranges, stored as leaves of at most
 * 2 * leafSize items, so that finding, inserting and removing ranges costs
 * O(log n + leafSize + n / leafSize) instead of the O(n) of one array (a layer with
 * 100,000 scattered writes would spend seconds moving array elements).
 */
const DEFAULT_LEAF = 256;

export interface Span {
  readonly start: number;
  readonly end: number;
}

export class PieceList<T extends Span> {
  /** Non-empty leaves, in order; items ascending and disjoint across all of them. */
  private readonly leaves: T[][] = [];
  private count = 0;

  constructor(private readonly leafSize: number = DEFAULT_LEAF) {}

  get length(): number {
    return this.count;
  }

  /** Index of the first leaf whose last item ends after `offset` (leaves.length if none). */
  private leafEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.leaves.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const leaf = this.leaves[mid]!;
      if (leaf[leaf.length - 1]!.end <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private static indexEndingAfter<T extends Span>(leaf: readonly T[], offset: number): number {
    let lo = 0;
    let hi = leaf.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (leaf[mid]!.end <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The first item ending after `offset`. */
  firstEndingAfter(offset: number): T | undefined {
    const l = this.leafEndingAfter(offset);
    const leaf = this.leaves[l];
    return leaf === undefined ? undefined : leaf[PieceList.indexEndingAfter(leaf, offset)];
  }

  /** The last item ending at or before `offset`. */
  lastEndingAtOrBefore(offset: number): T | undefined {
    const l = this.leafEndingAfter(offset);
    const leaf = this.leaves[l];
    if (leaf !== undefined) {
      const i = PieceList.indexEndingAfter(leaf, offset);
      if (i > 0) return leaf[i - 1];
    }
    const prev = this.leaves[l - 1];
    return prev === undefined ? undefined : prev[prev.length - 1];
  }

  /** The items overlapping `[start, end)`, in order. */
  *overlapping(start: number, end: number): Generator<T> {
    for (let l = this.leafEndingAfter(start); l < this.leaves.length; l++) {
      const leaf = this.leaves[l]!;
      for (let i = PieceList.indexEndingAfter(leaf, start); i < leaf.length; i++) {
        if (leaf[i]!.start >= end) return;
        yield leaf[i]!;
      }
    }
  }

  /** Removes every item overlapping `[start, end)`. */
  remove(start: number, end: number): void {
    const first = this.leafEndingAfter(start);
    let l = first;
    while (l < this.leaves.length) {
      const leaf = this.leaves[l]!;
      const i = PieceList.indexEndingAfter(leaf, start);
      let j = i;
      while (j < leaf.length && leaf[j]!.start < end) j++;
      const reachedEnd = j === leaf.length;
      leaf.splice(i, j - i);
      this.count -= j - i;
      if (leaf.length === 0) this.leaves.splice(l, 1);
      else l++;
      if (!reachedEnd) break;
    }
    // Keep leaves from dwindling: join the touched leaf with a neighbour when both fit in one.
    for (const k of [first - 1, first]) {
      const a = this.leaves[k];
      const b = this.leaves[k + 1];
      if (a !== undefined && b !== undefined && a.length + b.length <= this.leafSize) {
        this.leaves.splice(k, 2, a.concat(b));
        break;
      }
    }
  }

  /** Inserts ascending items that overlap nothing in the list, contiguously placed. */
  insert(items: readonly T[]): void {
    if (items.length === 0) return;
    let l = this.leafEndingAfter(items[0]!.start);
    if (l === this.leaves.length) {
      if (l === 0) this.leaves.push([]);
      l = this.leaves.length - 1;
    }
    const leaf = this.leaves[l]!;
    leaf.splice(PieceList.indexEndingAfter(leaf, items[0]!.start), 0, ...items);
    this.count += items.length;
    if (leaf.length > 2 * this.leafSize) {
      const parts: T[][] = [];
      for (let i = 0; i < leaf.length; i += this.leafSize) parts.push(leaf.slice(i, i + this.leafSize));
      this.leaves.splice(l, 1, ...parts);
    }
  }

  /** Every item, in order. */
  *[Symbol.iterator](): Generator<T> {
    for (const leaf of this.leaves) yield* leaf;
  }

  clear(): void {
    this.leaves.length = 0;
    this.count = 0;
  }
}
