/**
 * A model of an ext4 tree for property tests of the writer, the operations the tests
 * run (applied to the model and to an Ext4Writer in lockstep), and the oracle's view of
 * an image (`debugfs rdump` for content and symlink targets, `debugfs ls -p` for the
 * entries rdump skips, `debugfs stat` and `ea_get -x` for attributes) in the same shape,
 * so a test compares the two with one toEqual.
 */
import { createHash } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { seededBytes } from '../../../fixtures/prng.mjs';
import type { Ext4Writer, NodeAttrs, NodeContent, NodeKind } from '../../../src/fs/ext4/Ext4Writer.js';
import type { FileExtent } from '../../../src/fs/ext4/Ext4Fs.js';
import { ImgdedupError } from '../../../src/errors.js';
import { sh } from '../../helpers/run.js';
import { debugfsBatch, parseLsP, parseStat, type DebugfsStat } from './debugfsOracle.js';

export interface Time {
  readonly sec: number;
  readonly nsec: number;
}

/** Attributes as an operation gives them; xattr values in hex (operations are plain JSON). */
export interface OpAttrs {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime?: Time;
  readonly atime?: Time;
  readonly xattrs?: ReadonlyArray<readonly [name: string, hexValue: string]>;
}

/** How a file's content is made: `size` bytes of seeded noise, with `holes` of each 8 blocks zero (holes). */
export interface FileSpec {
  readonly size: number;
  readonly seed: number;
  /** 0..8: how many of each 8 blocks are all zero. */
  readonly holes: number;
}

/** One step of a sequence, with concrete paths (a regression test replays a list of these). */
export type Op =
  | { readonly op: 'file'; readonly path: string; readonly file: FileSpec; readonly attrs: OpAttrs }
  | { readonly op: 'dir'; readonly path: string; readonly attrs: OpAttrs }
  | { readonly op: 'symlink'; readonly path: string; readonly target: string; readonly attrs: OpAttrs }
  | { readonly op: 'special'; readonly path: string; readonly kind: 'fifo' | 'socket' | 'chardev' | 'blockdev'; readonly major: number; readonly minor: number; readonly attrs: OpAttrs }
  | { readonly op: 'remove'; readonly path: string }
  | { readonly op: 'link'; readonly path: string; readonly target: string }
  /** There is no rename in the writer: a new name (hardlink), then the old one removed. */
  | { readonly op: 'rename'; readonly from: string; readonly to: string }
  | { readonly op: 'attrs'; readonly path: string; readonly attrs: OpAttrs }
  /** `count` empty files named `${prefix}${i}` in `dir` (grows a directory: leaf splits, index levels). */
  | { readonly op: 'many'; readonly dir: string; readonly prefix: string; readonly count: number }
  /** Every `every`-th entry of `dir` removed (subtrees included). */
  | { readonly op: 'prune'; readonly dir: string; readonly every: number }
  /** The data blocks of `path` in [lo, hi) permille of its physical span moved elsewhere. */
  | { readonly op: 'relocate'; readonly path: string; readonly lo: number; readonly hi: number }
  /** `from` (a file of one link) removed, and `path` given its blocks (which still hold its content). */
  | { readonly op: 'point'; readonly path: string; readonly from: string };

export type Kind = NodeKind;

interface Obj {
  kind: Kind;
  data?: Buffer;
  target?: string;
  dev?: { major: number; minor: number };
  mode: number;
  uid: number;
  gid: number;
  mtime: Time;
  atime: Time;
  xattrs: Map<string, string>;
}

/** What both the model and the oracle say about one path. */
export interface PathView {
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  links: number;
  mtime: Time;
  atime: Time;
  /** name=hex, sorted (system.data, the inline data, left out). */
  xattrs: string[];
  size?: number;
  sha?: string;
  target?: string;
  dev?: { major: number; minor: number };
  /** Other names of the same inode, sorted (non-directories with more than one name). */
  alsoAt?: string[];
}

