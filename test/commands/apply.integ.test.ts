/**
 * `imgdedup apply` against the oracle the issue names: the same update written by debugfs
 * into a raw copy of the filesystem. On partitioned qcow2, VMDK and raw images (GPT: an
 * EFI FAT partition and an ext4 root), with 1 KiB and 4 KiB blocks, complete and overlay
 * outputs: the tree equals debugfs's file for file (content, type, mode, owner, times
 * the update sets, symlink targets, xattrs, hard links), the strict e2fsck oracle holds,
 * an overlay stores only blocks that changed and `qemu-img check` finds nothing, the
 * FAT partition and BASE are untouched.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chownSync, linkSync, lutimesSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image, posixAclXattr, seeded } from '../../fixtures/ext4/ext4Fixtures.js';
import { expectStrictFsckClean } from '../helpers/e2fsck.js';
import { qemuCheck, qemuImg, qemuMap } from '../helpers/qemu.js';
import { imgdedup, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { dumpTree } from '../blockdiff/treeOracle.js';
import { debugfsBatch, parseLsP, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-apply-');
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
const FAT_START = 1 << 20;
const EXT_START = 2 << 20;
const EXT_MIB = 24;

function random(n: number, seed: number): Buffer {
  const r = seeded(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** The base filesystem's files. */
function baseTree(root: string): void {
  const put = (p: string, data: string | Buffer): void => {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), data);
  };
  put('etc/os-release', 'ID=golden\nVERSION_ID=1\n');
  put('etc/motd', 'welcome\n');
  put('etc/hostname', 'template\n');
  put('usr/lib/libold.so.1', random(70_000, 1));
  put('usr/lib/libkeep.so.1', random(20_000, 2));
  put('usr/share/doc/old/README', 'old package\n'.repeat(40));
  put('usr/share/doc/old/sub/NOTES', 'notes\n');
  put('opt/app/conf', 'a=1\n');
  put('opt/app/data', random(9000, 3));
  symlinkSync('usr/lib', join(root, 'lib'));
}

interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}
type Op =
  | { kind: 'file'; path: string; data: Buffer; meta: Meta; xattr?: [string, string]; acl?: Buffer }
  | { kind: 'dir'; path: string; meta: Meta }
  | { kind: 'symlink'; path: string; target: string; meta: Meta }
  | { kind: 'hardlink'; path: string; to: string }
  | { kind: 'whiteout'; path: string }
  | { kind: 'opaque'; path: string };

const m = (mode: number, uid = 0, gid = 0, mtime = 1_650_000_000): Meta => ({ mode, uid, gid, mtime });

