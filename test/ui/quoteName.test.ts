/**
 * Display of byte names: plain UTF-8 text prints as it is; anything else is quoted with C
 * and octal escapes, and the quoted form reads back to the same bytes. (GNU `ls
 * --quoting-style=c` is the oracle for real file names in test/commands/ls.names.integ.test.ts.)
 */
import { describe, expect, test } from 'vitest';
import { mulberry32 } from '../../fixtures/prng.mjs';
import { isPlainName, nameFields, parsePathArg, parsePathArgBytes, plainAsciiText, quoteName, quoteSpaced, unquoteName } from '../../src/ui/quoteName.js';

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

describe('quoteName', () => {
  test.each([
    ['plain ASCII', bytes('hosts'), 'hosts'],
    ['spaces and punctuation stay', bytes('a b -> c'), 'a b -> c'],
    ['valid UTF-8 stays', utf8('ünïcødé-名前'), 'ünïcødé-名前'],
    ['a 4-byte UTF-8 character stays', utf8('x😀'), 'x😀'],
    ['Latin-1 bytes are octal escapes', bytes('caf\xe9'), '"caf\\351"'],
    ['newline', bytes('a\nb'), '"a\\nb"'],
    ['tab, CR and the other C escapes', bytes('\x07\x08\t\n\x0b\x0c\r'), '"\\a\\b\\t\\n\\v\\f\\r"'],
    ['double quote', bytes('say "hi"'), '"say \\"hi\\""'],
    ['backslash', bytes('back\\slash'), '"back\\\\slash"'],
    ['escape sequences cannot reach the terminal', bytes('\x1b[31mred'), '"\\033[31mred"'],
    ['DEL', bytes('del\x7f'), '"del\\177"'],
    ['C1 control (U+009B CSI) as its two bytes', bytes('c1\xc2\x9b'), '"c1\\302\\233"'],
    ['line separator U+2028', utf8('a\u2028b'), '"a\\342\\200\\250b"'],
    ['bidi override U+202E', utf8('x\u202Egnp.exe'), '"x\\342\\200\\256gnp.exe"'],
    ['overlong encoding of "/"', bytes('\xc0\xaf'), '"\\300\\257"'],
    ['UTF-16 surrogate encoded in UTF-8', bytes('\xed\xa0\x80'), '"\\355\\240\\200"'],
    ['truncated sequence then ASCII', bytes('\xe2\x82x'), '"\\342\\202x"'],
    ['code point above U+10FFFF', bytes('\xf4\x90\x80\x80'), '"\\364\\220\\200\\200"'],
    ['mixed valid and invalid', bytes('\xc3\xa9\xe9'), '"é\\351"'],
    ['empty', bytes(''), ''],
  ])('%s', (_what, input, shown) => {
    expect(quoteName(input)).toBe(shown);
    expect(isPlainName(input)).toBe(!shown.startsWith('"'));
  });

  test('the quoted form reads back to the same bytes, for random byte strings', () => {
    const rnd = mulberry32(20260226);
    for (let i = 0; i < 5000; i++) {
      const n = Math.floor(rnd() * 12);
      // Bias towards the interesting bytes: controls, '"', '\', UTF-8 lead and continuation bytes.
      const pool = [0, 1, 9, 10, 0x1b, 0x22, 0x2f, 0x5c, 0x61, 0x7f, 0x80, 0x9b, 0xa9, 0xbf, 0xc2, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff];
      const b = new Uint8Array(n);
      for (let k = 0; k < n; k++) b[k] = rnd() < 0.5 ? pool[Math.floor(rnd() * pool.length)]! : Math.floor(rnd() * 256);
      const shown = quoteName(b);
      const back = isPlainName(b) ? utf8(shown) : unquoteName(shown);
      expect(back, shown).toEqual(b);
      // A display line never contains a raw control character.
      expect(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(shown), shown).toBe(false);
    }
  });

  test('display forms are distinct for distinct names (quoted forms start with a quote, plain names never contain one)', () => {
    const names = ['caf\xe9', 'caf\xe8', '"caf\\351"', 'caf\\351', 'café'].map((s, i) => (i === 4 ? utf8(s) : bytes(s)));
    expect(new Set(names.map(quoteName)).size).toBe(names.length);
  });
});

