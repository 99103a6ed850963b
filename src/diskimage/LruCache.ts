/**
 * The one LRU cache of the project (qcow2 L2 tables, VMDK grain tables, ext4 metadata
 * blocks, inode-table chunks and bitmaps, qcow2 check's tables), and the budget its
 * entries are charged to. Caches that share a CacheBudget share one recency order: an
 * entry added to any of them drops the least recently used entries of all of them once
 * their total passes the budget. By default every cache in the process shares
 * `sharedCacheBudget`, so the memory of all caches stays bounded together however many
 * images and filesystems a command opens (a rebase opens the base, T and every client).
 */

/** One cached value, as its cache and its budget's recency order both see it. */
interface Slot<V> {
  readonly cache: LruCache<unknown, V>;
  readonly key: unknown;
  readonly value: V;
  readonly cost: number;
}

/** A bound on what the caches charged to it hold together, in bytes (or in entries: see LruCache). */
export class CacheBudget {
  /** Every slot of every cache on this budget, least recently used first (a Set iterates in insertion order). */
  private readonly order = new Set<Slot<unknown>>();
  private newest: Slot<unknown> | undefined;
  private used = 0;

  constructor(readonly limit: number) {}

  /** What the caches hold now (at most `limit`, or one entry above it when that entry alone is larger). */
  get held(): number {
    return this.used;
  }

  /** @internal */
  add(slot: Slot<unknown>): void {
    this.order.add(slot);
    this.newest = slot;
    this.used += slot.cost;
    // The newest entry always stays: a cache must hold what it was just given.
    while (this.used > this.limit && this.order.size > 1) {
      const oldest = this.order.values().next().value as Slot<unknown>;
      oldest.cache.evict(oldest);
    }
  }

  /** @internal Marks `slot` most recently used. */
  touch(slot: Slot<unknown>): void {
    if (slot === this.newest) return; // runs of hits on one entry are the usual case
    this.order.delete(slot);
    this.order.add(slot);
    this.newest = slot;
  }

  /** @internal */
  remove(slot: Slot<unknown>): void {
    if (this.order.delete(slot)) this.used -= slot.cost;
    if (slot === this.newest) this.newest = undefined;
  }
}

/** Bytes the caches of a process hold together unless given another budget. */
export const SHARED_CACHE_BYTES = 16 << 20;

/** The budget of every cache not given its own: one per process. */
export const sharedCacheBudget = new CacheBudget(SHARED_CACHE_BYTES);

/** What a value costs: its bytes, for the typed arrays and chunks the caches hold. */
function byteCost(value: unknown): number {
  if (ArrayBuffer.isView(value)) return value.byteLength;
  const bytes = (value as { bytes?: unknown } | null)?.bytes;
  return ArrayBuffer.isView(bytes) ? bytes.byteLength : 0;
}

export interface LruCacheOptions<V> {
  /** The budget charged (default: sharedCacheBudget). */
  readonly budget?: CacheBudget;
  /** What an entry costs against the budget (default: the bytes of a typed array, or of a value's `bytes`). */
  readonly cost?: (value: V) => number;
}

/**
 * A map that drops its least recently used entries when its budget is exceeded.
 * `new LruCache(n)`: a cache of its own of at most n entries (n rounded down, at least
 * one); `new LruCache({ budget, cost })`: charged to a budget in bytes, shared by default.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, Slot<V>>();
  private readonly budget: CacheBudget;
  private readonly cost: (value: V) => number;

  constructor(options: number | LruCacheOptions<V> = {}) {
    if (typeof options === 'number') {
      this.budget = new CacheBudget(Math.max(1, Math.floor(options)));
      this.cost = () => 1;
    } else {
      this.budget = options.budget ?? sharedCacheBudget;
      this.cost = options.cost ?? byteCost;
    }
  }

  /** The value, marked as most recently used; undefined if absent. */
  get(key: K): V | undefined {
    const slot = this.map.get(key);
    if (slot === undefined) return undefined;
    this.budget.touch(slot as Slot<unknown>);
    return slot.value;
  }

  /** Whether `key` is cached (its place in the order unchanged). */
  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Stores `value` as the most recently used entry, dropping the least recently used ones beyond the budget. */
  set(key: K, value: V): void {
    this.delete(key);
    const slot: Slot<V> = { cache: this as LruCache<unknown, V>, key, value, cost: this.cost(value) };
    this.map.set(key, slot);
    this.budget.add(slot as Slot<unknown>);
  }

  /** The value without marking it used; undefined if absent. */
  peek(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  delete(key: K): void {
    const slot = this.map.get(key);
    if (slot === undefined) return;
    this.map.delete(key);
    this.budget.remove(slot as Slot<unknown>);
  }

  /** @internal Called by the budget to drop `slot`. */
  evict(slot: Slot<V>): void {
    if (this.map.get(slot.key as K) === slot) this.map.delete(slot.key as K);
    this.budget.remove(slot as Slot<unknown>);
  }

  get size(): number {
    return this.map.size;
  }

  /** Drops every entry (a closed image gives its share of the budget back). */
  clear(): void {
    for (const slot of this.map.values()) this.budget.remove(slot as Slot<unknown>);
    this.map.clear();
  }
}
