/**
 * The result of a structural image check (`imgdedup check`), shared by every
 * format's checker, and the collector that counts findings the way
 * `qemu-img check` counts them (corruptions, leaks) while keeping the list short.
 */

/** What is wrong. Refcount findings on an image with the dirty bit set become `stale_refcount`. */
export type CheckErrorKind =
  | 'refcount_mismatch'
  | 'referenced_free'
  | 'leak'
  | 'stale_refcount'
  | 'copied_flag'
  | 'overlap'
  | 'outside_file'
  | 'misaligned'
  | 'reserved_bits'
  | 'refcount_overflow'
  | 'invalid_entry'
  | 'marked_corrupt';

export interface CheckError {
  readonly kind: CheckErrorKind;
  /** The structure holding the bad reference or value, e.g. `qcow2.l2_table`, `qcow2.refcount_block`. */
  readonly structure: string;
  /** Absolute byte offset in the file (of the entry, or of the cluster for refcount findings). */
  readonly offset: number;
  readonly detail: string;
  /** How qemu-img check counts it: as a corruption, a leak, or not at all (our own extra diagnostics). */
  readonly counts: 'corruption' | 'leak' | 'none';
}

export interface CheckResult {
  readonly file: string;
  readonly format: string;
  /** No corruptions, no leaks and no other findings. */
  readonly clean: boolean;
  /** The dirty bit (lazy refcounts not flushed) is set: refcount findings are stale rather than damage. */
  readonly dirty: boolean;
  /** As qemu-img check counts them: references the refcounts do not cover, and other structural errors. */
  readonly corruptions: number;
  /** Clusters whose refcount exceeds their references (wasted space, harmless). */
  readonly leaks: number;
  /** The first findings (at most `maxErrors`); `errorsOmitted` more were counted but not listed. */
  readonly errors: readonly CheckError[];
  readonly errorsOmitted: number;
  /** Host clusters whose refcount was compared. */
  readonly checkedClusters: number;
  /** End of the last cluster that is referenced or has a refcount (qemu-img check's image-end-offset). */
  readonly imageEndOffset: number;
}

/** Default cap on listed findings; counts stay exact beyond it. */
export const DEFAULT_MAX_CHECK_ERRORS = 1000;

/** Collects findings: exact counts, bounded list. */
export class CheckCollector {
  corruptions = 0;
  leaks = 0;
  findings = 0;
  readonly errors: CheckError[] = [];
  omitted = 0;

  constructor(private readonly maxErrors: number = DEFAULT_MAX_CHECK_ERRORS) {}

  /** Records `e`, counted `times` times (a table referenced from several places). */
  add(e: CheckError, times = 1): void {
    if (e.counts === 'corruption') this.corruptions += times;
    else if (e.counts === 'leak') this.leaks += times;
    this.findings++;
    if (this.errors.length < this.maxErrors) this.errors.push(times > 1 ? { ...e, detail: `${e.detail} (counted ${times} times: the table is referenced ${times} times)` } : e);
    else this.omitted++;
  }
}