describe('quoteSpaced (text whose columns are separated by spaces)', () => {
  test.each([
    ['a plain name stays', bytes('hosts'), 'hosts'],
    ['a name that looks like a symlink is quoted', bytes('a -> b'), '"a -> b"'],
    ['a leading space', bytes(' lead'), '" lead"'],
    ['a trailing space', bytes('trail '), '"trail "'],
    ['UTF-8 with a space', utf8('ünï cødé'), '"ünï cødé"'],
    ['an already quoted name is not quoted twice', bytes('caf\xe9 x'), '"caf\\351 x"'],
  ])('%s', (_what, input, shown) => {
    expect(quoteSpaced(quoteName(input))).toBe(shown);
  });

  test('for random names: no space outside the quotes, and the bytes read back', () => {
    const rnd = mulberry32(20261126);
    const pool = [0x20, 0x20, 0x22, 0x2d, 0x3e, 0x5c, 0x61, 0x0a, 0xc3, 0xa9, 0xe9];
    for (let i = 0; i < 3000; i++) {
      const b = new Uint8Array(Math.floor(rnd() * 8));
      for (let k = 0; k < b.length; k++) b[k] = pool[Math.floor(rnd() * pool.length)]!;
      const shown = quoteSpaced(quoteName(b));
      const quoted = shown.startsWith('"');
      if (!quoted) expect(shown.includes(' '), shown).toBe(false);
      expect(quoted ? unquoteName(shown) : utf8(shown), shown).toEqual(b);
    }
  });
});

describe('unquoteName and parsePathArg', () => {
  test('malformed quoted forms are not quoted names', () => {
    for (const s of ['"', 'abc', '"abc', '"a"b"', '"\\"', '"\\8"', '"\\400"', '"\\q"']) expect(unquoteName(s), s).toBeUndefined();
  });

  test('a path argument is UTF-8, or quoted as a whole, or quoted per component', () => {
    expect(parsePathArg('/etc/café')).toEqual(utf8('/etc/café'));
    expect(parsePathArg('"/d\\351/caf\\351"')).toEqual(bytes('/d\xe9/caf\xe9'));
    expect(parsePathArg('/d/"caf\\351"')).toEqual(bytes('/d/caf\xe9'));
    expect(parsePathArg('/"a\\nb"/x')).toEqual(bytes('/a\nb/x'));
    // Not a valid quoted form: taken literally.
    expect(parsePathArg('/"x')).toEqual(bytes('/"x'));
  });

  test('a path argument given as bytes: parts that are not UTF-8 are names as they are, the others read as parsePathArg reads them', () => {
    expect(parsePathArgBytes(bytes('/d\xe9/caf\xe9'))).toEqual(bytes('/d\xe9/caf\xe9'));
    expect(parsePathArgBytes(bytes('/"q\\351"/caf\xe9/'))).toEqual(bytes('/q\xe9/caf\xe9/'));
    expect(parsePathArgBytes(bytes('/"a\xe9"'))).toEqual(bytes('/"a\xe9"'));
    // A leading U+FEFF is a name's, kept.
    expect(parsePathArgBytes(bytes('\xef\xbb\xbf/caf\xe9'))).toEqual(bytes('\xef\xbb\xbf/caf\xe9'));
    expect(parsePathArgBytes(utf8('\uFEFF/x'))).toEqual(utf8('\uFEFF/x'));
    // Valid UTF-8 throughout: exactly parsePathArg of its text.
    for (const s of ['/etc/café', '"/d\\351"', '/d/"caf\\351"', '/"x', '']) expect(parsePathArgBytes(utf8(s)), s).toEqual(parsePathArg(s));
  });
});

describe('nameFields', () => {
  test('adds the base64 bytes exactly when the display form is quoted', () => {
    expect(nameFields('path', utf8('/etc/café'))).toEqual({ path: '/etc/café' });
    expect(nameFields('path', bytes('/caf\xe9'))).toEqual({ path: '"/caf\\351"', pathBytes: Buffer.from('/caf\xe9', 'latin1').toString('base64') });
    expect(nameFields('name', bytes('a\nb'))).toEqual({ name: '"a\\nb"', nameBytes: Buffer.from('a\nb').toString('base64') });
  });
});

describe('plainAsciiText (the fast path for listings)', () => {
  test('is the text exactly for printable ASCII other than \'"\' and \'\\\'', () => {
    for (let b = 0; b < 256; b++) {
      const printable = b >= 0x20 && b <= 0x7e && b !== 0x22 && b !== 0x5c;
      expect(plainAsciiText(new Uint8Array([0x61, b, 0x62]))).toBe(printable ? `a${String.fromCharCode(b)}b` : undefined);
    }
  });

  test('long paths (past the short-name branch) and empty names', () => {
    const long = 'dir/'.repeat(40) + 'file.txt';
    expect(plainAsciiText(bytes(long))).toBe(long);
    expect(plainAsciiText(bytes(`${long}\x80`))).toBeUndefined();
    expect(plainAsciiText(new Uint8Array(0))).toBe('');
    // A view into a larger buffer reads only its own bytes.
    const big = bytes(`xx${long}yy`);
    expect(plainAsciiText(big.subarray(2, 2 + long.length))).toBe(long);
  });
});
