/**
 * Filesystem byte ranges known to differ between A and B (changedRanges' result is exact
 * at sector granularity, unlike the block set the differ also accepts, which may be a
 * superset). A file whose content maps such a byte, at the same block on both sides,
 * differs without its bytes being read again.
 */
import type { ByteRange } from '../diskimage/BlockDevice.js';

export class DifferingBytes {
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;

  /** `ranges`: ascending and disjoint (as changedRanges returns them). */
  constructor(ranges: readonly ByteRange[]) {
    this.starts = Float64Array.from(ranges, (r) => r.offset);
    this.ends = Float64Array.from(ranges, (r) => r.offset + r.length);
  }

  /** Whether any byte of [from, to) is known to differ. */
  overlaps(from: number, to: number): boolean {
    // The last range starting before `to`.
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! < to) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found >= 0 && this.ends[found]! > from && from < to;
  }
}
