/**
 * `imgdedup rebase` on the realistic small fleet (fixtures/fleet: a GPT disk with an EFI
 * FAT partition and an ext4 root of this machine's files, an update wave of several
 * hundred files, four client kinds as qcow2 overlays and VMDK deltas), against the
 * fleet's truths: each client's root written by debugfs with the update applied to the
 * client directly (keep-client on conflicts). Per client: the rebased tree equals the
 * truth file for file (content, type, symlink target, mode, owner, link count, xattrs),
 * the strict e2fsck oracle holds, `qemu-img check` is clean, the EFI partition is the
 * client's, the conflicts are the expected ones, and the overlay shrinks; the new base
 * equals `apply`'s complete output; the inputs hash the same before and after.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { cachedFleet } from '../../fixtures/fleet/makeFleet.mjs';
import type { FleetManifest } from '../../fixtures/fleet/makeFleet.mjs';
import { expectStrictFsckClean } from '../helpers/e2fsck.js';
import { qemuCheck, qemuImg } from '../helpers/qemu.js';
import { imgdedup } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { makeBase, makeClient } from '../helpers/rebaseImages.js';
import { dumpTree } from '../blockdiff/treeOracle.js';
import { debugfsBatch, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-rebase-');

let fleet = '';
let manifest: FleetManifest;
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

interface RebaseJson {
  newBase: string;
  newBaseBytes: number | null;
  clients: Array<{ client: string; output: string; filesUpdated: number; filesKept: number; conflicts: Array<{ path: string; kept: string; what?: string }>; blocksRelocated: number; overlayBytesBefore: number; overlayBytesAfter: number }>;
}

beforeAll(() => {
  const cached = cachedFleet('small');
  manifest = cached.manifest;
  // Used in place (a copy would lose the update tree's owners); rebase never writes its
  // inputs, and the first suite checks that they hash the same afterwards.
  fleet = cached.dir;
}, 300_000);

function part(n: number) {
  return manifest.disk.partitions.find((p) => p.number === n)!;
}

/** A partition of an image (any format, read through its chain) as a raw file. */
function extract(image: string, partition: number, out: string): string {
  const disk = `${out}.disk`;
  qemuImg('convert', '-O', 'raw', image, disk);
  const p = part(partition);
  execFileSync('dd', [`if=${disk}`, `of=${out}`, 'bs=1M', `skip=${p.offsetBytes / 1048576}`, `count=${p.lengthBytes / 1048576}`, 'status=none']);
  return out;
}

function expectSameTree(ours: string, truth: string, work: string): void {
  const a = dumpTree(ours, join(work, 'ours'));
  const b = dumpTree(truth, join(work, 'truth'));
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [p, n] of b) {
    expect(a.get(p)!.type, p).toBe(n.type);
    if (n.type === 'file') expect(Buffer.compare(a.get(p)!.content!, n.content!), p).toBe(0);
    if (n.type === 'symlink') expect(a.get(p)!.target, p).toBe(n.target);
  }
  const paths = [...b.keys()];
  const sa = debugfsBatch(ours, paths.map((p) => `stat "${p}"`)).map(parseStat);
  const sb = debugfsBatch(truth, paths.map((p) => `stat "${p}"`)).map(parseStat);
  paths.forEach((p, i) => {
    const [x, y] = [sa[i]!, sb[i]!];
    expect({ p, mode: x.mode, uid: x.uid, gid: x.gid, links: x.links, type: x.type }).toEqual({ p, mode: y.mode, uid: y.uid, gid: y.gid, links: y.links, type: y.type });
    expect(x.xattrs.map((e) => [e.name, e.value]), p).toEqual(y.xattrs.map((e) => [e.name, e.value]));
  });
}