/** The update: replaced, added and deleted files; every kind; through the /lib symlink; owners and xattrs. */
const UPDATE: Op[] = [
  { kind: 'whiteout', path: '/etc/hostname' },
  { kind: 'whiteout', path: '/usr/share/doc/old' },
  { kind: 'opaque', path: '/opt/app' },
  { kind: 'dir', path: '/etc', meta: m(0o755, 0, 0, 1_650_000_100) },
  { kind: 'file', path: '/etc/motd', data: Buffer.from('welcome, patched\n'), meta: m(0o644, 0, 0, 1_650_000_200) },
  { kind: 'file', path: '/etc/new.conf', data: Buffer.from('x=2\n'), meta: m(0o600, 0, 0, 1_650_000_300), xattr: ['user.origin', 'update-wave-7'] },
  { kind: 'dir', path: '/usr', meta: m(0o755) },
  { kind: 'dir', path: '/usr/lib', meta: m(0o755) },
  { kind: 'file', path: '/usr/lib/libold.so.1', data: random(150_000, 4), meta: m(0o755, 0, 0, 1_650_000_400) },
  { kind: 'file', path: '/usr/lib/libnew.so.2', data: random(1_200_000, 5), meta: m(0o755, 0, 0, 1_650_000_500) },
  { kind: 'hardlink', path: '/usr/lib/libnew.so', to: '/usr/lib/libnew.so.2' },
  { kind: 'symlink', path: '/usr/lib/libold.so', target: 'libold.so.1', meta: m(0o777, 0, 0, 1_650_000_600) },
  { kind: 'symlink', path: '/usr/lib/long', target: 'd/'.repeat(60) + 'target', meta: m(0o777, 0, 0, 1_650_000_600) },
  { kind: 'dir', path: '/srv', meta: m(0o750, 1000, 1000, 1_650_000_700) },
  { kind: 'dir', path: '/srv/www', meta: m(0o755, 33, 33, 1_650_000_800) },
  {
    kind: 'file',
    path: '/srv/www/index.html',
    data: Buffer.from('<h1>hi</h1>\n'),
    meta: m(0o644, 33, 33, 1_650_000_900),
    // user_obj rw, user 1000 r, group_obj r, mask r, other r (Linux's xattr form, as setfacl writes it)
    acl: posixAclXattr([[0x01, 6, 0xffffffff], [0x02, 4, 1000], [0x04, 4, 0xffffffff], [0x10, 4, 0xffffffff], [0x20, 4, 0xffffffff]]),
  },
  { kind: 'dir', path: '/opt', meta: m(0o755) },
  { kind: 'dir', path: '/opt/app', meta: m(0o755, 0, 0, 1_650_001_000) },
  { kind: 'file', path: '/opt/app/conf', data: Buffer.from('a=2\n'), meta: m(0o644, 0, 0, 1_650_001_100) },
];

/** Writes UPDATE as a directory tree with OCI whiteouts (as the tree source reads it). */
function updateTree(root: string): void {
  const at = (p: string): string => join(root, p);
  for (const op of UPDATE) {
    mkdirSync(dirname(at(op.path)), { recursive: true });
    switch (op.kind) {
      case 'whiteout':
        writeFileSync(join(dirname(at(op.path)), `.wh.${op.path.split('/').pop()}`), '');
        break;
      case 'opaque':
        mkdirSync(at(op.path), { recursive: true });
        writeFileSync(join(at(op.path), '.wh..wh..opq'), '');
        break;
      case 'dir':
        mkdirSync(at(op.path), { recursive: true });
        break;
      case 'file':
        writeFileSync(at(op.path), op.data);
        if (op.xattr) sh('setfattr', ['-n', op.xattr[0], '-v', op.xattr[1], at(op.path)]);
        if (op.acl) sh('setfattr', ['-n', 'system.posix_acl_access', '-v', `0s${op.acl.toString('base64')}`, at(op.path)]);
        break;
      case 'symlink':
        symlinkSync(op.target, at(op.path));
        break;
      case 'hardlink':
        linkSync(at(op.to), at(op.path));
        break;
    }
  }
  // Owners, modes and times last, deepest first (creating children changes a directory's mtime).
  for (const op of [...UPDATE].reverse()) {
    if (!('meta' in op)) continue;
    const p = at(op.path);
    if (op.kind !== 'symlink') {
      execFileSync('chmod', [op.meta.mode.toString(8), p]);
      chownSync(p, op.meta.uid, op.meta.gid);
    } else execFileSync('chown', ['-h', `${op.meta.uid}:${op.meta.gid}`, p]);
    (op.kind === 'symlink' ? lutimesSync : utimesSync)(p, op.meta.mtime, op.meta.mtime);
  }
}

/** debugfs commands that remove `path` and everything below it in `image`. */
function removeTree(image: string, path: string): string[] {
  const [st] = debugfsBatch(image, [`stat "${path}"`]);
  if (!/Inode: \d+/.test(st!)) return [];
  if (parseStat(st!).type !== 'directory') return [`rm "${path}"`];
  const [ls] = debugfsBatch(image, [`ls -p "${path}"`]);
  const children = parseLsP(ls!).filter((e) => e.ino !== 0 && e.name !== '.' && e.name !== '..');
  return [...children.flatMap((c) => removeTree(image, `${path}/${c.name}`)), `rmdir "${path}"`];
}