export const parentOf = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
};
export const joinP = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);
const under = (p: string, dir: string): boolean => p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The content of a file spec. */
export function fileBytes(f: FileSpec, blockSize: number): Buffer {
  const b = seededBytes(f.size, f.seed);
  if (f.holes > 0) for (let blk = 0; blk * blockSize < f.size; blk++) if (blk % 8 < f.holes) b.fill(0, blk * blockSize, Math.min(f.size, (blk + 1) * blockSize));
  return b;
}

function fileContent(data: Buffer): NodeContent {
  return {
    kind: 'file',
    size: data.length,
    async *data() {
      // Odd chunk sizes: the writer must not depend on block-aligned chunks.
      for (let i = 0; i < data.length; i += 77_777) yield data.subarray(i, i + 77_777);
    },
  };
}

function writerAttrs(a: OpAttrs): NodeAttrs {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    ...(a.mtime ? { mtime: a.mtime } : {}),
    ...(a.atime ? { atime: a.atime } : {}),
    ...(a.xattrs ? { xattrs: a.xattrs.map(([n, v]) => ({ name: enc(n), value: Buffer.from(v, 'hex') })) } : {}),
  };
}

export class TreeModel {
  /** path -> object id ('/' included). */
  readonly paths = new Map<string, number>();
  readonly objs = new Map<number, Obj>();
  private nextId = 1;

  constructor(
    readonly blockSize: number,
    readonly now: Time,
  ) {}

  clone(): TreeModel {
    const m = new TreeModel(this.blockSize, this.now);
    for (const [p, id] of this.paths) m.paths.set(p, id);
    for (const [id, o] of this.objs) m.objs.set(id, { ...o, xattrs: new Map(o.xattrs) });
    m.nextId = this.nextId;
    return m;
  }

  /** The model of what the oracle sees in an image. */
  static fromViews(views: Map<string, PathView & { data?: Buffer }>, blockSize: number, now: Time): TreeModel {
    const m = new TreeModel(blockSize, now);
    const byGroup = new Map<string, number>();
    for (const [p, v] of views) {
      const key = v.alsoAt ? [p, ...v.alsoAt].sort().join('\0') : undefined;
      const known = key !== undefined ? byGroup.get(key) : undefined;
      if (known !== undefined) {
        m.paths.set(p, known);
        continue;
      }
      const id = m.add(p, {
        kind: v.kind,
        ...(v.data ? { data: v.data } : {}),
        ...(v.target !== undefined ? { target: v.target } : {}),
        ...(v.dev ? { dev: v.dev } : {}),
        mode: v.mode,
        uid: v.uid,
        gid: v.gid,
        mtime: v.mtime,
        atime: v.atime,
        xattrs: new Map(v.xattrs.map((x) => x.split('=') as [string, string])),
      });
      if (key !== undefined) byGroup.set(key, id);
    }
    return m;
  }

  private add(path: string, o: Obj): number {
    const id = this.nextId++;
    this.objs.set(id, o);
    this.paths.set(path, id);
    return id;
  }

  obj(path: string): Obj | undefined {
    const id = this.paths.get(path);
    return id === undefined ? undefined : this.objs.get(id);
  }

  kindOf(path: string): Kind | undefined {
    return this.obj(path)?.kind;
  }

  /** Sorted paths of a kind ('/' included for dirs). */
  pathsOf(pred: (k: Kind, p: string) => boolean): string[] {
    return [...this.paths.keys()].filter((p) => pred(this.kindOf(p)!, p)).sort();
  }

  children(dir: string): string[] {
    return [...this.paths.keys()].filter((p) => p !== '/' && parentOf(p) === dir).sort();
  }

  linksOf(path: string): number {
    const id = this.paths.get(path)!;
    const o = this.objs.get(id)!;
    if (o.kind === 'dir') return 2 + this.children(path).filter((c) => this.kindOf(c) === 'dir').length;
    return [...this.paths.values()].filter((x) => x === id).length;
  }

