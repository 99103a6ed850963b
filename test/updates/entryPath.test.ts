/**
 * Entry names (src/updates/entryPath.ts): normalised to absolute '/'-separated bytes;
 * '..' components, names over 255 bytes and NUL bytes refused with BAD_UPDATE naming the
 * entry; OCI whiteout names recognised (OCI image spec, layer.md "Whiteouts").
 */
import { describe, expect, it } from 'vitest';
import { classifyWhiteout, joinPath, normaliseEntryPath, showName, splitPath } from '../../src/updates/entryPath.js';
import { expectImgError } from '../helpers/expectImgError.js';

const b = (s: string | Buffer): Uint8Array => Uint8Array.from(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
const s = (x: Uint8Array): string => Buffer.from(x).toString('latin1');
const ctx = { file: 'layer.tar', offset: 1536 };

describe('normaliseEntryPath', () => {
  it.each([
    ['etc/passwd', '/etc/passwd'],
    ['./etc/passwd', '/etc/passwd'],
    ['/etc/passwd', '/etc/passwd'],
    ['etc//app/./conf/', '/etc/app/conf'],
    ['./', '/'],
    ['.', '/'],
    ['/', '/'],
    ['', '/'],
    ['...', '/...'],
    ['a/..b/c..', '/a/..b/c..'],
    [`x/${'n'.repeat(255)}`, `/x/${'n'.repeat(255)}`],
    ['\xff\xfe/\x80', '/\xff\xfe/\x80'],
  ])('%j is %j', (raw, want) => {
    expect(s(normaliseEntryPath(b(raw), ctx))).toBe(want);
  });

  it.each([
    ['..', "'..'"],
    ['../etc', "'..'"],
    ['etc/../..', "'..'"],
    ['/a/b/../c', "'..'"],
    [`etc/${'n'.repeat(256)}`, '256 bytes'],
    ['etc/a\0b', 'NUL'],
  ])('refuses %j with BAD_UPDATE naming the entry, the file and the offset', async (raw, why) => {
    const e = await expectImgError(() => normaliseEntryPath(b(raw), ctx), 'BAD_UPDATE', { file: 'layer.tar', offset: 1536, entry: showName(b(raw)) });
    expect(e.message).toContain(why);
    expect(e.message).toContain('layer.tar');
  });
});

describe('classifyWhiteout', () => {
  it.each([
    ['/etc/.wh.passwd', 'whiteout', '/etc/passwd'],
    ['/.wh.opt', 'whiteout', '/opt'],
    ['/etc/.wh..wh..opq', 'opaque', '/etc'],
    ['/.wh..wh..opq', 'opaque', '/'],
    ['/etc/.wh..hidden', 'whiteout', '/etc/.hidden'],
  ])('%j is a %s of %j', (path, kind, target) => {
    const w = classifyWhiteout(b(path), ctx);
    expect(w && { kind: w.kind, path: s(w.path) }).toEqual({ kind, path: target });
  });
  it.each(['/etc/passwd', '/etc/wh.x', '/etc/.whx', '/'])('%j is no whiteout', (path) => {
    expect(classifyWhiteout(b(path), ctx)).toBeUndefined();
  });
  it.each(['/etc/.wh.', '/etc/.wh..', '/etc/.wh...', '/etc/.wh..wh.plnk', '/etc/.wh..wh.aufs'])('refuses %j', async (path) => {
    await expectImgError(() => classifyWhiteout(b(path), ctx), 'BAD_UPDATE', { entry: path });
  });
});

describe('joinPath, splitPath, showName', () => {
  it('joins under the root and below it, and splits back', () => {
    expect(s(joinPath(b('/'), b('etc')))).toBe('/etc');
    expect(s(joinPath(b('/etc'), b('x')))).toBe('/etc/x');
    expect([splitPath(b('/etc/x'))].map((p) => [s(p.parent), s(p.name)])).toEqual([['/etc', 'x']]);
    expect([splitPath(b('/etc'))].map((p) => [s(p.parent), s(p.name)])).toEqual([['/', 'etc']]);
  });
  it('shows UTF-8 as itself and other bytes as \\x escapes', () => {
    expect(showName(b(Buffer.from('/é/ü', 'utf8')))).toBe('/é/ü');
    expect(showName(b('/n\xffx\n\\'))).toBe('/n\\xffx\\x0a\\x5c');
  });
});
