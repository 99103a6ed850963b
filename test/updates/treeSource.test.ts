/**
 * A directory tree as an update (src/updates/treeSource.ts): every entry, its metadata,
 * content, symlink target, device numbers, hard links and xattrs equal what the host
 * reports through stat(2)/readlink(2)/listxattr(2) (hostTree.ts); OCI whiteouts and opaque
 * markers become whiteout/opaque entries ahead of their directory's other entries; names
 * are bytes. Devices need root and xattrs need setfattr: those parts say so and skip.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { useTempDir } from '../helpers/tmp.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { treeLayer } from '../../src/updates/treeSource.js';
import { openUpdateSource } from '../../src/updates/openUpdateSource.js';
import { HAS_GETFATTR, HAS_SETFATTR, IS_ROOT, NON_UTF8, entryFacts, hostFacts, makeHostTree, sha256, type EntryFact, type HostFact } from './hostTree.js';

const tmp = useTempDir('imgdedup-tree-');
let root = '';
let facts: Map<string, HostFact>;
const XATTRS = HAS_SETFATTR && HAS_GETFATTR;

beforeAll(() => {
  root = join(tmp(), 'tree');
  mkdirSync(root);
  makeHostTree(root, { xattrs: XATTRS });
  facts = hostFacts(root);
});

function noWarnings(): { warnings: string[]; warn: (m: string) => void } {
  const warnings: string[] = [];
  return { warnings, warn: (m) => warnings.push(m) };
}

/** What the tree source must yield for a host path, from the host's own account of it. */
function expected(f: HostFact, content: () => Buffer): EntryFact {
  const base = { kind: f.type, mode: f.mode, uid: f.uid, gid: f.gid, mtimeNs: f.mtimeNs, xattrs: XATTRS ? f.xattrs : {} };
  if (f.type === 'file') return { ...base, size: f.size, sha256: sha256(content()) };
  if (f.type === 'symlink') return { ...base, target: f.target! };
  if (f.type === 'chardev' || f.type === 'blockdev') return { ...base, major: f.major, minor: f.minor };
  return base;
}