  private touch(dir: string): void {
    this.obj(dir)!.mtime = this.now;
  }

  private dropSubtree(path: string): void {
    for (const p of [...this.paths.keys()]) if (under(p, path)) this.paths.delete(p);
    const live = new Set(this.paths.values());
    for (const id of [...this.objs.keys()]) if (!live.has(id)) this.objs.delete(id);
  }

  private setAttrs(o: Obj, a: OpAttrs): void {
    o.mode = a.mode & 0o7777;
    o.uid = a.uid;
    o.gid = a.gid;
    if (a.mtime) o.mtime = a.mtime;
    if (a.atime) o.atime = a.atime;
    if (a.xattrs) o.xattrs = new Map(a.xattrs.map(([n, v]) => [n, v]));
  }

  private put(path: string, o: Omit<Obj, 'mode' | 'uid' | 'gid' | 'mtime' | 'atime' | 'xattrs'>, a: OpAttrs): void {
    const old = this.obj(path);
    if (old?.kind === 'dir' && o.kind === 'dir') {
      this.setAttrs(old, a);
      return;
    }
    if (old) this.dropSubtree(path);
    const mtime = a.mtime ?? this.now;
    this.add(path, { ...o, mode: a.mode & 0o7777, uid: a.uid, gid: a.gid, mtime, atime: a.atime ?? mtime, xattrs: new Map((a.xattrs ?? []).map(([n, v]) => [n, v])) });
    this.touch(parentOf(path));
  }

  private link(path: string, target: string): void {
    const id = this.paths.get(target)!;
    if (this.paths.get(path) === id) return;
    if (this.paths.has(path)) this.dropSubtree(path);
    this.paths.set(path, id);
    this.touch(parentOf(path));
  }

  private remove(path: string): void {
    if (!this.paths.has(path)) return;
    this.dropSubtree(path);
    this.touch(parentOf(path));
  }

  /**
   * The error `op` must end in, if any: a hard link (or a rename's new name) replacing a
   * directory that holds every name of its target removes the target with it (BAD_UPDATE).
   */
  expectedError(op: Op): 'BAD_UPDATE' | undefined {
    const [to, from] = op.op === 'link' ? [op.path, op.target] : op.op === 'rename' ? [op.to, op.from] : [];
    if (to === undefined || from === undefined || this.paths.get(to) === this.paths.get(from) || this.kindOf(to) !== 'dir') return undefined;
    const id = this.paths.get(from);
    return [...this.paths].every(([p, x]) => x !== id || under(p, to)) ? 'BAD_UPDATE' : undefined;
  }

  /** Applies `op` to the model (the writer side is `runOp`). */
  apply(op: Op): void {
    switch (op.op) {
      case 'file':
        return this.put(op.path, { kind: 'file', data: fileBytes(op.file, this.blockSize) }, op.attrs);
      case 'dir':
        return this.put(op.path, { kind: 'dir' }, op.attrs);
      case 'symlink':
        return this.put(op.path, { kind: 'symlink', target: op.target }, op.attrs);
      case 'special':
        return this.put(op.path, { kind: op.kind, ...(op.kind === 'chardev' || op.kind === 'blockdev' ? { dev: { major: op.major, minor: op.minor } } : {}) }, op.attrs);
      case 'remove':
        return this.remove(op.path);
      case 'link':
        return this.link(op.path, op.target);
      case 'rename':
        this.link(op.to, op.from);
        return this.remove(op.from);
      case 'attrs':
        return this.setAttrs(this.obj(op.path)!, op.attrs);
      case 'many':
        for (let i = 0; i < op.count; i++) this.put(joinP(op.dir, `${op.prefix}${i}`), { kind: 'file', data: Buffer.alloc(0) }, { mode: 0o644, uid: 0, gid: 0 });
        return;
      case 'prune': {
        const kids = this.children(op.dir);
        for (let i = 0; i < kids.length; i += op.every) this.remove(kids[i]!);
        return;
      }
      case 'relocate':
        return;
      case 'point': {
        const data = this.obj(op.from)!.data!;
        this.remove(op.from);
        this.obj(op.path)!.data = data;
        return;
      }
    }
  }

