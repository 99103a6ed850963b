/**
 * Read-ahead for a sequence of independent reads consumed in order: while the consumer
 * works on one result, the next ones are already in flight, so that a thousand small reads
 * cost about a thousand / `ahead` waits for the thread pool instead of a thousand.
 */

export interface AheadOptions<T> {
  /** Most items started and not yet consumed (at least 1). */
  readonly ahead: number;
  /**
   * An item's weight (e.g. the bytes it reads) and the most weight in flight: an item is
   * started only if it fits, except when nothing else is in flight (one item is always
   * allowed, whatever its weight).
   */
  readonly cost?: (item: T) => number;
  readonly maxCost?: number;
}

/**
 * Yields `fn(item)` for each item, in the items' order, with up to `ahead` calls started
 * before their results are taken. A failure is thrown when its result's turn comes (what
 * the consumer saw before it is unchanged); results started but never taken are dropped.
 */
export async function* mapAhead<T, R>(items: Iterable<T>, fn: (item: T) => Promise<R>, options: AheadOptions<T>): AsyncGenerator<R> {
  const queue: Array<{ promise: Promise<R>; cost: number }> = [];
  let inFlight = 0;
  const it = items[Symbol.iterator]();
  let done = false;
  /** The next item, taken from the iterator but not started: it did not fit. */
  let waiting: { value: T; cost: number } | undefined;
  const fill = (): void => {
    while (!done && queue.length < Math.max(1, options.ahead)) {
      let next = waiting;
      waiting = undefined;
      if (next === undefined) {
        const r = it.next();
        if (r.done === true) {
          done = true;
          return;
        }
        next = { value: r.value, cost: options.cost?.(r.value) ?? 0 };
      }
      // Checked before starting it: a bound checked after would let each small item consumed start another large one.
      if (queue.length > 0 && options.maxCost !== undefined && inFlight + next.cost > options.maxCost) {
        waiting = next;
        return;
      }
      const promise = fn(next.value);
      // Awaited (and its failure thrown) when its turn comes; until then, and if the consumer stops early, not unhandled.
      promise.catch(() => undefined);
      queue.push({ promise, cost: next.cost });
      inFlight += next.cost;
    }
  };
  fill();
  while (queue.length > 0) {
    const head = queue.shift()!;
    const result = await head.promise;
    inFlight -= head.cost;
    fill();
    yield result;
  }
}
