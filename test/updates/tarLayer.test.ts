/**
 * Tar layers (src/updates/tarLayer.ts): archives made by GNU tar from a host tree read back
 * as what the host reports about that tree (stat/readlink/listxattr, hostTree.ts) in
 * plain, gzip and zstd form; crafted archives (tar-stream's packer, and raw PAX records)
 * for what GNU tar does not write: names that climb out, 256-byte names, binary and
 * libarchive xattrs, PAX times and ids, global headers, whiteouts; corrupt and
 * truncated archives end in BAD_UPDATE with the file, the entry and the byte offset.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { seededBytes } from '../../fixtures/prng.mjs';
import { useTempDir } from '../helpers/tmp.js';
import { sh } from '../helpers/run.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { tarLayer } from '../../src/updates/tarLayer.js';
import type { UpdateEntry } from '../../src/updates/UpdateEntry.js';
import { HAS_GETFATTR, HAS_SETFATTR, IS_ROOT, NON_UTF8, entryFacts, hostFacts, makeHostTree, sha256, type EntryFact, type HostFact } from './hostTree.js';

const tmp = useTempDir('imgdedup-tar-');
const XATTRS = HAS_SETFATTR && HAS_GETFATTR;
let root = '';
let facts: Map<string, HostFact>;

beforeAll(() => {
  root = join(tmp(), 'tree');
  mkdirSync(root);
  makeHostTree(root, { xattrs: XATTRS });
  facts = hostFacts(root);
});

/** GNU tar of the host tree into `name`, with extra options (format, compression). */
function gnuTar(name: string, ...options: string[]): string {
  const out = join(tmp(), name);
  sh('tar', [...options, '--sort=name', '--numeric-owner', '-cf', out, '-C', root, '.']);
  return out;
}

/** Checks a GNU tar layer of the host tree against the host's facts. */
async function expectHostTree(file: string, options: { nsec: boolean; xattrs: boolean }): Promise<void> {
  const got = await entryFacts(tarLayer(file));
  expect(got[0]).toEqual(['/', expect.objectContaining({ kind: 'dir' })]);
  const byPath = new Map(got.slice(1));
  expect([...byPath.keys()].sort()).toEqual([...facts.keys()].sort());
  const written = new Set<string>();
  for (const [path, e] of got.slice(1)) {
    const f = facts.get(path)!;
    if (e.kind === 'hardlink') {
      // GNU tar stores the first name of an inode as the file and links the later ones to it.
      expect(written.has(e.target!), `${path} links to ${e.target}, written before`).toBe(true);
      expect(facts.get(e.target!)?.ino, path).toBe(f.ino);
      continue;
    }
    written.add(path);
    const mtimeNs = options.nsec ? f.mtimeNs : (BigInt(f.mtimeNs) / 1_000_000_000n * 1_000_000_000n).toString();
    const base = { kind: f.type, mode: f.mode, uid: f.uid, gid: f.gid, mtimeNs, xattrs: options.xattrs ? f.xattrs : {} };
    let want: EntryFact = base;
    if (f.type === 'file') want = { ...base, size: f.size, sha256: sha256(readFileSync(Buffer.from(root + path, 'latin1'))) };
    if (f.type === 'symlink') want = { ...base, target: f.target! };
    if (f.type === 'chardev' || f.type === 'blockdev') want = { ...base, major: f.major, minor: f.minor };
    expect(e, path).toEqual(want);
  }
  expect(got.filter(([, e]) => e.kind === 'hardlink').length).toBe(2);
}