  /** The model as the oracle would show it. */
  views(): Map<string, PathView> {
    const out = new Map<string, PathView>();
    for (const p of [...this.paths.keys()].sort()) {
      const o = this.obj(p)!;
      const others = o.kind === 'dir' ? [] : [...this.paths].filter(([q, id]) => q !== p && id === this.paths.get(p)).map(([q]) => q).sort();
      out.set(p, {
        kind: o.kind,
        mode: o.mode,
        uid: o.uid,
        gid: o.gid,
        links: this.linksOf(p),
        mtime: o.mtime,
        atime: o.atime,
        xattrs: [...o.xattrs].map(([n, v]) => `${n}=${v}`).sort(),
        ...(o.kind === 'file' ? { size: o.data!.length, sha: sha(o.data!) } : {}),
        ...(o.target !== undefined ? { target: o.target } : {}),
        ...(o.dev ? { dev: o.dev } : {}),
        ...(others.length > 0 ? { alsoAt: others } : {}),
      });
    }
    return out;
  }
}

/**
 * Thrown by runOp, before it changes anything, for an operation the writer's API cannot
 * express on this filesystem: the sequence goes on without it (the model is not told).
 */
export class InexpressibleOp extends Error {}

/** What runOp learned before the writer ran the operation, for judging its failure. */
export interface OpFacts {
  /** `relocate`: the blocks in use in the range it moves out of (each needs a free block elsewhere). */
  relocateBlocks?: number;
}