/** Applies UPDATE to a raw ext4 image with debugfs: the oracle. */
function debugfsApply(image: string, hostRoot: string): void {
  for (const op of UPDATE) {
    if (op.kind === 'whiteout') debugfsWrite(image, removeTree(image, op.path));
    if (op.kind === 'opaque') {
      const [ls] = debugfsBatch(image, [`ls -p "${op.path}"`]);
      const kids = parseLsP(ls!).filter((e) => e.ino !== 0 && e.name !== '.' && e.name !== '..');
      debugfsWrite(image, kids.flatMap((k) => removeTree(image, `${op.path}/${k.name}`)));
    }
  }
  const exists = (p: string): boolean => /Inode: \d+/.test(debugfsBatch(image, [`stat "${p}"`])[0]!);
  for (const op of UPDATE) {
    const cmds: string[] = [];
    const meta = (p: string, type: number, mt: Meta): void => {
      cmds.push(`sif "${p}" mode 0${(type | mt.mode).toString(8)}`, `sif "${p}" uid ${mt.uid}`, `sif "${p}" gid ${mt.gid}`, `sif "${p}" mtime @${mt.mtime}`);
    };
    switch (op.kind) {
      case 'dir':
        if (!exists(op.path)) cmds.push(`mkdir "${op.path}"`);
        meta(op.path, 0o040000, op.meta);
        break;
      case 'file':
        if (exists(op.path)) cmds.push(...removeTree(image, op.path));
        cmds.push(`write "${join(hostRoot, op.path)}" "${op.path}"`);
        meta(op.path, 0o100000, op.meta);
        if (op.xattr) cmds.push(`ea_set "${op.path}" ${op.xattr[0]} ${op.xattr[1]}`);
        if (op.acl) {
          writeFileSync(`${image}.acl`, op.acl);
          cmds.push(`ea_set -f "${image}.acl" "${op.path}" system.posix_acl_access`);
        }
        break;
      case 'symlink':
        if (exists(op.path)) cmds.push(...removeTree(image, op.path));
        cmds.push(`symlink "${op.path}" "${op.target}"`);
        meta(op.path, 0o120000, op.meta);
        break;
      case 'hardlink': {
        cmds.push(`ln "${op.to}" "${op.path}"`, `sif "${op.to}" links_count 2`);
        break;
      }
      default:
        break;
    }
    debugfsWrite(image, cmds);
  }
  // Directory times as the update gives them, after their entries changed (as apply does).
  debugfsWrite(image, UPDATE.filter((op): op is Extract<Op, { kind: 'dir' }> => op.kind === 'dir').map((op) => `sif "${op.path}" mtime @${op.meta.mtime}`));
}

/** A GPT disk: FAT (partition 1), the ext4 image (partition 2). */
function makeDisk(fsImage: string, disk: string, work: string): void {
  const fat = join(work, 'efi.fat');
  sh('mkfs.vfat', ['-C', '-i', '12345678', fat, '1024']);
  sh('mcopy', ['-i', fat, '/etc/hostname', '::/BOOTX64.EFI']);
  execFileSync('truncate', ['-s', `${EXT_START / 1048576 + EXT_MIB + 1}M`, disk]);
  sh('sgdisk', ['-n', '1:2048:+1M', '-t', '1:ef00', '-n', `2:${EXT_START / 512}:+${EXT_MIB}M`, '-t', '2:8300', disk]);
  execFileSync('dd', [`if=${fat}`, `of=${disk}`, 'bs=1M', `seek=${FAT_START / 1048576}`, 'conv=notrunc', 'status=none']);
  execFileSync('dd', [`if=${fsImage}`, `of=${disk}`, 'bs=1M', `seek=${EXT_START / 1048576}`, 'conv=notrunc', 'status=none']);
}

