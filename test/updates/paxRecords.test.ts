/**
 * PAX extended-header records read as bytes (src/updates/paxRecords.ts; POSIX.1-2008 pax
 * "Extended Header Records"): records, global/local merging, times and numbers, and
 * xattrs from SCHILY.xattr (raw) and LIBARCHIVE.xattr (%-escaped name, base64 value).
 */
import { describe, expect, it } from 'vitest';
import { decodePaxRecords, mergePax, paxInteger, paxTime, paxXattrs } from '../../src/updates/paxRecords.js';
import { expectImgError } from '../helpers/expectImgError.js';

const ctx = { file: 'l.tar', offset: 512 };
const entry = Uint8Array.from(Buffer.from('/x'));

function record(key: string, value: Buffer | string): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length > len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

describe('decodePaxRecords', () => {
  it('keeps values as bytes (binary, non-UTF-8, with "=" and newlines inside)', () => {
    const bin = Buffer.from([0, 0xff, 0x3d, 0x0a, 0x80]);
    const r = decodePaxRecords(Buffer.concat([record('path', Buffer.from([0x61, 0xff])), record('SCHILY.xattr.user.b', bin), Buffer.alloc(30)]), ctx);
    expect([...r].map(([k, v]) => [k, Buffer.from(v).toString('hex')])).toEqual([['path', '61ff'], ['SCHILY.xattr.user.b', bin.toString('hex')]]);
  });
  it.each([
    ['a length that runs past the end', '99 path=x\n'],
    ['no newline at the end of the record', '10 path=xy'],
    ['no space after the length', '10path=xyz\n'],
    ['no keyword', '8 =value\n'],
    ['no length', ' path=x\n'],
  ])('refuses %s', async (_what, text) => {
    await expectImgError(() => decodePaxRecords(Buffer.from(text), ctx), 'BAD_UPDATE', { file: 'l.tar', offset: 512 });
  });
});

describe('values', () => {
  const r = (o: Record<string, string>): Map<string, Uint8Array> => new Map(Object.entries(o).map(([k, v]) => [k, Uint8Array.from(Buffer.from(v, 'latin1'))]));
  it.each([
    ['1700000000', { sec: 1_700_000_000, nsec: 0 }],
    ['1700000000.5', { sec: 1_700_000_000, nsec: 500_000_000 }],
    ['1700000000.123456789999', { sec: 1_700_000_000, nsec: 123_456_789 }],
    ['-1.25', { sec: -2, nsec: 750_000_000 }],
    ['-3', { sec: -3, nsec: 0 }],
    ['0.', { sec: 0, nsec: 0 }],
  ])('time %s', (text, want) => {
    expect(paxTime(r({ mtime: text }), 'mtime', ctx, entry)).toEqual(want);
  });
  it.each(['', 'x', '1e9', '1.2.3', '--1'])('refuses time %j', async (text) => {
    await expectImgError(() => paxTime(r({ mtime: text }), 'mtime', ctx, entry), 'BAD_UPDATE', { entry: '/x' });
  });
  it('integers, and refuses what is not one', async () => {
    expect(paxInteger(r({ uid: '4294967295' }), 'uid', ctx, entry)).toBe(4_294_967_295);
    expect(paxInteger(r({}), 'uid', ctx, entry)).toBeUndefined();
    await expectImgError(() => paxInteger(r({ uid: '-1' }), 'uid', ctx, entry), 'BAD_UPDATE');
    await expectImgError(() => paxInteger(r({ uid: '99999999999999999999' }), 'uid', ctx, entry), 'BAD_UPDATE');
  });
  it('local records override global ones; an empty value cancels a keyword but is an empty xattr', () => {
    const m = mergePax(r({ uid: '1', gid: '2', 'SCHILY.xattr.user.e': 'g' }), r({ uid: '', gid: '3', 'SCHILY.xattr.user.e': '' }));
    expect([...m].map(([k, v]) => [k, Buffer.from(v).toString()])).toEqual([['gid', '3'], ['SCHILY.xattr.user.e', '']]);
  });
  it('xattrs from both spellings, one per name, SCHILY winning', () => {
    const x = paxXattrs(r({ 'LIBARCHIVE.xattr.user.a%20b': Buffer.from('lib').toString('base64'), 'SCHILY.xattr.user.a b': 'schily', 'LIBARCHIVE.xattr.user.only': Buffer.from([1, 2]).toString('base64') }), ctx, entry);
    expect(x.map((a) => [Buffer.from(a.name).toString(), Buffer.from(a.value).toString('hex')])).toEqual([['user.a b', Buffer.from('schily').toString('hex')], ['user.only', '0102']]);
  });
  it('refuses a LIBARCHIVE.xattr value that is not base64, and names over 255 bytes', async () => {
    await expectImgError(() => paxXattrs(r({ 'LIBARCHIVE.xattr.user.a': '!!' }), ctx, entry), 'BAD_UPDATE');
    await expectImgError(() => paxXattrs(r({ [`SCHILY.xattr.user.${'a'.repeat(251)}`]: 'v' }), ctx, entry), 'BAD_UPDATE');
    expect(paxXattrs(r({ [`SCHILY.xattr.user.${'a'.repeat(250)}`]: 'v' }), ctx, entry)).toHaveLength(1);
  });
});

describe('what GNU tar refuses is refused (found by the differential fuzz check)', () => {
  it('a NUL inside a keyword (it would silently drop an xattr)', async () => {
    await expectImgError(() => decodePaxRecords(Buffer.from('27 SCHILY.xa\0tr.user.dir=d\n'), ctx), 'BAD_UPDATE');
  });
  it('records after NUL padding', async () => {
    await expectImgError(() => decodePaxRecords(Buffer.concat([record('uid', '1'), Buffer.from([0]), record('gid', '2')]), ctx), 'BAD_UPDATE');
    expect(decodePaxRecords(Buffer.concat([record('uid', '1'), Buffer.alloc(5)]), ctx).size).toBe(1);
  });
});