describe('tar layers written by GNU tar, read back as the host has the tree', () => {
  it('pax format with xattrs: nanosecond times, binary xattr values, non-UTF-8 and long names', async () => {
    await expectHostTree(gnuTar('pax.tar', '--format=pax', '--xattrs', '--xattrs-include=*'), { nsec: true, xattrs: XATTRS });
  });
  it('gzip-compressed (.tar.gz), told by its magic bytes', async () => {
    await expectHostTree(gnuTar('pax.tar.gz', '--format=pax', '--xattrs', '--xattrs-include=*', '-z'), { nsec: true, xattrs: XATTRS });
  });
  it('zstd-compressed (.tar.zst), told by its magic bytes', async () => {
    await expectHostTree(gnuTar('pax.tar.zst', '--format=pax', '--xattrs', '--xattrs-include=*', '-I', 'zstd'), { nsec: true, xattrs: XATTRS });
  });
  it('GNU format: long names through ././@LongLink, times in whole seconds, no xattrs', async () => {
    await expectHostTree(gnuTar('gnu.tar', '--format=gnu'), { nsec: false, xattrs: false });
  });
  it('a layer can be read twice, and content need not be read (it is skipped)', async () => {
    const layer = tarLayer(gnuTar('twice.tar.gz', '--format=pax', '-z'));
    const kinds: string[] = [];
    for await (const e of layer.entries()) kinds.push(e.kind);
    const full = await entryFacts(layer);
    expect(full.map(([, e]) => e.kind)).toEqual(kinds);
    // Read one chunk of the big file, then go on: the rest is skipped, later entries are intact.
    const again: [string, string][] = [];
    for await (const e of layer.entries()) {
      if (e.kind === 'file' && e.size > 100_000) for await (const _c of e.open()) break;
      again.push([Buffer.from(e.path).toString('latin1'), e.kind]);
    }
    expect(again).toEqual(full.map(([p, e]) => [p, e.kind]));
    // Stopping after a few entries closes the archive; a new pass starts from the beginning.
    let taken = 0;
    for await (const _e of layer.entries()) if (++taken === 3) break;
    expect((await entryFacts(layer)).map(([p]) => p)).toEqual(full.map(([p]) => p));
    if (!IS_ROOT) console.log('tarLayer.test: not root, so no device nodes or other owners were archived');
  });
});

// ---------------------------------------------------------------------------------------
// Crafted archives

type Member = { name: string; type?: 'file' | 'directory' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'fifo'; linkname?: string; data?: string; pax?: Record<string, string>; devmajor?: number; devminor?: number; mode?: number; uid?: number; gid?: number; mtime?: Date } | { rawPax: Buffer; global?: boolean };

/** One PAX record, "LEN key=value\n", value as bytes. */
function paxRecord(key: string, value: Buffer | string): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length > len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A tar made by tar-stream's packer; `rawPax` members are extended headers with bytes of our own (binary values). */
async function craft(members: Member[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => p.on('end', () => resolve()));
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if ('rawPax' in m) {
        // The packer writes no extended header of ours: a file it is, retyped below.
        p.entry({ name: m.global ? 'RAWPAX-g' : 'RAWPAX-x', mtime: new Date(0) }, m.rawPax, cb);
      } else {
        const { data, ...header } = m;
        p.entry({ mode: 0o644, mtime: new Date(1_700_000_000_000), ...header }, data ?? '', cb);
      }
    });
  }
  p.finalize();
  await done;
  const tar = Buffer.concat(chunks);
  // Walk the headers (ustar: 512-byte header, data in 512-byte blocks) to retype the RAWPAX ones.
  for (let off = 0; off + 512 <= tar.length && tar[off] !== 0; ) {
    const name = tar.toString('latin1', off, off + 100).replace(/\0.*$/s, '');
    const size = parseInt(tar.toString('latin1', off + 124, off + 136).replace(/\0.*$/s, '').trim() || '0', 8);
    if (name.startsWith('RAWPAX-')) retype(tar, off, name.slice(7));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return tar;
}

function write(name: string, bytes: Buffer): string {
  const f = join(tmp(), name);
  writeFileSync(f, bytes);
  return f;
}

async function all(file: string): Promise<UpdateEntry[]> {
  const out: UpdateEntry[] = [];
  for await (const e of tarLayer(file).entries()) {
    if (e.kind === 'file') for await (const _c of e.open());
    out.push(e);
  }
  return out;
}

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

