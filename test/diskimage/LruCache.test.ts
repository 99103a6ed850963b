import { describe, expect, test } from 'vitest';
import { CacheBudget, LruCache } from '../../src/diskimage/LruCache.js';

describe('LruCache', () => {
  test('keeps at most its capacity, dropping the least recently used', () => {
    const c = new LruCache<number, string>(2);
    c.set(1, 'a');
    c.set(2, 'b');
    expect(c.get(1)).toBe('a'); // 1 is now the most recently used
    c.set(3, 'c');
    expect(c.size).toBe(2);
    expect(c.get(2)).toBeUndefined();
    expect([c.get(1), c.get(3)]).toEqual(['a', 'c']);
  });

  test('repeated hits on the most recent entry keep the order of the others', () => {
    const c = new LruCache<number, string>(3);
    c.set(1, 'a');
    c.set(2, 'b');
    c.set(3, 'c');
    expect([c.get(1), c.get(1), c.get(2), c.get(2)]).toEqual(['a', 'a', 'b', 'b']); // order now 3, 1, 2
    c.set(4, 'd');
    expect(c.get(3)).toBeUndefined();
    c.set(5, 'e');
    expect(c.get(1)).toBeUndefined();
    expect([c.get(2), c.get(4), c.get(5)]).toEqual(['b', 'd', 'e']);
  });

  test('setting a key again replaces its value without growing', () => {
    const c = new LruCache<string, number>(2);
    c.set('x', 1);
    c.set('x', 2);
    expect([c.size, c.get('x')]).toEqual([1, 2]);
  });

  test('a capacity below one keeps one entry (a fractional budget is rounded down)', () => {
    const c = new LruCache<number, number>(0.5);
    c.set(1, 1);
    c.set(2, 2);
    expect([c.size, c.get(1), c.get(2)]).toEqual([1, undefined, 2]);
  });
});

describe('CacheBudget shared by several caches', () => {
  const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);

  test('charges each entry its bytes and keeps the total within the limit', () => {
    const budget = new CacheBudget(10_000);
    const a = new LruCache<number, Uint8Array>({ budget });
    const b = new LruCache<number, { bytes: Uint8Array }>({ budget });
    for (let i = 0; i < 20; i++) {
      a.set(i, bytes(1000, i));
      b.set(i, { bytes: bytes(1500, i) });
      expect(budget.held).toBeLessThanOrEqual(10_000);
    }
    // 10 000 bytes hold four pairs (2500 each): the last four of each, whatever cache they are in.
    expect(budget.held).toBe(10_000);
    expect([a.size, b.size]).toEqual([4, 4]);
    expect(a.get(16)?.[0]).toBe(16);
    expect(a.get(15)).toBeUndefined();
  });

  test('one recency order for all: an entry added to one cache drops the least recently used of any', () => {
    const budget = new CacheBudget(3000);
    const a = new LruCache<string, Uint8Array>({ budget });
    const b = new LruCache<string, Uint8Array>({ budget });
    a.set('a1', bytes(1000, 1));
    b.set('b1', bytes(1000, 2));
    a.set('a2', bytes(1000, 3));
    expect(a.get('a1')).toBeDefined(); // order now b1, a2, a1
    b.set('b2', bytes(1000, 4)); // drops b1, the least recently used of the two caches
    expect([b.has('b1'), a.has('a1'), a.has('a2'), b.has('b2')]).toEqual([false, true, true, true]);
    a.set('a3', bytes(1000, 5)); // drops a2
    expect([a.has('a2'), a.has('a1'), b.has('b2'), a.has('a3')]).toEqual([false, true, true, true]);
    expect(budget.held).toBe(3000);
  });

  test('deleting, replacing and clearing give the bytes back', () => {
    const budget = new CacheBudget(10_000);
    const a = new LruCache<number, Uint8Array>({ budget });
    const b = new LruCache<number, Uint8Array>({ budget });
    a.set(1, bytes(1000, 0));
    a.set(1, bytes(3000, 0));
    b.set(1, bytes(2000, 0));
    expect(budget.held).toBe(5000);
    a.delete(1);
    expect(budget.held).toBe(2000);
    a.set(2, bytes(500, 0));
    b.clear();
    expect([budget.held, a.size, b.size]).toEqual([500, 1, 0]);
  });

  test('an entry larger than the whole budget is kept alone (a cache holds what it was just given)', () => {
    const budget = new CacheBudget(1000);
    const a = new LruCache<number, Uint8Array>({ budget });
    a.set(1, bytes(400, 0));
    a.set(2, bytes(5000, 0));
    expect([a.has(1), a.has(2), budget.held]).toEqual([false, true, 5000]);
    a.set(3, bytes(10, 0));
    expect([a.has(2), a.has(3), budget.held]).toEqual([false, true, 10]);
  });

  test('a cost function replaces the byte count', () => {
    const budget = new CacheBudget(3);
    const a = new LruCache<number, string>({ budget, cost: () => 1 });
    for (let i = 0; i < 5; i++) a.set(i, `v${i}`);
    expect([a.size, a.has(1), a.has(2), a.has(4)]).toEqual([3, false, true, true]);
  });
});