/** The ext4 partition of a disk image (any format) as a raw file. */
function extractFs(image: string, out: string): void {
  const raw = `${out}.disk`;
  qemuImg('convert', '-O', 'raw', image, raw);
  execFileSync('dd', [`if=${raw}`, `of=${out}`, 'bs=1M', `skip=${EXT_START / 1048576}`, `count=${EXT_MIB}`, 'status=none']);
}

function fatBytes(image: string, out: string): string {
  const raw = `${out}.fatdisk`;
  qemuImg('convert', '-O', 'raw', image, raw);
  return createHash('sha256').update(readFileSync(raw).subarray(FAT_START, FAT_START + (1 << 20))).digest('hex');
}

/** Paths, content and attributes of two filesystems, compared as the issue asks. */
function expectSameTree(ours: string, oracle: string, work: string): void {
  const a = dumpTree(ours, join(work, 'dump-ours'));
  const b = dumpTree(oracle, join(work, 'dump-oracle'));
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [p, n] of b) {
    expect(a.get(p)!.type, p).toBe(n.type);
    if (n.type === 'file') expect(Buffer.compare(a.get(p)!.content!, n.content!), p).toBe(0);
    if (n.type === 'symlink') expect(a.get(p)!.target, p).toBe(n.target);
  }
  const paths = [...b.keys()].filter((p) => p !== '/lost+found');
  const sa = debugfsBatch(ours, paths.map((p) => `stat "${p}"`)).map(parseStat);
  const sb = debugfsBatch(oracle, paths.map((p) => `stat "${p}"`)).map(parseStat);
  const timed = new Set(UPDATE.filter((op) => 'meta' in op).map((op) => op.path));
  paths.forEach((p, i) => {
    const x = sa[i]!;
    const y = sb[i]!;
    expect({ p, mode: x.mode, type: x.type, uid: x.uid, gid: x.gid, links: x.links, size: x.size }).toEqual({ p, mode: y.mode, type: y.type, uid: y.uid, gid: y.gid, links: y.links, size: y.size });
    expect(x.xattrs.map((e) => [e.name, e.value]), p).toEqual(y.xattrs.map((e) => [e.name, e.value]));
    if (timed.has(p)) expect(x.mtime.sec, `${p} mtime`).toBe(y.mtime.sec);
  });
}

const CASES = [
  { name: 'qcow2, 4 KiB blocks', format: 'qcow2', block: 4096 },
  { name: 'VMDK, 1 KiB blocks', format: 'vmdk', block: 1024 },
  { name: 'raw, 4 KiB blocks', format: 'raw', block: 4096 },
  { name: 'qcow2, 1 KiB blocks', format: 'qcow2', block: 1024 },
] as const;

