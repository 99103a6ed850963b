/**
 * Buffers for reads consumed in the order they were started (mapAhead's pieces), cut from
 * one preallocated arena used as a ring and given back in the same order. A diff of a
 * client whose overlay stores hundreds of MiB then allocates nothing per piece: freshly
 * allocated buffers pile up as garbage faster than the collector frees them (V8 collects
 * external memory late), and the process keeps the pages the allocator took for them.
 */
export class FifoArena {
  private readonly arena: Uint8Array;
  /** Start offsets of the arena slices in use, oldest first (the ring's tail is the first). */
  private readonly live: number[] = [];
  /** Where the next slice starts. */
  private head = 0;

  constructor(readonly capacity: number) {
    this.arena = new Uint8Array(capacity);
  }

  /**
   * A buffer of `length` bytes: a slice of the arena when a free stretch of it is long
   * enough, else a fresh allocation (correctness never depends on the arena's size).
   * Every buffer taken must be given back with release(), in the order taken.
   */
  take(length: number): Uint8Array {
    const cap = this.capacity;
    if (this.live.length === 0) this.head = 0;
    const tail = this.live[0] ?? 0;
    let at: number | undefined;
    if (this.live.length === 0 || this.head > tail) {
      // Not wrapped: [head, cap) and [0, tail) are free.
      if (this.head + length <= cap) at = this.head;
      else if (length <= tail) at = 0;
    } else if (this.head + length <= tail) at = this.head; // wrapped: [head, tail) is free
    if (at === undefined || length === 0) return new Uint8Array(length);
    this.live.push(at);
    this.head = at + length;
    return this.arena.subarray(at, at + length);
  }

  /** Gives back the oldest buffer still taken (`buf` itself, checked by identity of its memory). */
  release(buf: Uint8Array): void {
    if (buf.buffer !== this.arena.buffer || buf.length === 0) return;
    this.live.shift();
  }
}
