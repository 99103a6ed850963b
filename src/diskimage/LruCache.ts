/**
 * A map that keeps at most `capacity` entries, dropping the least recently used: the
 * bounded caches of table and metadata blocks (qcow2 L2 tables and refcount blocks, VMDK
 * grain tables, ext4 blocks and inode-table chunks) share it.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, V>();
  /** The most recently used key: a hit on it needs no reordering (runs of hits on one entry are the usual case). */
  private newest: K | undefined;
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = Math.max(1, Math.floor(capacity));
  }

  /** The value, marked as most recently used; undefined if absent. */
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined && key !== this.newest) {
      this.newest = key;
      // A Map iterates in insertion order: re-inserting moves the key to the young end.
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  /** Whether `key` is cached (its place in the order unchanged). */
  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Stores `value`, dropping the least recently used entries beyond the capacity. */
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    this.newest = key;
    while (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as K);
  }

  /** The value without marking it used; undefined if absent. */
  peek(key: K): V | undefined {
    return this.map.get(key);
  }

  delete(key: K): void {
    if (key === this.newest) this.newest = undefined;
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }

  clear(): void {
    this.map.clear();
    this.newest = undefined;
  }
}