describe.each(['qcow2', 'vmdk'] as const)('rebase of the small fleet (%s)', (format) => {
  let out = '';
  let result: RebaseJson;
  const inputs = (): string[] => readdirSync(fleet).filter((f) => f.endsWith(`.${format}`)).map((f) => join(fleet, f));
  let hashes: Map<string, string>;

  beforeAll(() => {
    hashes = new Map(inputs().map((f) => [f, sha(f)]));
    out = join(tmp(), `out-${format}`);
    const clients = manifest.clients.map((c) => join(fleet, format === 'qcow2' ? c.qcow2 : c.vmdk));
    const r = imgdedup(['--json', 'rebase', '--verify', join(fleet, `base.${format}`), join(fleet, format === 'qcow2' ? 'updates' : 'updates.tar'), ...clients, '-o', out]);
    expect(r.status, r.stderr).toBe(0);
    result = JSON.parse(r.stdout) as RebaseJson;
  }, 300_000);

  test('--dry-run writes nothing and predicts what the run did: per client the files updated and kept, conflicts, relocations and the overlay file size', () => {
    const dry = join(tmp(), `dry-${format}`);
    const clients = manifest.clients.map((c) => join(fleet, format === 'qcow2' ? c.qcow2 : c.vmdk));
    const r = imgdedup(['--json', 'rebase', '--dry-run', join(fleet, `base.${format}`), join(fleet, format === 'qcow2' ? 'updates' : 'updates.tar'), ...clients, '-o', dry]);
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(dry) ? readdirSync(dry) : []).toEqual([]);
    const plan = JSON.parse(r.stdout) as RebaseJson;
    const figures = (x: RebaseJson) =>
      x.clients.map((c) => ({ client: c.client, filesUpdated: c.filesUpdated, filesKept: c.filesKept, conflicts: c.conflicts, blocksRelocated: c.blocksRelocated, overlayBytesAfter: c.overlayBytesAfter }));
    // The prediction is the file the writer lays out (header and tables too), as the file on disk is (found by a new user: data clusters only).
    expect(figures(plan)).toEqual(figures(result));
    // No new base is made: its size is not given as 0 (found by a new user).
    expect({ newBase: plan.newBase, newBaseBytes: plan.newBaseBytes }).toEqual({ newBase: null, newBaseBytes: null });
    expect(result.newBaseBytes).toBe(statSync(result.newBase).size);
    for (const c of result.clients) expect(statSync(c.output).size).toBe(c.overlayBytesAfter);
  }, 300_000);

  test('inputs are unchanged and DIR holds exactly the new base and the clients', () => {
    for (const [f, h] of hashes) expect(sha(f), f).toBe(h);
    expect(readdirSync(out).sort()).toEqual([`base.${format}`, ...manifest.clients.map((c) => `${c.name}.${format}`)].sort());
  });

  test('the new base is complete, strictly clean, has the update, and equals the truth of the updated root', () => {
    const info = qemuImg('info', '--output=json', join(out, `base.${format}`));
    expect(info).not.toContain('backing-filename');
    const root = extract(join(out, `base.${format}`), manifest.rootPartition, join(tmp(), `${format}-newbase.ext4`));
    expectStrictFsckClean(root);
    expectSameTree(root, join(fleet, manifest.update.truth), join(tmp(), `${format}-cmp-base`));
  }, 120_000);

  test.each([0, 1, 2, 3])('client %i: tree equals the truth, strictly clean, EFI kept, conflicts as expected, overlay smaller', (i) => {
    const c = manifest.clients[i]!;
    const file = join(out, `${c.name}.${format}`);
    expect(existsSync(file)).toBe(true);
    if (format === 'qcow2') expect(qemuCheck(file).clean).toBe(true);
    expect(qemuImg('info', file)).toMatch(new RegExp(`backing file: base\\.${format}`));
    const root = extract(file, manifest.rootPartition, join(tmp(), `${format}-${c.name}.ext4`));
    expectStrictFsckClean(root);
    expectSameTree(root, join(fleet, c.truth), join(tmp(), `${format}-cmp-${c.name}`));
    // The EFI partition is the client's.
    const efi = part(manifest.efiPartition);
    const ours = readFileSync(`${root}.disk`).subarray(efi.offsetBytes, efi.offsetBytes + efi.lengthBytes);
    const theirs = readFileSync(extract(join(fleet, format === 'qcow2' ? c.qcow2 : c.vmdk), manifest.rootPartition, join(tmp(), `${format}-${c.name}-in.ext4`)) + '.disk').subarray(efi.offsetBytes, efi.offsetBytes + efi.lengthBytes);
    expect(Buffer.compare(ours, theirs)).toBe(0);
    const report = result.clients.find((r) => r.output.endsWith(`${c.name}.${format}`))!;
    expect(report.conflicts.map((x) => x.path).sort()).toEqual(c.conflicts.map((x) => x.path).sort());
    expect(report.conflicts.every((x) => x.kept === 'client')).toBe(true);
    expect(statSync(file).size).toBe(report.overlayBytesAfter);
    // Every client is known when T is built, so nothing of T's is in a client's way (a client that
    // reused the blocks of a file it replaced had M's old copy of that file relocated before).
    expect(report.blocksRelocated).toBe(0);
  }, 120_000);
});