describe('crafted tar layers', () => {
  it('normalises names ("./a//b/", "/abs") and reads whiteouts, opaque markers, devices and fifos', async () => {
    const f = write('kinds.tar', await craft([
      { name: './', type: 'directory', mode: 0o755 },
      { name: './etc//app/', type: 'directory', mode: 0o750, uid: 7, gid: 8 },
      { name: '/etc/app/./conf', data: 'abc', mode: 0o4640 },
      { name: 'etc/.wh.old.conf' },
      { name: 'etc/app/.wh..wh..opq' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9 },
      { name: 'run/fifo', type: 'fifo' },
      { name: 'etc/conf-link', type: 'link', linkname: './etc/app/conf' },
      { name: 'etc/sym', type: 'symlink', linkname: '../x/../y' },
    ]));
    const got = await all(f);
    expect(got.map((e) => [e.kind, text(e.path)])).toEqual([
      ['dir', '/'],
      ['dir', '/etc/app'],
      ['file', '/etc/app/conf'],
      ['whiteout', '/etc/old.conf'],
      ['opaque', '/etc/app'],
      ['chardev', '/dev/null'],
      ['blockdev', '/dev/loop9'],
      ['fifo', '/run/fifo'],
      ['hardlink', '/etc/conf-link'],
      ['symlink', '/etc/sym'],
    ]);
    expect(got[1]).toMatchObject({ meta: { mode: 0o750, uid: 7, gid: 8, mtime: { sec: 1_700_000_000, nsec: 0 }, xattrs: [] } });
    expect(got[2]).toMatchObject({ size: 3, meta: { mode: 0o4640 } });
    expect(got[5]).toMatchObject({ major: 1, minor: 3 });
    expect(got[6]).toMatchObject({ major: 7, minor: 9 });
    expect(text((got[8] as { target: Uint8Array }).target)).toBe('/etc/app/conf');
    // A symlink's target is kept as written: it is resolved inside the filesystem, later.
    expect(text((got[9] as { target: Uint8Array }).target)).toBe('../x/../y');
  });

  it("gives a symlink mode 0777 whatever its header says, as Linux (and tar extracting there) makes every symlink (found by an outside tester)", async () => {
    const f = write('symmode.tar', await craft([
      { name: 'srv/docs', type: 'symlink', linkname: '/etc', mode: 0o644 },
      { name: 'srv/sticky', type: 'symlink', linkname: 'x', mode: 0o4755 },
      { name: 'srv/plain', data: 'p', mode: 0o644 },
    ]));
    const got = await all(f);
    expect(got.map((e) => [text(e.path), 'meta' in e ? e.meta.mode : undefined])).toEqual([
      ['/srv/docs', 0o777],
      ['/srv/sticky', 0o777],
      ['/srv/plain', 0o644],
    ]);
  });

  it('reads PAX records as bytes: binary SCHILY.xattr values, LIBARCHIVE.xattr (%-escaped name, base64), times to the nanosecond, large ids, non-UTF-8 paths', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const f = write('pax.tar', await craft([
      {
        rawPax: Buffer.concat([
          paxRecord('SCHILY.xattr.security.capability', cap),
          paxRecord('LIBARCHIVE.xattr.user.a%3Db%25', Buffer.from([0, 1, 0xfe, 0xff]).toString('base64')),
          paxRecord('SCHILY.xattr.user.empty', ''),
          paxRecord('mtime', '1700000000.123456789'),
          paxRecord('atime', '-1.25'),
          paxRecord('uid', '3000000000'),
          paxRecord('gid', '4000000000'),
          paxRecord('path', Buffer.concat([Buffer.from('usr/bin/'), NON_UTF8])),
          paxRecord('comment', Buffer.from([0xff, 0xfe])),
        ]),
      },
      { name: 'placeholder', data: 'binary' },
    ]));
    const [e] = await all(f);
    expect(e!.kind).toBe('file');
    const meta = (e as Extract<UpdateEntry, { kind: 'file' }>).meta;
    expect(text(e!.path)).toBe(`/usr/bin/${NON_UTF8.toString('latin1')}`);
    expect({ uid: meta.uid, gid: meta.gid, mtime: meta.mtime, atime: meta.atime }).toEqual({ uid: 3_000_000_000, gid: 4_000_000_000, mtime: { sec: 1_700_000_000, nsec: 123_456_789 }, atime: { sec: -2, nsec: 750_000_000 } });
    expect(meta.xattrs.map((x) => [text(x.name), Buffer.from(x.value).toString('hex')])).toEqual([
      ['security.capability', cap.toString('hex')],
      ['user.a=b%', '0001feff'],
      ['user.empty', ''],
    ]);
  });

  it('applies a PAX global header to every later entry, under each entry\'s own records', async () => {
    const f = write('global.tar', await craft([
      { rawPax: Buffer.concat([paxRecord('uid', '1001'), paxRecord('mtime', '1600000000.5')]), global: true },
      { name: 'a', data: 'a' },
      { rawPax: paxRecord('uid', '1002') },
      { name: 'b', data: 'b' },
      { name: 'c', data: 'c' },
    ]));
    const got = (await all(f)).map((e) => [text(e.path), (e as { meta: { uid: number; mtime: { sec: number; nsec: number } } }).meta]);
    expect(got.map(([p, m]) => [p, (m as { uid: number }).uid, (m as { mtime: object }).mtime])).toEqual([
      ['/a', 1001, { sec: 1_600_000_000, nsec: 500_000_000 }],
      ['/b', 1002, { sec: 1_600_000_000, nsec: 500_000_000 }],
      ['/c', 1001, { sec: 1_600_000_000, nsec: 500_000_000 }],
    ]);
  });

  it('ACLs stored as text (tar --acls: SCHILY.acl.access) are not applied, and said so once per layer', async () => {
    const f = write('acls.tar', await craft([
      { rawPax: paxRecord('SCHILY.acl.access', 'user::rw-,user:1000:r--,group::r--,mask::r--,other::r--') },
      { name: 'a', data: 'a' },
      { rawPax: paxRecord('SCHILY.acl.default', 'user::rwx,group::r-x,other::r-x') },
      { name: 'd', type: 'directory' },
      { name: 'b', data: 'b' },
    ]));
    const warnings: string[] = [];
    const layer = tarLayer(f, (m) => warnings.push(m));
    const names: string[] = [];
    for await (const e of layer.entries()) names.push(text(e.path));
    expect(names).toEqual(['/a', '/d', '/b']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/\/a .*ACLs stored as text \(SCHILY\.acl\.access.*are not applied/);
  });

  it('accepts a 255-byte name component', async () => {
    const name = `etc/${'n'.repeat(255)}`;
    const [e] = await all(write('255.tar', await craft([{ name, data: 'x' }])));
    expect(text(e!.path)).toBe(`/${name}`);
  });

  const refused: [string, Member[], string, string][] = [
    ['a ".." component', [{ name: '../etc/passwd', data: 'x' }], '../etc/passwd', "'..'"],
    ['an absolute path that climbs out', [{ name: '/usr/../../etc/shadow', data: 'x' }], '/usr/../../etc/shadow', "'..'"],
    ['a trailing ".."', [{ name: 'usr/lib/..', type: 'directory' }], 'usr/lib/..', "'..'"],
    ['a 256-byte component', [{ name: `etc/${'n'.repeat(256)}`, data: 'x' }], `etc/${'n'.repeat(256)}`, '256 bytes'],
    ['a hard link to a ".." path', [{ name: 'x', type: 'link', linkname: '../outside' }], '../outside', "'..'"],
    ['a whiteout of ".."', [{ name: 'etc/.wh...' }], '/etc/.wh...', 'must name a file'],
    ['GNU sparse PAX records', [{ rawPax: paxRecord('GNU.sparse.major', '1') }, { name: 'sparse', data: 'x' }], 'sparse', 'sparse'],
    ['an over-long symlink target', [{ name: 'l', type: 'symlink', linkname: 'x'.repeat(4096) }], '/l', '4096 bytes'],
    ['a malformed PAX record', [{ rawPax: Buffer.from('99 path=x\n') }, { name: 'a', data: 'x' }], 'PAX header', 'malformed PAX record'],
    ['an xattr with an empty name', [{ rawPax: paxRecord('SCHILY.xattr.', 'v') }, { name: 'a', data: 'x' }], '/a', 'xattr name of 0 bytes'],
  ];
  it.each(refused)('refuses %s with BAD_UPDATE naming the file, the entry and its offset', async (_what, members, entry, why) => {
    // A good entry first, so the offset of the bad one is not 0.
    const bytes = await craft([{ name: 'ok', data: 'fine' }, ...members]);
    const f = write(`bad-${sha256(bytes).slice(0, 8)}.tar`, bytes);
    const e = await expectImgError(() => all(f), 'BAD_UPDATE', { file: f, entry });
    expect(e.message).toContain(why);
    expect(e.data.offset).toBeGreaterThanOrEqual(1024);
    expect(e.data.offset! % 512).toBe(0);
    expect(e.exitCode).toBe(2);
  });

  it('refuses unsupported entry types (GNU volume label) and a directory with data', async () => {
    const bytes = await craft([{ name: 'ok', data: 'fine' }, { name: 'label', data: '' }]);
    retype(bytes, 1024, 'V');
    await expectImgError(() => all(write('volume.tar', bytes)), 'BAD_UPDATE', { entry: '/label', offset: 1024 });
    const dir = await craft([{ name: 'd', data: 'x'.repeat(600) }]);
    retype(dir, 0, '5');
    const e = await expectImgError(() => all(write('dirdata.tar', dir)), 'BAD_UPDATE', { entry: '/d', offset: 0 });
    expect(e.message).toContain('directory entry with data');
  });
});