/** Runs `op` on the writer. `relocate` and `point` find blocks through the writer's reader. */
export async function runOp(w: Ext4Writer, op: Op, blockSize: number, facts: OpFacts = {}): Promise<void> {
  switch (op.op) {
    case 'file':
      await w.put(enc(op.path), fileContent(fileBytes(op.file, blockSize)), writerAttrs(op.attrs));
      return;
    case 'dir':
      await w.put(enc(op.path), { kind: 'dir' }, writerAttrs(op.attrs));
      return;
    case 'symlink':
      await w.put(enc(op.path), { kind: 'symlink', target: enc(op.target) }, writerAttrs(op.attrs));
      return;
    case 'special': {
      const content: NodeContent = op.kind === 'chardev' || op.kind === 'blockdev' ? { kind: op.kind, major: op.major, minor: op.minor } : { kind: op.kind };
      await w.put(enc(op.path), content, writerAttrs(op.attrs));
      return;
    }
    case 'remove':
      await w.remove(enc(op.path));
      return;
    case 'link':
      await w.hardlink(enc(op.path), enc(op.target));
      return;
    case 'rename':
      await w.hardlink(enc(op.to), enc(op.from));
      await w.remove(enc(op.from));
      return;
    case 'attrs':
      await w.setAttrs(enc(op.path), writerAttrs(op.attrs));
      return;
    case 'many':
      for (let i = 0; i < op.count; i++) await w.put(enc(joinP(op.dir, `${op.prefix}${i}`)), fileContent(Buffer.alloc(0)), { mode: 0o644, uid: 0, gid: 0 });
      return;
    case 'prune': {
      const kids = (await w.children(enc(op.dir))).map((n) => joinP(op.dir, Buffer.from(n).toString('latin1'))).sort();
      for (let i = 0; i < kids.length; i += op.every) await w.remove(enc(kids[i]!));
      return;
    }
    case 'relocate': {
      // A range over the object's blocks (data, directory or symlink blocks, its xattr block):
      // whatever lives there moves out, whoever owns it.
      const ino = (await w.lookup(enc(op.path)))!;
      const inode = await w.fs.readInode(ino);
      const blocks = (await physicalExtents(w, ino)).flatMap((e) => [e.pblk, e.pblk + e.len]);
      if (inode.i_file_acl !== 0) blocks.push(inode.i_file_acl, inode.i_file_acl + 1);
      if (blocks.length === 0) return;
      const lo = Math.min(...blocks);
      const hi = Math.max(...blocks);
      const start = lo + Math.floor(((hi - lo) * op.lo) / 1000);
      const end = Math.max(start + 1, lo + Math.ceil(((hi - lo) * op.hi) / 1000));
      facts.relocateBlocks = (await w.blocksInUse(start, end - start)).length;
      let moves: Array<{ from: number; to: number }>;
      try {
        moves = await w.relocate(start, end - start);
      } catch (e) {
        // Group metadata inside the range (a big file spanning groups) cannot move: refused before anything moved.
        if (e instanceof ImgdedupError && e.code === 'WRITE_REFUSED') return;
        throw e;
      }
      for (const m of moves) if (m.to >= start && m.to < end) throw new Error(`relocate moved block ${m.from} to ${m.to}, inside [${start}, ${end})`);
      const after = await w.fs.readInode(ino);
      for (const e of await physicalExtents(w, ino)) if (e.pblk < end && e.pblk + e.len > start) throw new Error(`after relocate ${op.path} still maps ${e.pblk}+${e.len} inside [${start}, ${end})`);
      if (after.i_file_acl >= start && after.i_file_acl < end) throw new Error(`after relocate ${op.path} still has its xattr block ${after.i_file_acl} inside [${start}, ${end})`);
      return;
    }
    case 'point': {
      const from = (await w.lookup(enc(op.from)))!;
      const fromInode = await w.fs.readInode(from);
      // Content stored in the inode (inline data) has no blocks to point at: a caller writes
      // it as ordinary content instead (mergeClient does).
      if ((fromInode.i_flags & EXT4_INLINE_DATA_FL) !== 0 && fromInode.i_size > 0) throw new InexpressibleOp(`point from ${op.from}: its content is inline`);
      const extents = await physicalExtents(w, from);
      await w.remove(enc(op.from));
      await w.point((await w.lookup(enc(op.path)))!, extents, fromInode.i_size);
      return;
    }
  }
}

/** The extents the reader sees for `ino` (none for inline, fast-symlink and special inodes). */
export async function physicalExtents(w: Ext4Writer, ino: number): Promise<FileExtent[]> {
  const out: FileExtent[] = [];
  for await (const e of w.fs.extentsOf(await w.fs.readInode(ino))) out.push(e);
  return out;
}

const TYPE_KIND: Readonly<Record<string, Kind>> = { regular: 'file', directory: 'dir', symlink: 'symlink', FIFO: 'fifo', socket: 'socket', character: 'chardev', block: 'blockdev' };
const EXT4_INLINE_DATA_FL = 0x10000000;

function chmodWalk(root: string, rel: string, out: Map<string, { data?: Buffer; target?: string }>): void {
  chmodSync(join(root, rel), 0o700);
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = `${rel}/${name}`;
    const st = lstatSync(join(root, p));
    if (st.isDirectory()) {
      out.set(p, {});
      chmodWalk(root, p, out);
    } else if (st.isSymbolicLink()) out.set(p, { target: readlinkSync(join(root, p)) });
    else {
      // rdump keeps modes: a file of mode 000 must be made readable (tests need not run as root).
      chmodSync(join(root, p), 0o600);
      out.set(p, { data: readFileSync(join(root, p)) });
    }
  }
}

/**
 * The oracle's view of every path of a raw ext4 image: rdump for content and symlink
 * targets, ls -p for the entries rdump skips (devices, fifos, sockets), stat for types,
 * modes, owners, links, times, device numbers and xattr names, ea_get -x for xattr values.
 * `work` is a scratch directory (emptied).
 */