describe.each(CASES)('apply on a partitioned $name image', ({ format, block }) => {
  let dir = '';
  let base = '';
  let oracle = '';
  let baseHash = '';
  beforeAll(() => {
    dir = join(tmp(), `${format}-${block}`);
    mkdirSync(dir, { recursive: true });
    baseTree(join(dir, 'tree'));
    updateTree(join(dir, 'updates'));
    const fs = join(dir, 'root.ext4');
    makeExt4Image(fs, join(dir, 'tree'), { args: ['-b', String(block), '-N', '2048'], sizeMiB: EXT_MIB });
    makeDisk(fs, join(dir, 'disk.raw'), dir);
    base = join(dir, `base.${format}`);
    if (format === 'raw') execFileSync('cp', [join(dir, 'disk.raw'), base]);
    else qemuImg('convert', '-O', format, join(dir, 'disk.raw'), base);
    oracle = join(dir, 'oracle.ext4');
    execFileSync('cp', [fs, oracle]);
    debugfsApply(oracle, join(dir, 'updates'));
    baseHash = sha(base);
  }, 120_000);

  test('the complete output equals debugfs writing the same update, and is strictly clean', () => {
    const out = join(dir, `out.${format}`);
    const r = imgdedup(['apply', base, join(dir, 'updates'), '-o', out, '--json'], { cwd: dir });
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { format: string; overlay: boolean; partition: number; added: number; deleted: number };
    expect(res).toMatchObject({ format, overlay: false, partition: 2 });
    expect(qemuImg('info', '--output=json', out)).not.toContain('backing-filename');
    const fs = join(dir, 'out.ext4');
    extractFs(out, fs);
    expectStrictFsckClean(fs);
    expectSameTree(fs, oracle, join(dir, 'cmp-complete'));
    expect(fatBytes(out, join(dir, 'o'))).toBe(fatBytes(base, join(dir, 'b')));
    expect(sha(base)).toBe(baseHash);
  }, 120_000);

  test('the overlay output holds only changed blocks, is clean for qemu-img check, and reads as the complete one', () => {
    const out = join(dir, `overlay.${format === 'vmdk' ? 'vmdk' : 'qcow2'}`);
    const r = imgdedup(['apply', '--overlay', base, join(dir, 'updates'), '-o', out], { cwd: dir });
    expect(r.status, r.stderr).toBe(0);
    if (format !== 'vmdk') expect(qemuCheck(out).clean).toBe(true);
    const fs = join(dir, 'overlay.ext4');
    extractFs(out, fs);
    expectStrictFsckClean(fs);
    expectSameTree(fs, oracle, join(dir, 'cmp-overlay'));
    // Every cluster the overlay stores differs from BASE there.
    const flatBase = join(dir, 'flat-base.raw');
    const flatOut = join(dir, 'flat-out.raw');
    qemuImg('convert', '-O', 'raw', base, flatBase);
    qemuImg('convert', '-O', 'raw', out, flatOut);
    const a = readFileSync(flatBase);
    const b = readFileSync(flatOut);
    const unit = format === 'vmdk' ? 4096 : Math.max(512, block);
    const own = qemuMap(out).filter((e) => e.depth === 0 && e.data);
    expect(own.length).toBeGreaterThan(0);
    let stored = 0;
    for (const e of own) {
      for (let off = e.start; off < e.start + e.length; off += unit) {
        stored += unit;
        expect(a.subarray(off, off + unit).equals(b.subarray(off, off + unit)), `cluster at ${off} stored unchanged`).toBe(false);
      }
    }
    expect(stored).toBeLessThan(4 << 20);
    expect(sha(base)).toBe(baseHash);
  }, 120_000);
});

describe('apply through a symlinked parent (merged /usr)', () => {
  test('a tar entry under /lib lands in /usr/lib; /lib stays a symlink', () => {
    const dir = join(tmp(), 'merged-usr');
    mkdirSync(join(dir, 'src/lib'), { recursive: true });
    baseTree(join(dir, 'tree'));
    const fs = join(dir, 'root.ext4');
    makeExt4Image(fs, join(dir, 'tree'), { args: ['-b', '4096', '-N', '1024'], sizeMiB: 16 });
    writeFileSync(join(dir, 'src/lib/libvia.so'), random(5000, 9));
    // GNU tar with a file name only: no entry for its parent directory.
    sh('tar', ['-cf', join(dir, 'layer.tar'), '-C', join(dir, 'src'), 'lib/libvia.so']);
    const r = imgdedup(['apply', fs, join(dir, 'layer.tar'), '-o', join(dir, 'out.raw')]);
    expect(r.status, r.stderr).toBe(0);
    const out = join(dir, 'out.raw');
    expectStrictFsckClean(out);
    const [lib, via] = debugfsBatch(out, ['stat /lib', 'stat /usr/lib/libvia.so']).map(parseStat);
    expect(lib!.type).toBe('symlink');
    expect(via!.type).toBe('regular');
    expect(dumpTree(out, join(dir, 'dump')).get('/usr/lib/libvia.so')!.content!.equals(random(5000, 9))).toBe(true);
  });
});
