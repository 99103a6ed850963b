/**
 * Test trees on the host and what the host says about them, for the update-source tests.
 * `makeHostTree` builds a seeded tree with every kind of entry; `hostFacts` reads a tree
 * back through Python's os.lstat/os.readlink/os.listxattr (the stat(2), readlink(2) and
 * listxattr(2) calls themselves, independent of Node and of src/), names as bytes.
 */
import { createHash } from 'node:crypto';
import { chownSync, linkSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { seededBytes } from '../../fixtures/prng.mjs';
import { run, sh } from '../helpers/run.js';
import type { UpdateEntry, UpdateLayer } from '../../src/updates/UpdateEntry.js';

export const IS_ROOT = process.getuid?.() === 0;
export const HAS_SETFATTR = run('sh', ['-c', 'command -v setfattr']).status === 0;
export const HAS_GETFATTR = run('sh', ['-c', 'command -v getfattr']).status === 0;

/** A name that is not UTF-8 (0xff never occurs in UTF-8). */
export const NON_UTF8 = Buffer.from([0x6e, 0xff, 0x78, 0xe9]);

const T0 = 1_700_000_000;

/** Gives every path under argv[1] its own atime and mtime with nanoseconds (symlinks their own), deepest first. */
const PY_TIMES = `
import os, sys
root = os.fsencode(sys.argv[1]); t0 = int(sys.argv[2])
paths = [os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs]
paths.sort(key=lambda p: (-len(p), p))
for i, p in enumerate(paths):
    ns = (t0 + i * 7919) * 10**9 + (i * 123456789) % 10**9
    os.utime(p, ns=(ns - 5 * 10**9, ns), follow_symlinks=False)
`;

/**
 * Builds the tree under `root`: files (empty, small, 1 MiB of seeded noise, setuid),
 * a sticky directory, nested directories past tar's 100-byte name field, short and
 * 300-byte symlinks, a file with three hard links, a non-UTF-8 name, a 255-byte name,
 * owners other than root (when root), devices and a fifo (root only), xattrs with binary
 * and empty values (when setfattr is installed). Times have nanoseconds.
 */
export function makeHostTree(root: string, options: { xattrs: boolean }): void {
  const p = (...parts: string[]): string => join(root, ...parts);
  mkdirSync(p('etc', 'app'), { recursive: true });
  mkdirSync(p('usr', 'lib', 'x86_64-linux-gnu', 'a-rather-long-directory-name-to-pass-one-hundred-bytes', 'and-more'), { recursive: true });
  mkdirSync(p('tmp'));
  writeFileSync(p('etc', 'empty'), '');
  writeFileSync(p('etc', 'app', 'config'), 'key = value\n');
  writeFileSync(p('usr', 'lib', 'big.bin'), seededBytes(1 << 20, 0x7a1));
  writeFileSync(p('usr', 'lib', 'x86_64-linux-gnu', 'a-rather-long-directory-name-to-pass-one-hundred-bytes', 'and-more', 'libdeep.so.1'), seededBytes(5000, 0x7a2));
  writeFileSync(p('usr', 'bin-su'), seededBytes(3000, 0x7a3), { mode: 0o755 });
  sh('chmod', ['4755', p('usr', 'bin-su')]);
  sh('chmod', ['1777', p('tmp')]);
  writeFileSync(p('usr', 'lib', 'linked'), 'three names\n');
  linkSync(p('usr', 'lib', 'linked'), p('usr', 'lib', 'linked-2'));
  linkSync(p('usr', 'lib', 'linked'), p('etc', 'linked-3'));
  symlinkSync('../usr/lib/big.bin', p('etc', 'short-link'));
  symlinkSync(`/${'x'.repeat(299)}`, p('etc', 'long-link'));
  writeFileSync(Buffer.concat([Buffer.from(p('etc')), Buffer.from('/'), NON_UTF8]), 'not utf-8\n');
  writeFileSync(p('etc', 'n'.repeat(255)), 'long name\n');
  if (IS_ROOT) {
    chownSync(p('etc', 'app', 'config'), 1234, 5678);
    chownSync(p('etc', 'app'), 4321, 8765);
    sh('mknod', [p('etc', 'null'), 'c', '1', '3']);
    sh('mknod', [p('etc', 'loop7'), 'b', '7', '300']);
  }
  sh('mkfifo', [p('etc', 'fifo')]);
  if (options.xattrs) {
    sh('setfattr', ['-n', 'user.bin', '-v', '0x00ff0a41', p('etc', 'app', 'config')]);
    sh('setfattr', ['-n', 'user.empty', p('etc', 'app', 'config')]);
    sh('setfattr', ['-n', 'user.dir', '-v', 'on a directory', p('etc', 'app')]);
    if (IS_ROOT) sh('setfattr', ['-h', '-n', 'trusted.link', '-v', 'on the link itself', p('etc', 'short-link')]);
  }
  // Times last (creating children changes a directory's mtime): each its own, with nanoseconds (Python: names as bytes).
  sh('python3', ['-c', PY_TIMES, root, String(T0)]);
}

export interface HostFact {
  readonly type: 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeNs: string;
  readonly size: number;
  readonly nlink: number;
  readonly ino: string;
  readonly major: number;
  readonly minor: number;
  /** Symlink target, hex. */
  readonly target?: string;
  /** xattr name (hex) -> value (hex). */
  readonly xattrs: Record<string, string>;
}

const PY = `
import os, sys, json, stat
root = os.fsencode(sys.argv[1])
out = {}
def fact(p, rel):
    st = os.lstat(p)
    m = st.st_mode
    t = {stat.S_IFREG:'file', stat.S_IFDIR:'dir', stat.S_IFLNK:'symlink', stat.S_IFCHR:'chardev', stat.S_IFBLK:'blockdev', stat.S_IFIFO:'fifo', stat.S_IFSOCK:'socket'}[stat.S_IFMT(m)]
    x = {}
    try:
        for n in os.listxattr(p, follow_symlinks=False):
            x[os.fsencode(n).hex()] = os.getxattr(p, n, follow_symlinks=False).hex()
    except OSError:
        pass
    f = {'type': t, 'mode': stat.S_IMODE(m), 'uid': st.st_uid, 'gid': st.st_gid, 'mtimeNs': str(st.st_mtime_ns), 'size': st.st_size, 'nlink': st.st_nlink, 'ino': '%d:%d' % (st.st_dev, st.st_ino), 'major': os.major(st.st_rdev), 'minor': os.minor(st.st_rdev), 'xattrs': x}
    if t == 'symlink': f['target'] = os.readlink(p).hex()
    out[rel.hex()] = f
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        fact(p, p[len(root):])
print(json.dumps(out))
`;

/** Every path under `root` ("/a/b" as latin1 text) with what the host says about it. */
export function hostFacts(root: string): Map<string, HostFact> {
  const json = JSON.parse(sh('python3', ['-c', PY, root])) as Record<string, HostFact>;
  return new Map(Object.entries(json).map(([hex, f]) => [Buffer.from(hex, 'hex').toString('latin1'), f]));
}

/** An entry as plain data, content read and hashed, names as latin1/hex, for comparing. */
export interface EntryFact {
  readonly kind: UpdateEntry['kind'];
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtimeNs?: string;
  readonly size?: number;
  /** sha256 of the content, hex (vitest compares a megabyte Buffer slowly). */
  readonly sha256?: string;
  readonly target?: string;
  readonly major?: number;
  readonly minor?: number;
  readonly xattrs?: Record<string, string>;
}

/** Reads a layer's entries (content included) into path -> facts (path as latin1 text), in order. */
export async function entryFacts(layer: UpdateLayer): Promise<[string, EntryFact][]> {
  const out: [string, EntryFact][] = [];
  for await (const e of layer.entries()) {
    const path = Buffer.from(e.path).toString('latin1');
    if (e.kind === 'whiteout' || e.kind === 'opaque') {
      out.push([path, { kind: e.kind }]);
      continue;
    }
    if (e.kind === 'hardlink') {
      out.push([path, { kind: e.kind, target: Buffer.from(e.target).toString('latin1') }]);
      continue;
    }
    const m = e.meta;
    const base = {
      kind: e.kind,
      mode: m.mode,
      uid: m.uid,
      gid: m.gid,
      mtimeNs: (BigInt(m.mtime.sec) * 1_000_000_000n + BigInt(m.mtime.nsec)).toString(),
      xattrs: Object.fromEntries(m.xattrs.map((x) => [Buffer.from(x.name).toString('hex'), Buffer.from(x.value).toString('hex')])),
    };
    if (e.kind === 'file') {
      const h = createHash('sha256');
      for await (const c of e.open()) h.update(c);
      out.push([path, { ...base, size: e.size, sha256: h.digest('hex') }]);
    } else if (e.kind === 'symlink') out.push([path, { ...base, target: Buffer.from(e.target).toString('hex') }]);
    else if (e.kind === 'chardev' || e.kind === 'blockdev') out.push([path, { ...base, major: e.major, minor: e.minor }]);
    else out.push([path, base]);
  }
  return out;
}

/** sha256 of bytes, hex. */
export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