/** Sets a header's typeflag (byte 156) and fixes its checksum (ustar: sum of the header with the field as spaces). */
function retype(tar: Buffer, headerOffset: number, flag: string): void {
  tar[headerOffset + 156] = flag.charCodeAt(0);
  fixChecksum(tar, headerOffset);
}

function fixChecksum(tar: Buffer, headerOffset: number): void {
  const h = tar.subarray(headerOffset, headerOffset + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

/** Writes `value` into the 12-byte mtime field (byte 136) of a header in GNU base-256 (two's complement when negative). */
function setBase256Mtime(tar: Buffer, headerOffset: number, value: bigint): void {
  let v = value < 0n ? (1n << 96n) + value : value | (1n << 95n);
  for (let i = 11; i >= 0; i--) {
    tar[headerOffset + 136 + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  fixChecksum(tar, headerOffset);
}

describe('older tar forms, read as GNU tar extracts them (the oracle: GNU tar -x into a host directory)', () => {
  it('GNU base-256 times before 1970 (Python tarfile writes them), to the second', async () => {
    const times = [-1n, -100n, -2147483648n, 5n];
    const tar = await craft(times.map((_, i) => ({ name: `t${i}`, data: 'x' })));
    times.forEach((t, i) => setBase256Mtime(tar, i * 1024, t));
    const file = write('b256.tar', tar);
    const host = join(tmp(), 'b256-x');
    mkdirSync(host);
    sh('tar', ['-xf', file, '-C', host]);
    const got = new Map((await all(file)).map((e) => [text(e.path), e.kind !== 'whiteout' && e.kind !== 'opaque' && e.kind !== 'hardlink' ? e.meta.mtime.sec : undefined]));
    for (let i = 0; i < times.length; i++) {
      const want = Number(sh('stat', ['-c', '%Y', join(host, `t${i}`)]).trim());
      expect(got.get(`/t${i}`), `t${i}`).toBe(want);
    }
  });

  it('an old-style directory (typeflag NUL, name ending in "/") is a directory, and what lies below it goes in it', async () => {
    const tar = await craft([
      { name: 'olddir/', data: '', mode: 0o750 },
      { name: 'olddir/f', data: 'in it' },
    ]);
    retype(tar, 0, '\0');
    const file = write('aregdir.tar', tar);
    const host = join(tmp(), 'aregdir-x');
    mkdirSync(host);
    sh('tar', ['-xf', file, '-C', host]);
    expect(sh('stat', ['-c', '%F %a', join(host, 'olddir')]).trim()).toBe('directory 750');
    const entries = await all(file);
    expect(entries.map((e) => [text(e.path), e.kind, e.kind === 'dir' ? e.meta.mode.toString(8) : undefined])).toEqual([
      ['/olddir', 'dir', '750'],
      ['/olddir/f', 'file', undefined],
    ]);
  });
});

describe('corrupt and truncated layers end in BAD_UPDATE, never a crash or a wrong answer', () => {
  let good: Buffer;
  beforeAll(async () => {
    good = await craft([
      { name: 'a', data: 'A'.repeat(1000) },
      { name: 'b', data: 'B'.repeat(3000) },
      { name: 'c', data: 'C' },
    ]);
  });

  it('a header with a bad checksum, at its offset', async () => {
    const bad = Buffer.from(good);
    bad[1536 + 10]! ^= 0x40; // the name of the second header (the first takes 512 + 1024)
    const e = await expectImgError(() => all(write('cksum.tar', bad)), 'BAD_UPDATE', { offset: 1536 });
    expect(e.message).toContain('not a readable tar archive');
  });

  // 5120 is the end of the second entry: only the missing end-of-archive marker tells.
  it.each([100, 600, 1536 + 300, 1536 + 512 + 100, 1536 + 512 + 3072, 6144, 6144 + 100])('truncated at byte %i', async (at) => {
    await expectImgError(() => all(write(`trunc-${at}.tar`, good.subarray(0, at))), 'BAD_UPDATE');
  });

  it('a few bytes of text are not a tar archive, rather than a truncated one (found by a new user)', async () => {
    const e = await expectImgError(() => all(write('junk.tar', Buffer.from('notatar\n'))), 'BAD_UPDATE');
    expect(e.message).toMatch(/not a tar archive \(8 bytes/);
  });

  it('truncated inside a file: its content stream fails, naming the entry', async () => {
    const f = write('trunc-file.tar', good.subarray(0, 1536 + 512 + 1000));
    const seen: string[] = [];
    const e = await expectImgError(async () => {
      for await (const x of tarLayer(f).entries()) {
        seen.push(text(x.path));
        if (x.kind === 'file') for await (const _c of x.open());
      }
    }, 'BAD_UPDATE', { file: f });
    expect(seen).toEqual(['/a', '/b']);
    expect(e.message).toMatch(/truncated|ends inside/);
  });

  it('truncated gzip and zstd layers, and garbage after a gzip header', async () => {
    const gz = gzipSync(good);
    await expectImgError(() => all(write('t.tar.gz', gz.subarray(0, gz.length - 20))), 'BAD_UPDATE');
    const garbage = Buffer.concat([gz.subarray(0, 10), Buffer.alloc(200, 0x55)]);
    await expectImgError(() => all(write('g.tar.gz', garbage)), 'BAD_UPDATE', { offset: expect.any(Number) });
    const raw = write('z.tar', good);
    sh('zstd', ['-q', '-f', raw, '-o', `${raw}.zst`]);
    const zst = readFileSync(`${raw}.zst`);
    await expectImgError(() => all(write('t.tar.zst', zst.subarray(0, zst.length - 9))), 'BAD_UPDATE');
  });

  it('a zstd frame that asks for a window over 128 MiB (zstd -d refuses it too)', async () => {
    const raw = write('w.tar', good);
    // --long=28 and input from a pipe (size unknown): the frame declares a 256 MiB window.
    sh('sh', ['-c', `cat '${raw}' | zstd -q --long=28 -c > '${raw}.zst'`]);
    const e = await expectImgError(() => all(`${raw}.zst`), 'BAD_UPDATE', { offset: 0 });
    expect(e.message).toContain('window');
  });

  it('garbage, an empty file, and xz/bzip2 layers', async () => {
    await expectImgError(() => all(write('garbage.tar', Buffer.alloc(2048, 0x41))), 'BAD_UPDATE', { offset: 0 });
    await expectImgError(() => all(write('empty.tar', Buffer.alloc(0))), 'BAD_UPDATE', { offset: 0 });
    const e = await expectImgError(() => all(write('x.tar.xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0, 0, 0]))), 'BAD_UPDATE');
    expect(e.message).toContain('xz');
    await expectImgError(() => all(write('x.tar.bz2', Buffer.from('BZh91AY&SY'))), 'BAD_UPDATE');
  });
});

describe('memory stays bounded whatever the layer holds', () => {
  it.each(['gzip', 'zstd'])('a 128 MiB file in a %s layer streams through without being held', async (kind) => {
    const d = join(tmp(), `big-${kind}`);
    mkdirSync(d);
    // Zeros compress ~1000:1 (gzip) and far more (zstd, RLE blocks): the most output per input byte.
    // Holding the file would take 128 MiB; what is seen is chunks in flight and garbage not yet collected.
    sh('truncate', ['-s', '128M', join(d, 'zeros')]);
    const out = join(tmp(), `big.tar.${kind}`);
    sh('tar', ['--format=pax', '-cf', out, '-I', kind === 'gzip' ? 'gzip -1' : 'zstd -q', '-C', d, 'zeros']);
    const base = process.memoryUsage();
    let peak = 0;
    const sample = (): void => {
      const m = process.memoryUsage();
      peak = Math.max(peak, m.arrayBuffers - base.arrayBuffers + (m.heapUsed - base.heapUsed));
    };
    const timer = setInterval(sample, 2);
    let bytes = 0;
    let nonZero = 0;
    try {
      for await (const e of tarLayer(out).entries()) {
        if (e.kind !== 'file') continue;
        expect(e.size).toBe(128 << 20);
        for await (const c of e.open()) {
          bytes += c.length;
          if (c.some((b) => b !== 0)) nonZero++;
          sample();
        }
      }
    } finally {
      clearInterval(timer);
    }
    expect({ bytes, nonZero }).toEqual({ bytes: 128 << 20, nonZero: 0 });
    if (process.env.VERBOSE_MEM) console.log(kind, 'peak MiB', (peak / 2 ** 20).toFixed(1));
    expect(peak, `peak growth ${(peak / 2 ** 20).toFixed(0)} MiB`).toBeLessThan(64 * 2 ** 20);
  });
});

describe('regressions found by fuzzing', () => {
  it('a whiteout-named directory entry with data ends in BAD_UPDATE, not a hang', async () => {
    const dir = await craft([{ name: 'etc/.wh.gone', data: 'x'.repeat(30) }, { name: 'after', data: 'y' }]);
    retype(dir, 0, '5');
    const e = await expectImgError(() => all(write('wh-dir-data.tar', dir)), 'BAD_UPDATE', { entry: '/etc/.wh.gone', offset: 0 });
    expect(e.message).toContain('directory entry with data');
  }, 5000);
  it('a whiteout-named hard link with no target is refused as GNU tar refuses it', async () => {
    const bytes = await craft([{ name: 'etc/.wh.x', type: 'link', linkname: '' }]);
    await expectImgError(() => all(write('wh-link.tar', bytes)), 'BAD_UPDATE', { entry: '/etc/.wh.x' });
  });
  it('the obsolete GNU type N and out-of-range ids are refused', async () => {
    const n = await craft([{ name: 'long', data: 'usr/x' }, { name: 'usr/y', data: 'z' }]);
    retype(n, 0, 'N');
    await expectImgError(() => all(write('type-n.tar', n)), 'BAD_UPDATE', { offset: 0 });
    const big = await craft([{ rawPax: paxRecord('gid', '4294967296') }, { name: 'g', data: 'x' }]);
    await expectImgError(() => all(write('gid.tar', big)), 'BAD_UPDATE', { entry: '/g' });
  });
  it('a zstd layer whose data was altered fails its content checksum (fzstd does not check it)', async () => {
    const raw = write('flip.tar', await craft([{ name: 'noise', data: seededBytes(20_000, 0xf11).toString('latin1') }]));
    sh('zstd', ['-q', '-f', raw, '-o', `${raw}.zst`]);
    const z = readFileSync(`${raw}.zst`);
    // Noise does not compress: the middle of the frame is a raw block of the tar's bytes.
    z[z.length >> 1]! ^= 0x01;
    const e = await expectImgError(() => all(write('flip.tar.zst', z)), 'BAD_UPDATE');
    expect(e.message).toContain('checksum');
  });
  it('header numbers GNU tar would not read ("0zz", "0-1") are refused, not read as 0', async () => {
    const bytes = await craft([{ name: 'a', data: 'x', uid: 5 }]);
    bytes.write('0zz\0\0\0\0\0', 108, 'latin1');
    retype(bytes, 0, '0');
    const e = await expectImgError(() => all(write('uid-zz.tar', bytes)), 'BAD_UPDATE', { entry: '/a', offset: 0 });
    expect(e.message).toContain('uid');
  });
});

describe('PAX size', () => {
  it('overrides the header size, and must be a decimal number', async () => {
    const ok = await craft([{ rawPax: paxRecord('size', '3') }, { name: 'a', data: 'xyz' }]);
    // The header says 0; the PAX record says 3, and tar-stream reads 3 bytes of data.
    ok.write('00000000000\0', 512 + 512 + 124, 'latin1');
    retype(ok, 1024, '0');
    const [e] = await all(write('pax-size.tar', ok));
    expect(e).toMatchObject({ kind: 'file', size: 3 });
    const bad = await craft([{ rawPax: paxRecord('size', '3abc') }, { name: 'a', data: 'xyz' }]);
    await expectImgError(() => all(write('pax-size-bad.tar', bad)), 'BAD_UPDATE', { entry: '/a' });
  });
});
