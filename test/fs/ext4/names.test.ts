/** Byte names and paths: joining, splitting, comparing and keying without a text decoding. */
import { describe, expect, test } from 'vitest';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { absolutePath, byteKey, bytesEqual, compareBytes, isDotOrDotDot, joinPath, keyBytes, splitPath, utf8Bytes } from '../../../src/fs/ext4/names.js';

const b = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

describe('byte paths', () => {
  test('join and split keep every byte, including invalid UTF-8', () => {
    expect(joinPath(new Uint8Array(0), b('caf\xe9'))).toEqual(b('/caf\xe9'));
    expect(joinPath(b('/d\xff'), b('x'))).toEqual(b('/d\xff/x'));
    expect(splitPath(b('//d\xff///caf\xe9/'))).toEqual([b('d\xff'), b('caf\xe9')]);
    expect(absolutePath(splitPath(b('d\xff//caf\xe9')))).toEqual(b('/d\xff/caf\xe9'));
    expect(absolutePath([])).toEqual(b('/'));
  });

  test('names that decode to the same text as UTF-8 stay distinct', () => {
    const [e9, e8] = [b('caf\xe9'), b('caf\xe8')];
    expect(new TextDecoder().decode(e9)).toBe(new TextDecoder().decode(e8));
    expect(bytesEqual(e9, e8)).toBe(false);
    expect(byteKey(e9)).not.toBe(byteKey(e8));
  });

  test('byteKey is lossless and orders as the bytes do', () => {
    const rnd = mulberry32(7);
    const names = Array.from({ length: 2000 }, () => new Uint8Array(Array.from({ length: Math.floor(rnd() * 6) }, () => Math.floor(rnd() * 256))));
    for (const n of names) expect(keyBytes(byteKey(n))).toEqual(n);
    const byKey = [...names].sort((x, y) => (byteKey(x) < byteKey(y) ? -1 : byteKey(x) > byteKey(y) ? 1 : 0));
    expect(byKey).toEqual([...names].sort(compareBytes));
  });

  test("'.' and '..' only", () => {
    expect([b('.'), b('..'), b('...'), b('.x'), b('')].map(isDotOrDotDot)).toEqual([true, true, false, false, false]);
    expect(utf8Bytes('café')).toEqual(b('caf\xc3\xa9'));
  });
});