describe('rebase refusals', () => {
  test('--conflict fail exits 3 and writes nothing', () => {
    const out = join(tmp(), 'out-fail');
    const c4 = manifest.clients.find((c) => c.conflicts.length > 0)!;
    const r = imgdedup(['rebase', '--conflict', 'fail', join(fleet, 'base.qcow2'), join(fleet, 'updates'), join(fleet, c4.qcow2), '-o', out]);
    expect(r.status, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/MERGE_CONFLICT/);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  }, 120_000);

  test('a client on another base, and a client whose filesystem is dirty, are refused (exit 2) with nothing written', () => {
    const other = join(tmp(), 'other.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', join(fleet, 'client1.qcow2'), '-F', 'qcow2', other);
    const notOnBase = join(tmp(), 'stranger.qcow2');
    qemuImg('create', '-f', 'qcow2', notOnBase, String(manifest.disk.bytes));
    const out = join(tmp(), 'out-bad');
    let r = imgdedup(['rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates'), notOnBase, '-o', out]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/WRONG_BASE/);
    // A dirty client: client 1 with its root marked "not cleanly unmounted" by debugfs, as an overlay on the base.
    const raw = join(tmp(), 'dirty.raw');
    qemuImg('convert', '-O', 'raw', join(fleet, 'client1.qcow2'), raw);
    const root = part(manifest.rootPartition);
    execFileSync('debugfs', ['-w', '-R', 'ssv state 0', `${raw}?offset=${root.offsetBytes}`], { stdio: 'ignore' });
    const dirty = join(tmp(), 'dirty.qcow2');
    qemuImg('convert', '-O', 'qcow2', '-B', join(fleet, 'base.qcow2'), '-F', 'qcow2', raw, dirty);
    r = imgdedup(['rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates'), dirty, '-o', out]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/DIRTY_FILESYSTEM.*shut the VM down cleanly or fsck it/);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  }, 120_000);

  test("a client's corrupt root is a typed error giving the disk byte and the filesystem byte (found by a new user)", () => {
    // Client 1 with a byte of its root's first inode bitmap flipped (its checksum no longer holds).
    const raw = join(tmp(), 'badbitmap.raw');
    qemuImg('convert', '-O', 'raw', join(fleet, 'client1.qcow2'), raw);
    const root = part(manifest.rootPartition);
    const stats = execFileSync('debugfs', ['-R', 'stats', `${raw}?offset=${root.offsetBytes}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const bs = Number(/Block size:\s+(\d+)/.exec(stats)![1]);
    const block = Number(/Group\s+0:.*?inode bitmap at (\d+)/s.exec(stats)![1]);
    const at = root.offsetBytes + block * bs + 1;
    const fd = openSync(raw, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
    const bad = join(tmp(), 'badbitmap.qcow2');
    qemuImg('convert', '-O', 'qcow2', '-B', join(fleet, 'base.qcow2'), '-F', 'qcow2', raw, bad);
    const out = join(tmp(), 'out-badbitmap');
    const r = imgdedup(['--json', 'rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates'), bad, '-o', out]);
    expect(r.status, r.stderr).toBe(2);
    const err = JSON.parse(r.stderr) as { code: string; data: Record<string, unknown> };
    expect(err.code).toBe('BAD_CHECKSUM');
    expect(err.data).toMatchObject({ file: `${bad}:${manifest.rootPartition}`, structure: 'ext4.inode_bitmap[0]', deviceOffset: root.offsetBytes + block * bs, fsOffset: block * bs });
    expect(err.data['offset'], 'a qcow2 file byte is not the disk byte').toBeUndefined();
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  }, 120_000);

  test('a discovered client that has an image of its own on top is refused; named explicitly, it is rebased', () => {
    const d = join(tmp(), 'discover');
    mkdirSync(d);
    copyFileSync(join(fleet, 'base.qcow2'), join(d, 'base.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'vm.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'vm.qcow2', '-F', 'qcow2', join(d, 'vm-snapshot.qcow2'));
    const r = imgdedup(['rebase', join(d, 'base.qcow2'), join(fleet, 'updates.tar'), '-o', join(d, 'out')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/vm-snapshot\.qcow2.*name the clients to rebase explicitly/);
    const named = imgdedup(['rebase', join(d, 'base.qcow2'), join(fleet, 'updates.tar'), join(d, 'vm.qcow2'), '-o', join(d, 'out')]);
    expect(named.status, named.stderr).toBe(0);
  }, 120_000);

  test('--verify runs the strict e2fsck oracle: a finding is VERIFY_FAILED (exit 4), outputs left for inspection', () => {
    // An e2fsck that passes but has something to say: the strict oracle must reject that.
    const bin = join(tmp(), 'fake-bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'e2fsck'), '#!/bin/sh\n[ "$1" = "-V" ] && exit 0\necho "e2fsck 1.47.0 (5-Feb-2023)"\necho "Inode 12 has a funny smell.  Clear? no"\nexit 0\n', { mode: 0o755 });
    const out = join(tmp(), 'out-verify');
    const r = imgdedup(['rebase', '--verify', join(fleet, 'base.qcow2'), join(fleet, 'updates.tar'), join(fleet, 'client4.qcow2'), '-o', out], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    expect(r.status, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/VERIFY_FAILED.*funny smell/);
    expect(readdirSync(out).sort()).toEqual(['base.qcow2', 'client4.qcow2']);
  }, 120_000);

  test("a directory the client replaced by a symlink or a file, and the update adds to, is a conflict; a client change below a directory the update deletes keeps the client's whole directory (found by new users)", () => {
    const d = join(tmp(), 'replaceddir');
    mkdirSync(join(d, 'tree/opt/plugins/old'), { recursive: true });
    mkdirSync(join(d, 'tree/opt/gone/sub'), { recursive: true });
    writeFileSync(join(d, 'tree/opt/plugins/b'), 'b\n');
    writeFileSync(join(d, 'tree/opt/plugins/old/a'), 'a\n');
    writeFileSync(join(d, 'tree/opt/gone/sub/f'), 'f\n');
    writeFileSync(join(d, 'tree/opt/gone/sub/g'), 'g\n');
    mkdirSync(join(d, 'upd/opt/plugins'), { recursive: true });
    writeFileSync(join(d, 'upd/opt/plugins/c'), 'c\n');
    writeFileSync(join(d, 'upd/opt/.wh.gone'), '');
    makeBase(d, 32, []);
    const unplug = 'rm /opt/plugins/b\nrm /opt/plugins/old/a\nrmdir /opt/plugins/old\nrmdir /opt/plugins\n';
    makeClient(d, 'link', `${unplug}mkdir /srv\nsymlink /opt/plugins /srv\n`);
    writeFileSync(join(d, 'mine'), 'mine\n');
    makeClient(d, 'file', `${unplug}write ${join(d, 'mine')} /opt/plugins\n`);
    makeClient(d, 'keep', `rm /opt/gone/sub/f\nwrite ${join(d, 'mine')} /opt/gone/sub/f\n`);
    const clients = ['link', 'file', 'keep'].map((n) => join(d, `${n}.qcow2`));
    // Before, the symlink and the file won silently (the update's plugins/c lost, exit 0), and
    // the file under the deleted directory failed as BAD_UPDATE "parent directory does not exist".
    const fail = imgdedup(['--json', 'rebase', '--conflict', 'fail', join(d, 'base.qcow2'), join(d, 'upd'), ...clients, '-o', join(d, 'o-fail')]);
    expect(fail.status, fail.stderr).toBe(3);
    expect((JSON.parse(fail.stderr) as { data: { clients: Array<{ client: string; paths: string[] }> } }).data.clients).toEqual([
      { client: clients[0], paths: ['/opt/plugins'] },
      { client: clients[1], paths: ['/opt/plugins'] },
      // The directory kept whole is the conflict; what the client changed below it follows it and is not listed again (found by a new user).
      { client: clients[2], paths: ['/opt/gone'] },
    ]);
    const tree = (img: string, ...cmds: string[]): string[] => {
      const raw = `${img}.raw`;
      qemuImg('convert', '-O', 'raw', img, raw);
      expectStrictFsckClean(raw);
      return debugfsBatch(raw, cmds);
    };
    const keep = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), ...clients, '-o', join(d, 'o-keep')]);
    expect(keep.status, keep.stderr).toBe(0);
    const [linkStat] = tree(join(d, 'o-keep/link.qcow2'), 'stat /opt/plugins');
    expect(linkStat).toMatch(/Type: symlink/);
    const [fileStat] = tree(join(d, 'o-keep/file.qcow2'), 'stat /opt/plugins');
    expect(fileStat).toMatch(/Type: regular\s+Mode:\s+0644/);
    // The client's directory comes back whole: the file it changed, and g, which it has from the base
    // (rebase.merge.integ.test.ts has these resolutions against debugfs-made trees).
    const [sub, f] = tree(join(d, 'o-keep/keep.qcow2'), 'ls /opt/gone/sub', 'cat /opt/gone/sub/f');
    expect(sub).toMatch(/\bf\b/);
    expect(sub).toMatch(/\bg\b/);
    expect(f).toBe('mine\n');
    const take = imgdedup(['--json', 'rebase', '--conflict', 'take-update', join(d, 'base.qcow2'), join(d, 'upd'), ...clients, '-o', join(d, 'o-take')]);
    expect(take.status, take.stderr).toBe(0);
    for (const n of ['link', 'file']) {
      const [ls] = tree(join(d, `o-take/${n}.qcow2`), 'ls /opt/plugins');
      // The update's directory, whole: what it added and the base's entries it kept (the client deleted those).
      expect(ls).toMatch(/\bc\b/);
      expect(ls).toMatch(/\bold\b/);
      expect(ls).toMatch(/\bb\b/);
    }
    const [opt] = tree(join(d, 'o-take/keep.qcow2'), 'ls /opt');
    expect(opt).toMatch(/\bplugins\b/);
    expect(opt).not.toMatch(/\bgone\b/);
  }, 180_000);

  test('a directory the client deleted and the update adds to is a conflict, resolved as asked (found by a new user)', () => {
    const d = join(tmp(), 'deldir');
    mkdirSync(join(d, 'tree/data/deldir'), { recursive: true });
    writeFileSync(join(d, 'tree/data/deldir/a'), 'a\n');
    writeFileSync(join(d, 'tree/data/keep.txt'), 'k\n');
    mkdirSync(join(d, 'upd/data/deldir'), { recursive: true });
    writeFileSync(join(d, 'upd/data/deldir/newfile'), 'new\n');
    makeBase(d, 32, []);
    makeClient(d, 'c1', 'rm /data/deldir/a\nrmdir /data/deldir\n');
    // A second client with a conflict of its own (it rewrote the file the update adds), and a third with none.
    writeFileSync(join(d, 'c2-newfile'), 'mine\n');
    makeClient(d, 'c2', `write ${join(d, 'c2-newfile')} /data/deldir/newfile\n`);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'c3.qcow2'));
    const fail = imgdedup(['--json', 'rebase', '--conflict', 'fail', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), join(d, 'c3.qcow2'), join(d, 'c2.qcow2'), '-o', join(d, 'o-fail')]);
    expect(fail.status, fail.stderr).toBe(3);
    expect(existsSync(join(d, 'o-fail'))).toBe(false);
    // Every client's conflicts are reported together, not only the first one's.
    const err = JSON.parse(fail.stderr) as { code: string; data: { clients: Array<{ client: string; paths: string[] }> } };
    expect(err.code).toBe('MERGE_CONFLICT');
    expect(err.data.clients).toEqual([
      { client: join(d, 'c1.qcow2'), paths: ['/data/deldir'] },
      { client: join(d, 'c2.qcow2'), paths: ['/data/deldir/newfile'] },
    ]);
    const take = imgdedup(['--json', 'rebase', '--conflict', 'take-update', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'o-take')]);
    expect(take.status, take.stderr).toBe(0);
    expect((JSON.parse(take.stdout) as RebaseJson).clients[0]!.conflicts).toEqual([{ path: '/data/deldir', kept: 'update', what: 'path' }]);
    qemuImg('convert', '-O', 'raw', join(d, 'o-take/c1.qcow2'), join(d, 'take.raw'));
    expectStrictFsckClean(join(d, 'take.raw'));
    const [ls] = debugfsBatch(join(d, 'take.raw'), ['ls /data/deldir']);
    // The update's directory, whole: its newfile and the base's a it kept (the client had deleted both).
    expect(ls).toMatch(/newfile/);
    expect(ls).toMatch(/\ba\b/);
  }, 120_000);

  test("a client whose root filesystem was resized or retuned is refused naming the field (it would be silently undone), and bytes a client wrote past the filesystem's end are kept (found by a new user)", () => {
    const d = join(tmp(), 'layout');
    mkdirSync(join(d, 'tree/data'), { recursive: true });
    writeFileSync(join(d, 'tree/data/keep.txt'), 'k\n');
    mkdirSync(join(d, 'upd/opt'), { recursive: true });
    writeFileSync(join(d, 'upd/opt/new.txt'), 'new\n');
    // The filesystem fills 24 of the disk's 32 MiB, as a base made for growing later.
    execFileSync('truncate', ['-s', '32M', join(d, 'base.raw')]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', join(d, 'tree'), join(d, 'base.raw'), '24M'], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' } });
    qemuImg('convert', '-O', 'qcow2', join(d, 'base.raw'), join(d, 'base.qcow2'));
    const resized = (name: string, args: string[]): string => {
      const raw = join(d, `${name}.raw`);
      execFileSync('cp', [join(d, 'base.raw'), raw]);
      execFileSync('resize2fs', ['-f', raw, ...args], { stdio: 'ignore' });
      // resize2fs shrinks an image file with its filesystem: the disk keeps its size.
      execFileSync('truncate', ['-s', '32M', raw]);
      qemuImg('convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', raw, join(d, `${name}.qcow2`));
      return join(d, `${name}.qcow2`);
    };
    const cases: Array<[string, string]> = [
      [resized('grown', ['32M']), 's_blocks_count_lo'],
      [resized('shrunk', ['20M']), 's_blocks_count_lo'],
      [makeClient(d, 'nojournal', '', [['-O', '^has_journal']]), 's_feature_compat'],
    ];
    for (const [client, field] of cases) {
      const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), client, '-o', join(d, 'out')]);
      expect(r.status, r.stderr).toBe(2);
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'SIZE_MISMATCH', data: { file: client, structure: `ext4.superblock.${field}` } });
      expect(existsSync(join(d, 'out'))).toBe(false);
    }
    // A base with metadata_csum_seed: a client that turned it off would get it back (found by a new user).
    const seeded = join(d, 'seeded');
    mkdirSync(seeded);
    execFileSync('cp', ['-r', join(d, 'tree'), join(d, 'upd'), seeded]);
    makeBase(seeded, 32, ['-b', '4096', '-O', 'metadata_csum_seed']);
    const noSeed = makeClient(seeded, 'noseed', '', [['-O', '^metadata_csum_seed']]);
    const seedRun = imgdedup(['--json', 'rebase', join(seeded, 'base.qcow2'), join(seeded, 'upd'), noSeed, '-o', join(seeded, 'out')]);
    expect(seedRun.status, seedRun.stderr).toBe(2);
    expect(JSON.parse(seedRun.stderr)).toMatchObject({ code: 'SIZE_MISMATCH', data: { file: noSeed, structure: 'ext4.superblock.s_feature_incompat' } });
    expect(existsSync(join(seeded, 'out'))).toBe(false);
    // Same layout, and a MiB of the client's own past the filesystem (within the disk): it stays the client's.
    const tail = join(d, 'tail.bin');
    execFileSync('dd', ['if=/dev/urandom', `of=${tail}`, 'bs=1M', 'count=1', 'status=none']);
    const raw = join(d, 'tail.raw');
    execFileSync('cp', [join(d, 'base.raw'), raw]);
    execFileSync('dd', [`if=${tail}`, `of=${raw}`, 'bs=1M', 'seek=28', 'conv=notrunc', 'status=none']);
    qemuImg('convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', raw, join(d, 'tail.qcow2'));
    const ok = imgdedup(['rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'tail.qcow2'), '-o', join(d, 'out-tail')]);
    expect(ok.status, ok.stderr).toBe(0);
    qemuImg('convert', '-O', 'raw', join(d, 'out-tail/tail.qcow2'), join(d, 'tail-out.raw'));
    expect(readFileSync(join(d, 'tail-out.raw')).subarray(28 << 20, 29 << 20).equals(readFileSync(tail))).toBe(true);
    expectStrictFsckClean(join(d, 'tail-out.raw'));
  }, 120_000);

  test('what a client added in a directory the update makes opaque is a conflict, resolved as asked, as a whiteout of the directory is (found by a new user)', () => {
    const d = join(tmp(), 'opaque');
    mkdirSync(join(d, 'tree/lib/mime'), { recursive: true });
    writeFileSync(join(d, 'tree/lib/mime/old.py'), 'old\n');
    writeFileSync(join(d, 'tree/lib/keep.txt'), 'k\n');
    // The update: /lib/mime holds only what it ships (OCI opaque marker).
    mkdirSync(join(d, 'upd/lib/mime'), { recursive: true });
    writeFileSync(join(d, 'upd/lib/mime/new.py'), 'new\n');
    writeFileSync(join(d, 'upd/lib/mime/.wh..wh..opq'), '');
    makeBase(d, 32, ['-b', '4096']);
    writeFileSync(join(d, 'mine'), 'mine\n');
    const c1 = makeClient(d, 'c1', `mkdir /lib/mime/cdir\nwrite ${join(d, 'mine')} /lib/mime/cdir/cf\n`);
    const fail = imgdedup(['--json', 'rebase', '--conflict', 'fail', join(d, 'base.qcow2'), join(d, 'upd'), c1, '-o', join(d, 'o-fail')]);
    expect(fail.status, fail.stderr).toBe(3);
    expect(existsSync(join(d, 'o-fail'))).toBe(false);
    for (const [policy, present] of [['take-update', false], ['keep-client', true]] as const) {
      const out = join(d, `o-${policy}`);
      const r = imgdedup(['--json', 'rebase', '--conflict', policy, join(d, 'base.qcow2'), join(d, 'upd'), c1, '-o', out]);
      expect(r.status, r.stderr).toBe(0);
      // The directory is the conflict, its file follows it (found by a new user: both were listed).
      expect((JSON.parse(r.stdout) as RebaseJson).clients[0]!.conflicts.map((x) => x.path)).toEqual(['/lib/mime/cdir']);
      const raw = join(d, `${policy}.raw`);
      qemuImg('convert', '-O', 'raw', join(out, 'c1.qcow2'), raw);
      expectStrictFsckClean(raw);
      // Oracle: debugfs's listing of the merged directory; the update's file is there either way, the base's old one never.
      const [ls] = debugfsBatch(raw, ['ls /lib/mime']);
      expect(ls).toMatch(/new\.py/);
      expect(ls).not.toMatch(/old\.py/);
      expect(/\bcdir\b/.test(ls!)).toBe(present);
    }
  }, 120_000);

  test('an update that fits the base but not the room the clients leave is NO_SPACE saying so, and nothing is written', () => {
    const d = join(tmp(), 'nospace');
    mkdirSync(join(d, 'tree/data'), { recursive: true });
    writeFileSync(join(d, 'tree/data/keep.txt'), 'k\n');
    mkdirSync(join(d, 'upd/opt'), { recursive: true });
    execFileSync('dd', ['if=/dev/urandom', `of=${join(d, 'upd/opt/big.bin')}`, 'bs=1M', 'count=12', 'status=none']);
    makeBase(d, 32, ['-b', '4096']);
    execFileSync('dd', ['if=/dev/urandom', `of=${join(d, 'own.bin')}`, 'bs=1M', 'count=16', 'status=none']);
    makeClient(d, 'c1', `write ${join(d, 'own.bin')} /data/own.bin\n`);
    // The base alone takes the update.
    expect(imgdedup(['apply', join(d, 'base.qcow2'), join(d, 'upd'), '-o', join(d, 'applied.qcow2')]).status).toBe(0);
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(2);
    const err = JSON.parse(r.stderr) as { code: string; message: string };
    expect(err.code).toBe('NO_SPACE');
    expect(err.message).toMatch(/free in the base and in every client \(1\)/);
    expect(existsSync(join(d, 'out')) ? readdirSync(join(d, 'out')) : []).toEqual([]);
  }, 120_000);

  test("damage in the base beside what the update touches is refused before T is written: it would reach the new base and every client (found by a new user)", () => {
    const d = join(tmp(), 'damagedbase');
    mkdirSync(join(d, 'tree/etc'), { recursive: true });
    writeFileSync(join(d, 'tree/etc/motd'), 'hello\n');
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    writeFileSync(join(d, 'upd/etc/motd'), 'patched\n');
    execFileSync('ln', ['-s', 'etc/motd', join(d, 'tree/ln')]);
    makeBase(d, 32, ['-b', '4096']);
    const ino = Number(/^\s*(\d+)\s.*\sln\s*$/m.exec(execFileSync('debugfs', ['-R', 'ls -l /', join(d, 'base.raw')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))![1]);
    // The symlink's inode says directory (e2fsck: "Entry 'ln' in / (2) has an incorrect filetype").
    execFileSync('debugfs', ['-w', '-R', 'sif /ln mode 040755', join(d, 'base.raw')], { stdio: 'ignore' });
    qemuImg('convert', '-O', 'qcow2', join(d, 'base.raw'), join(d, 'base.qcow2'));
    makeClient(d, 'c1', '');
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: { structure: `ext4.inode[${ino}].i_mode` } });
    expect(existsSync(join(d, 'out')) ? readdirSync(join(d, 'out')) : []).toEqual([]);
  }, 120_000);

  test('replaced files need new inodes the clients do not use: too few is NO_SPACE with the inode counts, before anything is written (found by a new user)', () => {
    const d = join(tmp(), 'noinodes');
    mkdirSync(join(d, 'tree/etc'), { recursive: true });
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    for (let i = 0; i < 12; i++) {
      writeFileSync(join(d, `tree/etc/f${i}`), `old ${i}\n`);
      writeFileSync(join(d, `upd/etc/f${i}`), `new ${i}\n`);
    }
    makeBase(d, 32, ['-b', '4096', '-N', '32']);
    const free = Number(/Free inodes:\s+(\d+)/.exec(execFileSync('dumpe2fs', ['-h', join(d, 'base.raw')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))![1]);
    expect(free, 'fewer free inodes than replaced files, yet some').toBeGreaterThan(0);
    expect(free).toBeLessThan(12);
    makeClient(d, 'c1', '');
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(2);
    const err = JSON.parse(r.stderr) as { code: string; message: string; data: { inodesNeeded: number; inodesFree: number } };
    expect(err.code).toBe('NO_SPACE');
    expect(err.data).toMatchObject({ inodesNeeded: 12, inodesFree: free });
    expect(existsSync(join(d, 'out')) ? readdirSync(join(d, 'out')) : []).toEqual([]);
  }, 120_000);

  test('update entries the base already holds as they are are left alone, as apply leaves them (found by a new user)', () => {
    const d = join(tmp(), 'unchanged');
    mkdirSync(join(d, 'tree/etc'), { recursive: true });
    writeFileSync(join(d, 'tree/etc/hostname'), 'golden\n');
    // Whole seconds: mkfs.ext4 -d keeps no nanoseconds, and the update's copy must match the base's exactly.
    execFileSync('touch', ['-d', '@1600000000', join(d, 'tree/etc/hostname')]);
    writeFileSync(join(d, 'tree/etc/motd'), 'old\n');
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    execFileSync('cp', ['-p', join(d, 'tree/etc/hostname'), join(d, 'upd/etc/hostname')]);
    writeFileSync(join(d, 'upd/etc/motd'), 'new\n');
    makeBase(d, 32, []);
    const [before] = debugfsBatch(join(d, 'base.raw'), ['stat /etc/hostname']);
    makeClient(d, 'c1', '');
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    // /etc/hostname is unchanged; /etc/motd is replaced (and the directories take the tree's times).
    expect((JSON.parse(r.stdout) as { update: { unchanged: number } }).update.unchanged).toBe(1);
    const raw = join(d, 'newbase.raw');
    qemuImg('convert', '-O', 'raw', join(d, 'out/base.qcow2'), raw);
    expectStrictFsckClean(raw);
    const [after, motd] = debugfsBatch(raw, ['stat /etc/hostname', 'cat /etc/motd']);
    // The same inode, untouched (a rewrite would have given it a new inode and new blocks).
    expect(/Inode: (\d+)/.exec(after!)![1]).toBe(/Inode: (\d+)/.exec(before!)![1]);
    expect(motd).toBe('new\n');
  }, 120_000);

  test("a client keeps its own filesystem settings (label, UUID, error behaviour, mount count), chattr flags and directory times (found by a new user)", () => {
    const d = join(tmp(), 'owner');
    mkdirSync(join(d, 'tree/etc'), { recursive: true });
    mkdirSync(join(d, 'tree/srv/d'), { recursive: true });
    writeFileSync(join(d, 'tree/etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    writeFileSync(join(d, 'tree/srv/d/f'), 'f\n');
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    writeFileSync(join(d, 'upd/etc/patched'), 'patched\n');
    makeBase(d, 64, ['-b', '1024']);
    const uuid = '11111111-2222-3333-4444-555555555555';
    const c1 = makeClient(d, 'c1', `sif /etc/passwd flags 0x80010\nwrite ${join(d, 'tree/etc/passwd')} /srv/d/mine\nsif /srv/d mtime 200001010000\n`, [
      ['-L', 'CLIENTLBL', '-e', 'remount-ro', '-C', '7', '-o', 'journal_data_writeback'],
      ['-O', 'metadata_csum_seed', '-U', uuid],
      // RAID geometry and the test flag (found by another new user: reset to the base's).
      ['-E', 'stride=8,stripe_width=16,test_fs,hash_alg=tea'],
    ]);
    const r = imgdedup(['rebase', join(d, 'base.qcow2'), join(d, 'upd'), c1, '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    qemuImg('convert', '-O', 'raw', join(d, 'out/c1.qcow2'), join(d, 'out.raw'));
    expectStrictFsckClean(join(d, 'out.raw'));
    const head = execFileSync('dumpe2fs', ['-h', join(d, 'out.raw')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(head).toMatch(/Filesystem volume name:\s+CLIENTLBL/);
    expect(head).toMatch(new RegExp(`Filesystem UUID:\\s+${uuid}`));
    expect(head).toMatch(/Errors behavior:\s+Remount read-only/);
    expect(head).toMatch(/Mount count:\s+7/);
    expect(head).toMatch(/Default mount options:\s+.*journal_data_writeback/);
    expect(head).toMatch(/RAID stride:\s+8\n/);
    expect(head).toMatch(/RAID stripe width:\s+16\n/);
    expect(head).toMatch(/Filesystem flags:\s+.*test_filesystem/);
    // The default hash of directories indexed from now on (each indexed directory records its own).
    expect(head).toMatch(/Default directory hash:\s+tea/);
    const [passwd, dir, patched] = debugfsBatch(join(d, 'out.raw'), ['stat /etc/passwd', 'stat /srv/d', 'cat /etc/patched']);
    expect(passwd).toMatch(/Flags: 0x80010/);
    expect(dir).toMatch(/mtime: 0x386d4380/);
    expect(patched).toBe('patched\n');
    // A UUID changed with every checksum rewritten cannot be carried over the base's metadata: refused before anything is written.
    const c2 = makeClient(d, 'c2', '', [['-U', uuid]]);
    const bad = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), c2, '-o', join(d, 'out2')]);
    expect(bad.status, bad.stderr).toBe(2);
    expect(JSON.parse(bad.stderr)).toMatchObject({ code: 'WRITE_REFUSED', data: { file: c2, structure: 'ext4.superblock.s_uuid' } });
    expect(existsSync(join(d, 'out2')) ? readdirSync(join(d, 'out2')) : []).toEqual([]);
  }, 120_000);

  test('a client with internal snapshots is refused (they would be lost); discovery names what it skipped (found by a new user)', () => {
    const d = join(tmp(), 'snaps');
    mkdirSync(join(d, 'tree'), { recursive: true });
    writeFileSync(join(d, 'tree/f'), 'f\n');
    mkdirSync(join(d, 'upd'), { recursive: true });
    writeFileSync(join(d, 'upd/g'), 'g\n');
    makeBase(d, 32, []);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'vm.qcow2'));
    qemuImg('snapshot', '-c', 'before-patch', join(d, 'vm.qcow2'));
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'vm.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'UNSUPPORTED_FEATURE', data: { file: join(d, 'vm.qcow2'), feature: 'internal snapshots' } });
    expect(existsSync(join(d, 'out')) ? readdirSync(join(d, 'out')) : []).toEqual([]);
    // Discovery: an image whose backing file is missing is reported, not skipped in silence.
    qemuImg('snapshot', '-d', 'before-patch', join(d, 'vm.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2', '-u', join(d, 'lost.qcow2'), '32M');
    const found = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), '-o', join(d, 'out')]);
    expect(found.status, found.stderr).toBe(0);
    const report = JSON.parse(found.stdout) as { clients: Array<{ client: string }>; warnings: string[] };
    expect(report.clients.map((c) => c.client)).toEqual([join(d, 'vm.qcow2')]);
    expect(report.warnings.join('\n')).toMatch(/lost\.qcow2 skipped: its backing file .*gone\.qcow2 is missing/);
  }, 120_000);

  test("a client's inline-data file keeps its inode number and content", () => {
    const d = join(tmp(), 'inline');
    mkdirSync(join(d, 'tree/data'), { recursive: true });
    writeFileSync(join(d, 'tree/data/keep.txt'), 'k\n');
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    writeFileSync(join(d, 'upd/etc/patched'), 'patched\n');
    makeBase(d, 32, ['-O', 'inline_data', '-I', '256']);
    writeFileSync(join(d, 'small'), 'a small file the client wrote\n');
    makeClient(d, 'c1', `write ${join(d, 'small')} /data/small\n`);
    const [before] = debugfsBatch(join(d, 'c1.raw'), ['stat /data/small']);
    expect(before).toMatch(/Size of inline data/);
    const ino = /Inode: (\d+)/.exec(before!)![1];
    const r = imgdedup(['rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    qemuImg('convert', '-O', 'raw', join(d, 'out/c1.qcow2'), join(d, 'out.raw'));
    expectStrictFsckClean(join(d, 'out.raw'));
    const [after, cat, patched] = debugfsBatch(join(d, 'out.raw'), ['stat /data/small', 'cat /data/small', 'cat /etc/patched']);
    expect(/Inode: (\d+)/.exec(after!)![1]).toBe(ino);
    expect(cat).toBe('a small file the client wrote\n');
    expect(patched).toBe('patched\n');
  }, 120_000);

  test('-o naming a file, or a place that cannot be made, fails before any work and leaves nothing', () => {
    const file = join(tmp(), 'not-a-dir');
    writeFileSync(file, 'x');
    const r1 = imgdedup(['rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates.tar'), join(fleet, 'client4.qcow2'), '-o', file]);
    expect(r1.status).toBe(1);
    expect(r1.stderr).toMatch(/exists and is not a directory/);
    const r2 = imgdedup(['rebase', join(fleet, 'base.qcow2'), join(fleet, 'updates.tar'), join(fleet, 'client4.qcow2'), '-o', '/proc/imgdedup-nothere/out']);
    expect(r2.status).toBe(5);
    expect(r2.stderr).not.toMatch(/apply/);
  }, 60_000);
});