export function oracleViews(image: string, work: string): Map<string, PathView & { data?: Buffer }> {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  sh('debugfs', ['-R', `rdump / ${work}`, image]);
  const dumped = new Map<string, { data?: Buffer; target?: string }>();
  chmodWalk(work, '', dumped);
  // Every entry, dir by dir (a breadth-first walk, one debugfs run per level).
  const all: string[] = ['/'];
  let level = ['/'];
  while (level.length > 0) {
    const outs = debugfsBatch(image, level.map((d) => `ls -p "${d}"`));
    const next: string[] = [];
    level.forEach((d, i) => {
      for (const e of parseLsP(outs[i]!)) {
        if (e.name === '.' || e.name === '..') continue;
        const p = joinP(d, e.name);
        all.push(p);
        if ((e.mode & 0o170000) === 0o040000) next.push(p);
      }
    });
    level = next;
  }
  const stats = new Map<string, DebugfsStat>();
  debugfsBatch(image, all.map((p) => `stat "${p}"`)).forEach((s, i) => stats.set(all[i]!, parseStat(s)));
  const xq: Array<[string, string]> = [];
  for (const p of all) for (const x of stats.get(p)!.xattrs) if (x.name !== 'system.data') xq.push([p, x.name]);
  const xvals = new Map<string, string[]>();
  debugfsBatch(image, xq.map(([p, n]) => `ea_get -x "${p}" ${n}`)).forEach((text, i) => {
    const [p, n] = xq[i]!;
    const m = /\(\d+\)(?: = ([0-9a-f ]*))?/.exec(text);
    if (!m) throw new Error(`ea_get: cannot parse ${text}`);
    const hex = (m[1] ?? '').replace(/\s+/g, '');
    xvals.set(p, [...(xvals.get(p) ?? []), `${n}=${hex}`]);
  });
  const byIno = new Map<number, string[]>();
  for (const p of all) {
    const s = stats.get(p)!;
    if (s.type !== 'directory') byIno.set(s.ino, [...(byIno.get(s.ino) ?? []), p]);
  }
  const out = new Map<string, PathView & { data?: Buffer }>();
  for (const p of all.sort()) {
    const s = stats.get(p)!;
    const kind = TYPE_KIND[s.type];
    if (kind === undefined) throw new Error(`debugfs stat ${p}: unknown type ${s.type}`);
    const d = p === '/' ? {} : dumped.get(p);
    if ((kind === 'file' || kind === 'dir' || kind === 'symlink') && d === undefined) throw new Error(`rdump left out ${p}`);
    let data = d?.data;
    // debugfs 1.47 dumps an inline-data file padded to its inline area: i_size is the content.
    if (data && s.flags & EXT4_INLINE_DATA_FL && data.length > s.size) data = data.subarray(0, s.size);
    const others = (byIno.get(s.ino) ?? []).filter((q) => q !== p).sort();
    out.set(p, {
      kind,
      mode: s.mode & 0o7777,
      uid: s.uid,
      gid: s.gid,
      links: s.links,
      mtime: s.mtime,
      atime: s.atime,
      xattrs: (xvals.get(p) ?? []).sort(),
      ...(kind === 'file' ? { size: data!.length, sha: sha(data!), data } : {}),
      ...(kind === 'symlink' ? { target: d!.target! } : {}),
      ...(s.device && (kind === 'chardev' || kind === 'blockdev') ? { dev: s.device } : {}),
      ...(others.length > 0 ? { alsoAt: others } : {}),
    });
  }
  rmSync(work, { recursive: true, force: true });
  return out;
}

/** Views without the raw content (for comparison and messages). */
export function comparable(views: Map<string, PathView & { data?: Buffer }>): Record<string, PathView> {
  const out: Record<string, PathView> = {};
  for (const [p, v] of views) {
    const { data, ...rest } = v;
    void data;
    out[p] = rest;
  }
  return out;
}