describe('a directory tree as an update', () => {
  it('yields every path of the tree with the host\'s metadata, content, targets and xattrs', async () => {
    const { warnings, warn } = noWarnings();
    const got = await entryFacts(treeLayer(root, warn));
    expect(warnings).toEqual(XATTRS ? [] : [expect.stringContaining('getfattr')]);
    const byPath = new Map(got);
    expect(byPath.size, 'one entry per path').toBe(got.length);
    expect([...byPath.keys()].sort()).toEqual([...facts.keys()].sort());
    const firstOfInode = new Map<string, string>();
    for (const [path, entry] of got) {
      const f = facts.get(path)!;
      if (f.type !== 'dir' && f.nlink > 1) {
        const first = firstOfInode.get(f.ino);
        if (first !== undefined) {
          expect(entry, path).toEqual({ kind: 'hardlink', target: first });
          continue;
        }
        firstOfInode.set(f.ino, path);
      }
      expect(entry, path).toEqual(expected(f, () => readFileSync(Buffer.from(root + path, 'latin1'))));
    }
    // The tree really had what the test is about.
    const kinds = new Set(got.map(([, e]) => e.kind));
    for (const k of ['file', 'dir', 'symlink', 'hardlink', 'fifo', ...(IS_ROOT ? ['chardev', 'blockdev'] : [])]) expect(kinds, k).toContain(k);
    expect(got.filter(([, e]) => e.kind === 'hardlink').length).toBe(2);
    expect(byPath.get(`/etc/${NON_UTF8.toString('latin1')}`)?.sha256).toBe(sha256(Buffer.from('not utf-8\n')));
    if (XATTRS) expect(byPath.get('/etc/app/config')?.xattrs).toEqual({ [Buffer.from('user.bin').toString('hex')]: '00ff0a41', [Buffer.from('user.empty').toString('hex')]: '' });
    if (!IS_ROOT) console.log('treeSource.test: not root, so no device nodes or other owners were made (mknod, chown)');
    if (!XATTRS) console.log('treeSource.test: setfattr/getfattr missing (package "attr"), so xattrs were not tested');
  });

  it('gives parents before children, and the same entries on a second pass', async () => {
    const layer = treeLayer(root, () => undefined);
    const first = await entryFacts(layer);
    const seen = new Set<string>(['']);
    for (const [path] of first) {
      expect(seen.has(path.slice(0, path.lastIndexOf('/'))), path).toBe(true);
      seen.add(path);
    }
    expect(await entryFacts(layer)).toEqual(first);
  });

  it('turns OCI whiteouts and opaque markers into whiteout and opaque entries, before the directory\'s other entries', async () => {
    const t = join(tmp(), 'whiteouts');
    mkdirSync(join(t, 'etc', 'cron.d'), { recursive: true });
    writeFileSync(join(t, 'etc', 'a-kept'), 'x');
    writeFileSync(join(t, 'etc', '.wh.removed.conf'), '');
    writeFileSync(join(t, 'etc', 'cron.d', '.wh..wh..opq'), '');
    writeFileSync(join(t, 'etc', 'cron.d', 'new-job'), 'y');
    mkdirSync(join(t, '.wh.opt'));
    writeFileSync(Buffer.concat([Buffer.from(join(t, '.wh.')), NON_UTF8]), '');
    const got = (await entryFacts(treeLayer(t, () => undefined))).map(([p, e]) => [p, e.kind]);
    expect(got).toEqual([
      [`/${NON_UTF8.toString('latin1')}`, 'whiteout'],
      ['/opt', 'whiteout'],
      ['/etc', 'dir'],
      ['/etc/removed.conf', 'whiteout'],
      ['/etc/a-kept', 'file'],
      ['/etc/cron.d', 'dir'],
      ['/etc/cron.d', 'opaque'],
      ['/etc/cron.d/new-job', 'file'],
    ]);
  });

  it.runIf(IS_ROOT && XATTRS)('understands overlayfs whiteouts: a 0/0 character device, trusted.overlay.opaque=y (root only)', async () => {
    const t = join(tmp(), 'overlay-upper');
    mkdirSync(join(t, 'etc', 'cron.d'), { recursive: true });
    execFileSync('mknod', [join(t, 'etc', 'gone'), 'c', '0', '0']);
    execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(t, 'etc', 'cron.d')]);
    execFileSync('setfattr', ['-n', 'user.kept', '-v', 'k', join(t, 'etc', 'cron.d')]);
    writeFileSync(join(t, 'etc', 'cron.d', 'job'), 'x');
    const got = (await entryFacts(treeLayer(t, () => undefined))).map(([p, e]) => [p, e.kind, Object.keys(e.xattrs ?? {}).map((h) => Buffer.from(h, 'hex').toString())]);
    expect(got).toEqual([
      ['/etc', 'dir', []],
      ['/etc/cron.d', 'dir', ['user.kept']],
      ['/etc/cron.d', 'opaque', []],
      ['/etc/cron.d/job', 'file', []],
      ['/etc/gone', 'whiteout', []],
    ]);
  });

  it.each([
    ['.wh..wh.plnk', 'aufs'],
    ['.wh.', 'must name a file'],
    ['.wh..', 'must name a file'],
    ['.wh...', 'must name a file'],
  ])('refuses the whiteout name %s with BAD_UPDATE', async (name, why) => {
    const t = join(tmp(), `bad-wh-${Buffer.from(name).toString('hex')}`);
    mkdirSync(t);
    writeFileSync(join(t, name), '');
    const e = await expectImgError(() => entryFacts(treeLayer(t, () => undefined)), 'BAD_UPDATE', { file: t });
    expect(e.message).toContain(why);
  });

  it('refuses a file whose size changed between listing and reading (BAD_UPDATE), not a half-written file', async () => {
    const t = join(tmp(), 'changing');
    mkdirSync(t);
    writeFileSync(join(t, 'grows'), 'abc');
    writeFileSync(join(t, 'shrinks'), 'abcdef');
    const entries: { path: string; open: () => AsyncIterable<Uint8Array> }[] = [];
    for await (const e of treeLayer(t, () => undefined).entries()) if (e.kind === 'file') entries.push({ path: Buffer.from(e.path).toString(), open: e.open });
    writeFileSync(join(t, 'grows'), 'abcdefgh');
    truncateSync(join(t, 'shrinks'), 2);
    const read = async (open: () => AsyncIterable<Uint8Array>): Promise<void> => {
      for await (const _c of open());
    };
    expect((await expectImgError(() => read(entries[0]!.open), 'BAD_UPDATE', { entry: '/grows' })).message).toContain('grew');
    expect((await expectImgError(() => read(entries[1]!.open), 'BAD_UPDATE', { entry: '/shrinks' })).message).toContain('shrank');
    rmSync(join(t, 'grows'));
    await expectImgError(() => read(entries[0]!.open), 'IO');
  });

  it('without getfattr, reads the tree without xattrs and says so once (a warning, not an error)', async () => {
    const path = process.env.PATH;
    process.env.PATH = join(tmp(), 'no-such-bin');
    try {
      const src = await openUpdateSource(root);
      for (let pass = 0; pass < 2; pass++) {
        for await (const layer of src.layers()) for await (const e of layer.entries()) if ('meta' in e) expect(e.meta.xattrs).toEqual([]);
      }
      expect(src.warnings).toEqual([`${root}: getfattr is not installed (Debian/Ubuntu package "attr"): the tree's extended attributes were not read`]);
    } finally {
      process.env.PATH = path;
    }
  });

  it('reads an empty tree as no entries, and a missing one as an IO error', async () => {
    const t = join(tmp(), 'empty');
    mkdirSync(t);
    expect(await entryFacts(treeLayer(t, () => undefined))).toEqual([]);
    await expectImgError(() => entryFacts(treeLayer(join(tmp(), 'missing'), () => undefined)), 'IO', { file: join(tmp(), 'missing') });
  });
});
