/**
 * Read-ahead for a sequence of independent reads consumed in order: while the consumer
 * works on one result, the next ones are already in flight, so that a thousand small reads
 * cost about a thousand / `ahead` waits for the thread pool instead of a thousand.
 */

export interface AheadOptions<T> {
  /** Most items started and not yet consumed (at least 1). */
  readonly ahead: number;
  /** An item's weight (e.g. the bytes it reads) and the most weight in flight; one item is always allowed. */
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
  const fill = (): void => {
    while (!done && queue.length < Math.max(1, options.ahead)) {
      const next = it.next();
      if (next.done === true) {
        done = true;
        return;
      }
      const cost = options.cost?.(next.value) ?? 0;
      const promise = fn(next.value);
      // Awaited (and its failure thrown) when its turn comes; until then, and if the consumer stops early, not unhandled.
      promise.catch(() => undefined);
      queue.push({ promise, cost });
      inFlight += cost;
      if (options.maxCost !== undefined && inFlight >= options.maxCost) return;
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
