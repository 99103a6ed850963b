/** Every error code is stable, unique, and has an exit code by its category. */
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  ConflictError, CorruptImageError, ERROR_CODES, EXIT, InternalError, IoError, RefusedError, UnsupportedError,
  UsageError, VerificationError, exitCodeFor, formatMessage, wrapIoError,
} from '../src/errors.js';

describe('error codes', () => {
  test('each code belongs to exactly one category with a documented exit code', () => {
    const exitByCategory: Record<string, number> = {
      UsageError: 1, CorruptImageError: 2, UnsupportedError: 2, RefusedError: 2, ConflictError: 3, VerificationError: 4, IoError: 5, InternalError: 70,
    };
    for (const [code, category] of Object.entries(ERROR_CODES)) {
      expect(exitByCategory[category], code).toBeDefined();
    }
    expect(new Set(Object.keys(ERROR_CODES)).size).toBe(Object.keys(ERROR_CODES).length);
  });

  test('classes map to the exit codes of the README', () => {
    expect(new UsageError('x').exitCode).toBe(1);
    expect(new CorruptImageError('CORRUPT_IMAGE', {}).exitCode).toBe(2);
    expect(new UnsupportedError('UNSUPPORTED_FEATURE', {}).exitCode).toBe(2);
    expect(new RefusedError('DIRTY_FILESYSTEM', {}).exitCode).toBe(2);
    expect(new ConflictError({}).exitCode).toBe(3);
    expect(new VerificationError({}).exitCode).toBe(4);
    expect(new IoError({}).exitCode).toBe(5);
    expect(new InternalError('bug').exitCode).toBe(70);
    expect(exitCodeFor(new TypeError('x'))).toBe(EXIT.INTERNAL);
  });

  test('the category of each code agrees with the class that throws it', () => {
    expect(ERROR_CODES[new CorruptImageError('TRUNCATED', {}).code]).toBe('CorruptImageError');
    expect(ERROR_CODES[new UnsupportedError('ENCRYPTED', {}).code]).toBe('UnsupportedError');
    expect(ERROR_CODES[new RefusedError('OUTPUT_EXISTS', {}).code]).toBe('RefusedError');
    expect(ERROR_CODES[new ConflictError({}).code]).toBe('ConflictError');
    expect(ERROR_CODES[new VerificationError({}).code]).toBe('VerificationError');
    expect(ERROR_CODES[new IoError({}).code]).toBe('IoError');
  });

  test('messages are built from the data: file, structure, offset, expected and actual', () => {
    const msg = formatMessage('CORRUPT_IMAGE', { file: 'client.qcow2', structure: 'qcow2.header.magic', offset: 0, detail: 'not a qcow2 image', expected: '0x514649fb', actual: '0x00000000' });
    expect(msg).toBe('client.qcow2: qcow2.header.magic at byte 0: not a qcow2 image (expected 0x514649fb, got 0x00000000)');
    expect(formatMessage('CORRUPT_IMAGE', { file: 'f', detail: 'bad depth', actual: 9 })).toBe('f: bad depth (got 9)');
    const e = new CorruptImageError('TRUNCATED', { file: 'a', offset: 7 });
    expect(e.toJSON()).toEqual({ code: 'TRUNCATED', data: { file: 'a', offset: 7 }, message: e.message });
  });

  test('a guest filesystem structure is placed in the file, on the disk and in the filesystem, each only where it adds', () => {
    const s = 'ext4.inode[13].i_size';
    // ext4 on a whole raw disk: all three are the same byte.
    expect(formatMessage('CORRUPT_IMAGE', { structure: s, offset: 1080, deviceOffset: 1080, fsOffset: 1080, detail: 'x' })).toBe(`${s} at byte 1080: x`);
    // Partition 1 at 2 MiB of a raw disk.
    expect(formatMessage('CORRUPT_IMAGE', { structure: s, offset: 2098232, deviceOffset: 2098232, fsOffset: 1080, detail: 'x' })).toBe(`${s} at byte 2098232 (filesystem byte 1080): x`);
    // The same in a qcow2: no file offset.
    expect(formatMessage('CORRUPT_IMAGE', { structure: s, deviceOffset: 2098232, fsOffset: 1080, detail: 'x' })).toBe(`${s} at disk byte 2098232 (filesystem byte 1080): x`);
  });

  test('OS errors become IoError naming the file', () => {
    const e = wrapIoError(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }), '/out.qcow2', 'write');
    expect(e).toBeInstanceOf(IoError);
    expect(e.data).toMatchObject({ file: '/out.qcow2', errno: 'ENOSPC' });
  });

  test('IoError messages give the reason in words, without errno names, syscalls or the paths Node quotes', async () => {
    const { realpath, open } = await import('node:fs/promises');
    const missing = '/nonexistent-dir/.img.tmp-1234';
    for (const attempt of [() => realpath(missing), () => open(missing, 'r'), () => open('/', 'r+')]) {
      const err = await attempt().then(() => undefined, (e: unknown) => e);
      const e = wrapIoError(err, 'client.qcow2', 'open');
      expect(e.message).toMatch(/^client\.qcow2: cannot open: (no such file or directory|is a directory)$/);
      expect(e.message).not.toMatch(/E[A-Z]{3,}|realpath|tmp-1234|'/);
    }
    const odd = wrapIoError(Object.assign(new Error("EWEIRD: something odd happened, open '/x'"), { code: 'EWEIRD' }), 'f', 'open');
    expect(odd.message).toBe('f: cannot open: something odd happened');
    expect(odd.data).toMatchObject({ errno: 'EWEIRD' });
  });

  test('the README documents every code, on the row of its exit code', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const table = readme.slice(readme.indexOf('## Exit codes'));
    const exitByCategory: Record<string, number> = {
      UsageError: 1, CorruptImageError: 2, UnsupportedError: 2, RefusedError: 2, ConflictError: 3, VerificationError: 4, IoError: 5, InternalError: 70,
    };
    for (const [code, category] of Object.entries(ERROR_CODES)) {
      const row = table.split('\n').find((l) => l.includes(`\`${code}\``));
      expect(row, `README exit-code table lacks ${code}`).toBeDefined();
      expect(row!.startsWith(`| ${exitByCategory[category]} |`), `${code} is on the wrong row: ${row}`).toBe(true);
    }
  });
});
