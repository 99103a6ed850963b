/**
 * The three-way merge of `imgdedup rebase` (DESIGN.md, "Semantics of a rebase") on small
 * filesystems, against trees debugfs makes: a conflict where one side has a directory and
 * the other has not is resolved for the whole directory ("kept the client's version" is
 * the client's directory as the client sees it, what it inherited from the base too;
 * "took the update's" is the update's directory, the base's entries it kept too); an
 * inline_data filesystem merges as one without (found by an outside tester).
 */
import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { expectStrictFsckClean } from '../helpers/e2fsck.js';
import { qemuImg } from '../helpers/qemu.js';
import { imgdedup } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { edited, makeBase, makeClient } from '../helpers/rebaseImages.js';
import { dumpTree } from '../blockdiff/treeOracle.js';
import { debugfsBatch, parseStat, type DebugfsStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-rebase-merge-');

interface RebaseJson {
  clients: Array<{ client: string; conflicts: Array<{ path: string; kept: string; what?: string }> }>;
}

/** The client's output of a rebase as a raw file, strictly clean. */
function output(dir: string, client: string): string {
  const raw = join(dir, `${client}.out.raw`);
  qemuImg('convert', '-O', 'raw', join(dir, `${client}.qcow2`), raw);
  expectStrictFsckClean(raw);
  return raw;
}

/**
 * The two filesystems hold the same tree: names, types, contents, symlink targets, modes,
 * owners and xattrs (system.data, where inline data keeps its overflow, left out). A file's
 * content is its first `Size` bytes: debugfs dumps an inline file's whole inline area.
 */
function expectSameTree(ours: string, oracle: string): void {
  const a = dumpTree(ours, `${ours}.dump`);
  const b = dumpTree(oracle, `${oracle}.dump`);
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  const paths = [...b.keys()];
  const sa = debugfsBatch(ours, paths.map((p) => `stat "${p}"`)).map(parseStat);
  const sb = debugfsBatch(oracle, paths.map((p) => `stat "${p}"`)).map(parseStat);
  const seen = (x: DebugfsStat) => ({ mode: x.mode, uid: x.uid, gid: x.gid, xattrs: x.xattrs.filter((e) => e.name !== 'system.data').map((e) => [e.name, e.value]) });
  paths.forEach((p, i) => {
    const [x, y, n] = [sa[i]!, sb[i]!, b.get(p)!];
    expect(a.get(p)!.type, p).toBe(n.type);
    expect({ p, ...seen(x) }).toEqual({ p, ...seen(y) });
    if (n.type === 'file') {
      expect(x.size, p).toBe(y.size);
      expect(a.get(p)!.content!.subarray(0, x.size).toString('latin1'), p).toBe(n.content!.subarray(0, y.size).toString('latin1'));
    }
    if (n.type === 'symlink') expect(a.get(p)!.target, p).toBe(n.target);
  });
}

describe('a conflict between a directory and something else is resolved for the whole directory (found by an outside tester)', () => {
  const d = (): string => join(tmp(), 'dirconflict');
  const rebase = (update: string, policy: string, out: string, ...clients: string[]): RebaseJson => {
    const r = imgdedup(['--json', 'rebase', '--conflict', policy, join(d(), 'base.qcow2'), join(d(), update), ...clients.map((c) => join(d(), `${c}.qcow2`)), '-o', join(d(), out)]);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as RebaseJson;
  };
  const conflicts = (r: RebaseJson, client: string): Array<{ path: string; kept: string }> => r.clients.find((c) => c.client.endsWith(`/${client}.qcow2`))!.conflicts;
  // What the update does, by debugfs: /srv/olddir becomes a file, /srv/adddir gets b.
  const olddirToFile = (d0: string): string =>
    `rm /srv/olddir/sub/x\nrmdir /srv/olddir/sub\nrm /srv/olddir/y\nrmdir /srv/olddir\nwrite ${join(d0, 'upd/srv/olddir')} /srv/olddir\n`;
  const addB = (d0: string): string => `write ${join(d0, 'upd/srv/adddir/b')} /srv/adddir/b\n`;

  beforeAll(() => {
    const t = join(d(), 'tree/srv');
    mkdirSync(join(t, 'olddir/sub'), { recursive: true });
    mkdirSync(join(t, 'adddir'), { recursive: true });
    writeFileSync(join(t, 'olddir/y'), 'y\n');
    writeFileSync(join(t, 'olddir/sub/x'), 'olddir\n');
    writeFileSync(join(t, 'adddir/a'), 'a\n');
    writeFileSync(join(t, 'keep'), 'k\n');
    mkdirSync(join(d(), 'upd/srv/adddir'), { recursive: true });
    writeFileSync(join(d(), 'upd/srv/olddir'), 'olddir is now a file\n');
    writeFileSync(join(d(), 'upd/srv/adddir/b'), 'b\n');
    // The same deletion as an OCI whiteout.
    mkdirSync(join(d(), 'updwh/srv'), { recursive: true });
    writeFileSync(join(d(), 'updwh/srv/.wh.olddir'), '');
    writeFileSync(join(d(), 'small'), 'x'.repeat(40));
    makeBase(d(), 32, []);
    makeClient(d(), 'c2', `mkdir /srv/olddir/sub/c2dir\nwrite ${join(d(), 'small')} /srv/olddir/sub/c2dir/f\n`);
    makeClient(d(), 'c1', 'rm /srv/adddir/a\nrmdir /srv/adddir\n');
  }, 60_000);

  test('keep-client: the client keeps its whole directory, what it inherited included, when the update made it a file or deleted it', () => {
    const keep = rebase('upd', 'keep-client', 'o-keep', 'c1', 'c2');
    expect(conflicts(keep, 'c2')).toEqual([{ path: '/srv/olddir', kept: 'client', what: 'path' }]);
    // Before, the output's /srv/olddir held only sub/c2dir/f: y and sub/x, which the client has, were gone.
    const c2 = output(join(d(), 'o-keep'), 'c2');
    expectSameTree(c2, edited(join(d(), 'c2.raw'), join(d(), 'c2-keep.oracle'), addB(d())));
    // Its times too: the client's directory is the client's.
    const below = ['/srv/olddir', '/srv/olddir/y', '/srv/olddir/sub', '/srv/olddir/sub/x', '/srv/olddir/sub/c2dir'];
    const mtimes = (img: string) => debugfsBatch(img, below.map((p) => `stat ${p}`)).map((t, i) => [below[i], parseStat(t).mtime]);
    expect(mtimes(c2)).toEqual(mtimes(join(d(), 'c2.raw')));
    // The client deleted /srv/adddir: kept so, the update's b is not there either.
    expect(conflicts(keep, 'c1')).toEqual([{ path: '/srv/adddir', kept: 'client', what: 'path' }]);
    expectSameTree(output(join(d(), 'o-keep'), 'c1'), edited(join(d(), 'c1.raw'), join(d(), 'c1-keep.oracle'), olddirToFile(d())));
    const wh = rebase('updwh', 'keep-client', 'o-keep-wh', 'c2');
    expect(conflicts(wh, 'c2')).toEqual([{ path: '/srv/olddir', kept: 'client', what: 'path' }]);
    expectSameTree(output(join(d(), 'o-keep-wh'), 'c2'), join(d(), 'c2.raw'));
  }, 60_000);

  test("take-update: the client gets the update's whole directory, the base's entries in it included", () => {
    const take = rebase('upd', 'take-update', 'o-take', 'c1', 'c2');
    // Before, /srv/adddir held only b: the base's a, which the update kept, was gone.
    expect(conflicts(take, 'c1')).toEqual([{ path: '/srv/adddir', kept: 'update', what: 'path' }]);
    const restore = `mkdir /srv/adddir\nwrite ${join(d(), 'tree/srv/adddir/a')} /srv/adddir/a\n`;
    expectSameTree(output(join(d(), 'o-take'), 'c1'), edited(join(d(), 'c1.raw'), join(d(), 'c1-take.oracle'), restore + addB(d()) + olddirToFile(d())));
    expect(conflicts(take, 'c2')).toEqual([{ path: '/srv/olddir', kept: 'update', what: 'path' }]);
    const drop = 'rm /srv/olddir/sub/c2dir/f\nrmdir /srv/olddir/sub/c2dir\n';
    expectSameTree(output(join(d(), 'o-take'), 'c2'), edited(join(d(), 'c2.raw'), join(d(), 'c2-take.oracle'), drop + olddirToFile(d()) + addB(d())));
  }, 60_000);
});

describe('an inline_data filesystem merges as one without (found by an outside tester)', () => {
  test('a client that wrote what the update writes, or made the directory the update makes, has no conflict', () => {
    const d = join(tmp(), 'inline');
    mkdirSync(join(d, 'tree/srv/app'), { recursive: true });
    writeFileSync(join(d, 'tree/srv/app/config.txt'), 'config v1\n');
    writeFileSync(join(d, 'tree/srv/app/plugin'), 'plugin as a file\n');
    mkdirSync(join(d, 'upd/srv/app/plugin'), { recursive: true });
    writeFileSync(join(d, 'upd/srv/app/config.txt'), 'config v2 from the update\n');
    writeFileSync(join(d, 'upd/srv/app/plugin/p.conf'), 'in the plugin directory\n');
    writeFileSync(join(d, 'c3'), 'the client plugin\n');
    makeBase(d, 32, ['-O', 'inline_data', '-I', '256']);
    // The update's owner, as the update's tree has it (debugfs write may not copy it).
    const owner = `sif /srv/app/config.txt uid ${process.getuid!()}\nsif /srv/app/config.txt gid ${process.getgid!()}\n`;
    makeClient(d, 'c2', `rm /srv/app/config.txt\nwrite ${join(d, 'upd/srv/app/config.txt')} /srv/app/config.txt\n${owner}`);
    makeClient(d, 'c3', `rm /srv/app/plugin\nmkdir /srv/app/plugin\nwrite ${join(d, 'c3')} /srv/app/plugin/c3\n`);
    // The oracle: debugfs shows the client's file and directory inline, which the update's are not.
    const [conf, plugin] = [...debugfsBatch(join(d, 'c2.raw'), ['stat /srv/app/config.txt']), ...debugfsBatch(join(d, 'c3.raw'), ['stat /srv/app/plugin'])];
    expect(conf).toMatch(/Size of inline data/);
    expect(plugin).toMatch(/Size of inline data/);
    // Before, both were conflicts: --conflict fail refused the rebase (exit 3).
    const r = imgdedup(['--json', 'rebase', '--conflict', 'fail', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c2.qcow2'), join(d, 'c3.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as RebaseJson).clients.map((c) => c.conflicts)).toEqual([[], []]);
    expectSameTree(output(join(d, 'out'), 'c2'), edited(join(d, 'c2.raw'), join(d, 'c2.oracle'), `rm /srv/app/plugin\nmkdir /srv/app/plugin\nwrite ${join(d, 'upd/srv/app/plugin/p.conf')} /srv/app/plugin/p.conf\n`));
    expectSameTree(output(join(d, 'out'), 'c3'), edited(join(d, 'c3.raw'), join(d, 'c3.oracle'), `rm /srv/app/config.txt\nwrite ${join(d, 'upd/srv/app/config.txt')} /srv/app/config.txt\n${owner}write ${join(d, 'upd/srv/app/plugin/p.conf')} /srv/app/plugin/p.conf\n`));
  }, 60_000);
});

/** Each path's hard-link group (the paths that share its inode, itself included), as debugfs sees them. */
function linkGroups(image: string, paths: readonly string[]): Record<string, string[]> {
  const inos = debugfsBatch(image, paths.map((p) => `stat "${p}"`)).map((t) => parseStat(t).ino);
  const byIno = new Map<number, string[]>();
  paths.forEach((p, i) => byIno.set(inos[i]!, [...(byIno.get(inos[i]!) ?? []), p]));
  return Object.fromEntries(paths.map((p, i) => [p, byIno.get(inos[i]!)!.sort()]));
}

describe('hard links crossing a directory the client keeps whole', () => {
  test('a name inside the kept directory and a name outside it stay one file, unless the update replaced the outside name', () => {
    const d = join(tmp(), 'crosslinks');
    mkdirSync(join(d, 'tree/srv/olddir'), { recursive: true });
    writeFileSync(join(d, 'tree/srv/olddir/y'), 'y\n');
    writeFileSync(join(d, 'tree/srv/keep'), 'kept by the update\n');
    writeFileSync(join(d, 'tree/srv/keep2'), 'keep2 as the base has it\n');
    // A hard link the base already has across the directory's edge.
    writeFileSync(join(d, 'tree/srv/olddir/hl'), 'linked in the base\n');
    linkSync(join(d, 'tree/srv/olddir/hl'), join(d, 'tree/srv/hlout'));
    mkdirSync(join(d, 'upd/srv'), { recursive: true });
    writeFileSync(join(d, 'upd/srv/olddir'), 'olddir is now a file\n');
    writeFileSync(join(d, 'upd/srv/keep2'), 'keep2 as the update has it\n');
    writeFileSync(join(d, 'own'), 'the client wrote this\n');
    makeBase(d, 32, []);
    // debugfs ln adds a name only: the link count is set by hand, as link(2) would.
    makeClient(d, 'h1', 'ln /srv/keep /srv/olddir/klink\nsif /srv/keep links_count 2\nln /srv/keep2 /srv/olddir/k2link\nsif /srv/keep2 links_count 2\n');
    makeClient(d, 'h2', `write ${join(d, 'own')} /srv/olddir/own\nln /srv/olddir/own /srv/outside\nsif /srv/olddir/own links_count 2\n`);
    makeClient(d, 'h3', `write ${join(d, 'own')} /srv/olddir/own\n`);
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'h1.qcow2'), join(d, 'h2.qcow2'), join(d, 'h3.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    const owner = `sif /srv/keep2 uid ${process.getuid!()}\nsif /srv/keep2 gid ${process.getgid!()}\n`;
    // Applied to the client by debugfs: /srv/keep2 is replaced (its other name keeps the old file); the kept directory stays.
    const h1Oracle = edited(join(d, 'h1.raw'), join(d, 'h1.oracle'), `rm /srv/keep2\nwrite ${join(d, 'upd/srv/keep2')} /srv/keep2\n${owner}`);
    const h1 = output(join(d, 'out'), 'h1');
    expectSameTree(h1, h1Oracle);
    const p1 = ['/srv/keep', '/srv/olddir/klink', '/srv/keep2', '/srv/olddir/k2link', '/srv/olddir/y'];
    expect(linkGroups(h1, p1)).toEqual(linkGroups(h1Oracle, p1));
    const h2Oracle = edited(join(d, 'h2.raw'), join(d, 'h2.oracle'), `rm /srv/keep2\nwrite ${join(d, 'upd/srv/keep2')} /srv/keep2\n${owner}`);
    const h2 = output(join(d, 'out'), 'h2');
    expectSameTree(h2, h2Oracle);
    const p2 = ['/srv/olddir/own', '/srv/outside', '/srv/olddir/y', '/srv/olddir/hl', '/srv/hlout'];
    expect(linkGroups(h2, p2)).toEqual(linkGroups(h2Oracle, p2));
    // The base's own link across the edge: the client did not touch it, and keeps it.
    const h3Oracle = edited(join(d, 'h3.raw'), join(d, 'h3.oracle'), `rm /srv/keep2\nwrite ${join(d, 'upd/srv/keep2')} /srv/keep2\n${owner}`);
    const h3 = output(join(d, 'out'), 'h3');
    expectSameTree(h3, h3Oracle);
    const p3 = ['/srv/olddir/hl', '/srv/hlout', '/srv/olddir/own'];
    expect(linkGroups(h3Oracle, p3)['/srv/hlout']).toEqual(['/srv/hlout', '/srv/olddir/hl']);
    expect(linkGroups(h3, p3)).toEqual(linkGroups(h3Oracle, p3));
  }, 60_000);
});

describe("complete copies keep BASE's qcow2 layout", () => {
  test("the new base and apply's complete output have BASE's cluster size and extended L2 entries (they had 64 KiB clusters whatever BASE's)", () => {
    const d = join(tmp(), 'layout');
    mkdirSync(join(d, 'tree/etc'), { recursive: true });
    writeFileSync(join(d, 'tree/etc/os-release'), 'ID=test\n');
    mkdirSync(join(d, 'upd/etc'), { recursive: true });
    writeFileSync(join(d, 'upd/etc/motd'), 'updated\n');
    makeBase(d, 32, []);
    qemuImg('convert', '-O', 'qcow2', '-o', 'cluster_size=16k,extended_l2=on', join(d, 'base.raw'), join(d, 'base.qcow2'));
    makeClient(d, 'c1', `write ${join(d, 'tree/etc/os-release')} /etc/mine\n`);
    const r = imgdedup(['rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    const a = imgdedup(['apply', join(d, 'base.qcow2'), join(d, 'upd'), '-o', join(d, 'applied.qcow2')]);
    expect(a.status, a.stderr).toBe(0);
    for (const f of [join(d, 'out/base.qcow2'), join(d, 'applied.qcow2')]) {
      const info = JSON.parse(qemuImg('info', '--output=json', f)) as { 'cluster-size': number; 'format-specific': { data: { 'extended-l2'?: boolean } } };
      expect({ f, cluster: info['cluster-size'], extL2: info['format-specific'].data['extended-l2'] }).toEqual({ f, cluster: 16384, extL2: true });
      qemuImg('check', f);
    }
    // The same tree either way.
    expectSameTree(output(join(d, 'out'), 'base'), output(d, 'applied'));
    expectStrictFsckClean(output(join(d, 'out'), 'c1'));
  }, 60_000);
});

describe('a conflict on a directory both sides have is about its attributes', () => {
  test("the report says the client's mode was kept and the entries merged, which is what the output holds (found by a new user: 'kept the client's version')", () => {
    const d = join(tmp(), 'dirattrs');
    mkdirSync(join(d, 'tree/srv/app'), { recursive: true });
    writeFileSync(join(d, 'tree/srv/app/config.txt'), 'v1\n');
    mkdirSync(join(d, 'upd/srv/app'), { recursive: true });
    writeFileSync(join(d, 'upd/srv/app/n1'), 'new\n');
    execFileSync('chmod', ['711', join(d, 'upd/srv/app')]);
    makeBase(d, 32, []);
    makeClient(d, 'c1', 'sif /srv/app mode 040700\n');
    const r = imgdedup(['--json', 'rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out')]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { clients: Array<{ conflicts: unknown[] }> }).clients[0]!.conflicts).toEqual([{ path: '/srv/app', kept: 'client', what: 'attributes' }]);
    const human = imgdedup(['rebase', join(d, 'base.qcow2'), join(d, 'upd'), join(d, 'c1.qcow2'), '-o', join(d, 'out2')]);
    expect(human.stdout).toMatch(/conflict \/srv\/app: kept the client's mode, owner and xattrs \(the directory's entries were merged one by one\)/);
    const [stat, ls] = debugfsBatch(output(join(d, 'out'), 'c1'), ['stat /srv/app', 'ls /srv/app']);
    expect(parseStat(stat!).mode & 0o7777).toBe(0o700);
    expect(ls).toMatch(/\bn1\b/);
    expect(ls).toMatch(/config\.txt/);
  }, 60_000);
});
