/**
 * Recovering an argument's bytes from /proc/self/cmdline (proc(5): each argument ended by a
 * NUL) when Node's UTF-8 decoding of argv replaced some with U+FFFD: found by position at
 * the end of the command line, and only when that is certain.
 */
import { describe, expect, test } from 'vitest';
import { argBytes } from '../../src/ui/argBytes.js';

const latin1 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
/** A command line as the kernel keeps it: each argument's bytes (latin1 here: one char per byte) and a NUL. */
const cmdline = (...args: string[]): Uint8Array => latin1(args.map((a) => `${a}\0`).join(''));
/** argv as Node makes it: the binary, the script's absolute path, then the arguments decoded as UTF-8. */
const argv = (...args: string[]): string[] => ['/usr/bin/node', '/opt/imgdedup/dist/cli.js', ...args.map((a) => Buffer.from(a, 'latin1').toString('utf8'))];

describe('argBytes', () => {
  test('finds the bytes of the argument Node decoded lossily', () => {
    const v = argv('ls', 'img', '/caf\xe9');
    expect(v[4]).toBe('/caf\uFFFD');
    expect(argBytes(v, cmdline('node', 'dist/cli.js', 'ls', 'img', '/caf\xe9'), '/caf\uFFFD')).toEqual(latin1('/caf\xe9'));
  });

  test('node flags before the script (in the command line, not in argv) do not shift it', () => {
    const v = argv('ls', '/caf\xe9');
    expect(argBytes(v, cmdline('node', '--no-warnings', '--max-old-space-size=100', 'cli.js', 'ls', '/caf\xe9'), '/caf\uFFFD')).toEqual(latin1('/caf\xe9'));
  });

  test('empty arguments keep their place', () => {
    const v = argv('ls', '', '/caf\xe9', '');
    expect(argBytes(v, cmdline('node', 'cli.js', 'ls', '', '/caf\xe9', ''), '/caf\uFFFD')).toEqual(latin1('/caf\xe9'));
  });

  test('several arguments that decode to the value: their bytes if they agree, else nothing', () => {
    expect(argBytes(argv('x\xe9', 'x\xe9'), cmdline('node', 'cli.js', 'x\xe9', 'x\xe9'), 'x\uFFFD')).toEqual(latin1('x\xe9'));
    expect(argBytes(argv('x\xe9', 'x\xe8'), cmdline('node', 'cli.js', 'x\xe9', 'x\xe8'), 'x\uFFFD')).toBeUndefined();
  });

  test.each([
    ['a command line that was overwritten (process.title)', cmdline('imgdedup worker'), argv('ls', '/caf\xe9')],
    ['one whose arguments decode to other text', cmdline('node', 'cli.js', 'ls', '/caf\xe8', 'more'), argv('ls', '/caf\xe9', 'other')],
    ['one cut short (fewer entries than arguments)', cmdline('ls', '/caf\xe9'), argv('ls', '/caf\xe9')],
    ['one not ended by a NUL', latin1('node\0cli.js\0ls\0/caf\xe9'), argv('ls', '/caf\xe9')],
    ['an empty one', new Uint8Array(0), argv('ls', '/caf\xe9')],
    ['no argument decodes to the value', cmdline('node', 'cli.js', 'ls', '/x'), argv('ls', '/x')],
  ])('nothing from %s', (_what, line, v) => {
    expect(argBytes(v, line, '/caf\uFFFD')).toBeUndefined();
  });
});
