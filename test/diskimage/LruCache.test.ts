import { describe, expect, test } from 'vitest';
import { LruCache } from '../../src/diskimage/LruCache.js';

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
    expect([c.capacity, c.size, c.get(2)]).toEqual([1, 1, 2]);
  });
});
