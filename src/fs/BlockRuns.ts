/**
 * A set of block (or inode) numbers kept as sorted, disjoint [start, count] runs: what
 * changed, what is explained, what is in use, what is free. Memory is O(runs), never
 * O(blocks), so a set covering a whole disk costs one entry. Immutable: the set
 * operations return new sets.
 */

/** A run of `count` blocks from block `start`. */
export type BlockRun = readonly [start: number, count: number];

export class BlockRuns {
  private readonly starts: number[];
  private readonly ends: number[];

  /** Builds the set from runs in any order, overlapping or not. */
  constructor(runs: Iterable<BlockRun> = []) {
    const sorted = [...runs].filter((r) => r[1] > 0).sort((a, b) => a[0] - b[0]);
    this.starts = [];
    this.ends = [];
    for (const [s, c] of sorted) {
      const n = this.ends.length;
      if (n > 0 && s <= this.ends[n - 1]!) this.ends[n - 1] = Math.max(this.ends[n - 1]!, s + c);
      else {
        this.starts.push(s);
        this.ends.push(s + c);
      }
    }
  }

  /** The blocks that byte ranges touch, for blocks of `blockSize` bytes (partial blocks count whole). */
  static fromByteRanges(ranges: Iterable<{ readonly offset: number; readonly length: number }>, blockSize: number): BlockRuns {
    const runs: BlockRun[] = [];
    for (const r of ranges) {
      if (r.length <= 0) continue;
      const first = Math.floor(r.offset / blockSize);
      const end = Math.ceil((r.offset + r.length) / blockSize);
      runs.push([first, end - first]);
    }
    return new BlockRuns(runs);
  }

  /** The run [start, start+count) alone. */
  static range(start: number, count: number): BlockRuns {
    return new BlockRuns([[start, count]]);
  }

  get runCount(): number {
    return this.starts.length;
  }

  /** Total blocks in the set. */
  get blockCount(): number {
    let n = 0;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  get isEmpty(): boolean {
    return this.starts.length === 0;
  }

  /** The runs in ascending order. */
  *runs(): Generator<BlockRun> {
    for (let i = 0; i < this.starts.length; i++) yield [this.starts[i]!, this.ends[i]! - this.starts[i]!];
  }

  toArray(): Array<[number, number]> {
    return [...this.runs()].map(([s, c]) => [s, c]);
  }

  /** Index of the last run starting at or before `block`, or -1. */
  private floor(block: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= block) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  has(block: number): boolean {
    const i = this.floor(block);
    return i >= 0 && block < this.ends[i]!;
  }

  /** The first member >= `block`, or undefined (lets a scan skip what is not in the set at once). */
  nextMember(block: number): number | undefined {
    const i = this.floor(block);
    if (i >= 0 && block < this.ends[i]!) return block;
    return i + 1 < this.starts.length ? this.starts[i + 1]! : undefined;
  }

  /** When `block` is a member, the first number after it that is not; else undefined (a scan skips a whole run). */
  endOfRunAt(block: number): number | undefined {
    const i = this.floor(block);
    return i >= 0 && block < this.ends[i]! ? this.ends[i]! : undefined;
  }

  /** The parts of [start, start+count) that are in the set, ascending. */
  *intersect(start: number, count: number): Generator<BlockRun> {
    const end = start + count;
    let i = Math.max(0, this.floor(start));
    for (; i < this.starts.length && this.starts[i]! < end; i++) {
      const s = Math.max(start, this.starts[i]!);
      const e = Math.min(end, this.ends[i]!);
      if (e > s) yield [s, e - s];
    }
  }

  /** How many blocks of [start, start+count) are in the set. */
  countIn(start: number, count: number): number {
    let n = 0;
    for (const [, c] of this.intersect(start, count)) n += c;
    return n;
  }

  /** Whether any block of [start, start+count) is in the set. */
  overlaps(start: number, count: number): boolean {
    if (!(count > 0)) return false;
    // The last run starting at or before the range's last block overlaps it if any does
    // (the runs are sorted and disjoint, so earlier ones end earlier).
    const i = this.floor(start + count - 1);
    return i >= 0 && this.ends[i]! > start;
  }

  /** The blocks of this set that are not in `other`. */
  minus(other: BlockRuns): BlockRuns {
    const out: BlockRun[] = [];
    for (const [s, c] of this.runs()) {
      let pos = s;
      for (const [os, oc] of other.intersect(s, c)) {
        if (os > pos) out.push([pos, os - pos]);
        pos = os + oc;
      }
      if (pos < s + c) out.push([pos, s + c - pos]);
    }
    return new BlockRuns(out);
  }

  /** This set and `other` together. */
  union(other: BlockRuns): BlockRuns {
    return new BlockRuns([...this.runs(), ...other.runs()]);
  }

  /** The blocks in both this set and `other`. */
  intersection(other: BlockRuns): BlockRuns {
    const out: BlockRun[] = [];
    // Walk the set with fewer runs, searching the other.
    const [small, big] = this.runCount <= other.runCount ? [this, other] : [other, this];
    for (const [s, c] of small.runs()) for (const r of big.intersect(s, c)) out.push(r);
    return new BlockRuns(out);
  }

  /** The blocks of [start, start+count) that are not in the set (the free runs of a used-set). */
  gapsIn(start: number, count: number): BlockRuns {
    return BlockRuns.range(start, count).minus(this);
  }

  /**
   * The first block b >= `goal` such that all of [b, b+length) is in the set, or undefined
   * (an allocator's search of a free-set: the first fitting run at or after the goal).
   */
  firstRunAt(goal: number, length: number): number | undefined {
    if (length <= 0) return goal;
    for (let i = Math.max(0, this.floor(goal)); i < this.starts.length; i++) {
      const b = Math.max(goal, this.starts[i]!);
      if (this.ends[i]! - b >= length) return b;
    }
    return undefined;
  }

  /**
   * The first block b >= `goal` such that none of [b, b+length) is in the set and
   * b+length <= `end`, or undefined (the same search over a used-set).
   */
  firstGapAt(goal: number, length: number, end: number): number | undefined {
    if (length <= 0) return goal <= end ? goal : undefined;
    let b = goal;
    let i = this.floor(goal);
    if (i >= 0 && b < this.ends[i]!) b = this.ends[i]!;
    for (i++; ; i++) {
      const next = i < this.starts.length ? this.starts[i]! : Infinity;
      if (Math.min(next, end) - b >= length) return b;
      if (next >= end) return undefined;
      b = Math.max(b, this.ends[i]!);
    }
  }
}
