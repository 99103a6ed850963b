/**
 * The rebase of one client's root filesystem, as a replay (DESIGN.md, "Constructing a
 * rebased client"): the merged client M starts as a copy-on-write layer on T (the base
 * with the update applied), and each path the client changed is decided by the
 * three-way rule over B (base), T and C (client). Where the result is the client's, it
 * is written into M keeping the client's inode number and physical blocks (`point`:
 * the client's data is already in those blocks, so M's overlay on T stores the client's
 * own blocks at the same offsets); where it is the update's, M already has it. A client
 * block that T uses after all (the fleet-aware allocation ran short, or the client was
 * not known when T was built) is moved out of the way first (`relocate`).
 */
import { runLimited } from '../diskimage/runLimited.js';
import { ConflictError } from '../errors.js';
import type { FsDiff } from '../blockdiff/diffDisk.js';
import type { BlockOwnership, Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { kindOfMode, type Ext4Writer, type NodeAttrs, type NodeContent } from '../fs/ext4/Ext4Writer.js';
import type { Inode } from '../fs/ext4/inode.js';
import { byteKey, compareBytes, joinPath, splitPath } from '../fs/ext4/names.js';
import { isInlineDataXattr } from '../fs/ext4/xattr.js';
import { EXT4_USER_FLAGS } from '../fs/ext4/constants.js';
import { BlockRuns } from '../fs/BlockRuns.js';
import { sameState, stateAt, type PathState } from './nodeState.js';

const ROOT = new Uint8Array([0x2f]);

export type ConflictPolicy = 'keep-client' | 'take-update' | 'fail';

/** How one path the client changed was resolved. */
export interface MergeDecision {
  readonly path: Uint8Array;
  /** client: C's version kept; update: T's version taken (the client had it already, or a conflict resolved so); */
  readonly result: 'client' | 'update';
  readonly conflict: boolean;
  /**
   * A conflict about a directory's own attributes (mode, owner, xattrs): both sides have it
   * as a directory, so only those follow `result`; its entries are merged one by one.
   */
  readonly attributesOnly?: boolean;
}

export interface MergeResult {
  readonly decisions: readonly MergeDecision[];
  /** Client blocks moved because T uses them. */
  readonly relocatedBlocks: number;
  /** File bytes of the client's own data carried into M. */
  readonly carriedBytes: number;
}

export interface MergeInput {
  readonly base: Ext4Fs;
  readonly updated: Ext4Fs;
  readonly client: Ext4Fs;
  /** What the client changed against the base, in this filesystem (diffDisks). */
  readonly clientDiff: Pick<FsDiff, 'added' | 'removed' | 'modified'>;
  /** The writer over M's filesystem (a copy-on-write layer on T). */
  readonly merged: Ext4Writer;
  /**
   * Puts the client's bytes at `[offset, offset + length)` of the filesystem into M at the
   * same place (the rebase links them: CowDevice.link, no copy).
   */
  readonly linkClientBytes: (offset: number, length: number) => Promise<void>;
  readonly conflict: ConflictPolicy;
  /** Who owns T's blocks (computed once for the fleet, on first need): what relocation goes by. */
  readonly updatedOwnership: () => Promise<BlockOwnership>;
  /** Name of the client, for messages. */
  readonly name: string;
  /** The paths the update changed (its writer's report): a directory it added to is changed too. */
  readonly updateChanged: readonly Uint8Array[];
  /** Directories the update made opaque (see ApplySummary.opaqueDirs). */
  readonly updateOpaque?: readonly Uint8Array[];
  /**
   * Whether T's state of a path equals B's, by path key: shared by the clients of one
   * rebase (B and T are the same for all), so each path's content is compared once.
   */
  readonly updateSame?: Map<string, boolean>;
  /** Decide (and throw MERGE_CONFLICT under `fail`) but write nothing into M. */
  readonly decideOnly?: boolean;
}

const depth = (p: Uint8Array): number => splitPath(p).length;

/** Paths decided at once (each compares at most two files, a chunk of each at a time). */
const DECIDE_IN_FLIGHT = 4;

/** The attributes of a client's inode, as the writer takes them. */
async function attrsOf(fs: Ext4Fs, inode: Inode): Promise<NodeAttrs> {
  const xattrs = (await fs.xattrsOf(inode)).filter((x) => !isInlineDataXattr(x)).map((x) => ({ name: x.name, value: x.value }));
  return {
    mode: inode.i_mode & 0o7777,
    uid: inode.i_uid,
    gid: inode.i_gid,
    atime: inode.atime,
    mtime: inode.mtime,
    ctime: inode.ctime,
    ...(inode.crtime ? { crtime: inode.crtime } : {}),
    xattrs,
    flags: inode.i_flags & EXT4_USER_FLAGS,
  };
}

/**
 * Decides every path the client changed, then (unless the policy is `fail` and there is a
 * conflict: MERGE_CONFLICT, nothing written) writes the client's results into M.
 */
export async function mergeClient(input: MergeInput): Promise<MergeResult> {
  const { base, updated, client, clientDiff } = input;
  const paths = [...clientDiff.added, ...clientDiff.removed, ...clientDiff.modified].map((e) => e.path);
  const unique = [...new Map(paths.map((p) => [byteKey(p), p])).values()];
  const changedKeys = input.updateChanged.map(byteKey);
  /** Whether the update changed anything below directory `p` (a directory's own state leaves out its entries). */
  const changedBelow = (p: Uint8Array): boolean => {
    const dir = byteKey(p);
    return changedKeys.some((k) => isBelow(k, dir));
  };
  const opaqueKeys = (input.updateOpaque ?? []).map(byteKey);
  /** Whether `key` lies below a directory the update made opaque. */
  const belowOpaque = (key: string): boolean => opaqueKeys.some((o) => isBelow(key, o));
  const decide = async (p: Uint8Array): Promise<MergeDecision> => {
    const [b, t, c] = await Promise.all([stateAt(base, p), stateAt(updated, p), stateAt(client, p)]);
    const key = byteKey(p);
    // What the client added below a directory the update made opaque: applied to the client,
    // the update would remove it (OCI), so both changed the directory's content: a conflict.
    if (b === null && t === null && c !== null && belowOpaque(key)) return { path: p, result: input.conflict === 'take-update' ? 'update' : 'client', conflict: true };
    let same = input.updateSame?.get(key);
    if (same === undefined) {
      same = await sameState(t, b);
      input.updateSame?.set(key, same);
    }
    // A directory the client deleted or replaced by something else, to which the update added or changed something, is a conflict.
    if (same && !(c?.kind !== 'dir' && b?.kind === 'dir' && changedBelow(p))) return { path: p, result: 'client', conflict: false };
    // The client has the update's version (it updated itself: the common case, tried first) or its base version.
    if ((await sameState(c, t)) || (await sameState(c, b))) return { path: p, result: 'update', conflict: false };
    return { path: p, result: input.conflict === 'take-update' ? 'update' : 'client', conflict: true, ...(c?.kind === 'dir' && t?.kind === 'dir' ? { attributesOnly: true } : {}) };
  };
  // A few paths at a time: one path's file reads wait on the thread pool while another's are compared.
  const decided: MergeDecision[] = new Array<MergeDecision>(unique.length);
  await runLimited(
    unique.map((p, i) => async () => {
      decided[i] = await decide(p);
    }),
    DECIDE_IN_FLIGHT,
  );
  const settled = await settleSubtrees(input, await settleAncestors(input, decided));
  const conflicts = settled.filter((d) => d.conflict);
  if (input.conflict === 'fail' && conflicts.length > 0) {
    throw new ConflictError({
      file: input.name,
      detail: `${conflicts.length} path(s) changed by both the client and the update, differently (first: ${new TextDecoder().decode(conflicts[0]!.path)}); nothing was written`,
      paths: conflicts.map((d) => new TextDecoder().decode(d.path)),
    });
  }
  if (input.decideOnly) return { decisions: settled, relocatedBlocks: 0, carriedBytes: 0 };
  const carry = settled.filter((d) => d.result === 'client');
  // Deletions deepest first, then creations and changes parents first.
  const present: PathState[] = [];
  const gone: Uint8Array[] = [];
  const states = new Map<string, PathState>();
  for (const d of carry) {
    const c = await stateAt(client, d.path);
    if (c === null) gone.push(d.path);
    else {
      present.push(c);
      states.set(byteKey(d.path), c);
    }
  }
  gone.sort((x, y) => depth(y) - depth(x) || compareBytes(x, y));
  for (const p of gone) await input.merged.remove(p);
  const ordered = carry.filter((d) => states.has(byteKey(d.path))).sort((x, y) => depth(x.path) - depth(y.path) || compareBytes(x.path, y.path));
  // What the carried paths replace in M goes first, so the blocks it holds are free before any
  // client file is pointed at them (a client that reused a replaced file's blocks would else
  // have M's old version relocated, only for it to be removed a moment later).
  for (const d of ordered) {
    const existing = await input.merged.lookup(d.path);
    if (existing === undefined) continue;
    if (states.get(byteKey(d.path))!.kind === 'dir' && (await input.merged.fs.stat(existing)).type === 'dir') continue;
    await input.merged.remove(d.path);
  }
  let relocatedBlocks = 0;
  let carriedBytes = 0;
  /** Client inode -> the first path carried for it (later names become hard links). */
  const carried = new Map<number, Uint8Array>();
  /** The client's data blocks the carried files point at, put into M once all are carried. */
  const toLink: Array<[number, number]> = [];
  for (const d of ordered) {
    const c = states.get(byteKey(d.path))!;
    const r = await carryPath(input, d.path, c, carried, toLink);
    relocatedBlocks += r.relocated;
    carriedBytes += r.bytes;
  }
  await linkBlocks(input, new BlockRuns(toLink));
  // Adding and removing entries set their directories' times to now: the client's times are set
  // again on every directory carried and every parent of a path carried or removed, deepest first.
  const dirs = new Map<string, Uint8Array>();
  for (const p of [...ordered.map((d) => d.path), ...gone]) {
    if (states.get(byteKey(p))?.kind === 'dir') dirs.set(byteKey(p), p);
    const parts = splitPath(p);
    for (let i = parts.length - 1; i >= 1; i--) {
      const parent = parts.slice(0, i).reduce(joinPath, new Uint8Array(0));
      dirs.set(byteKey(parent), parent);
    }
  }
  dirs.set(byteKey(ROOT), ROOT);
  const sameTime = (x: { sec: number; nsec: number }, y: { sec: number; nsec: number }): boolean => x.sec === y.sec && x.nsec === y.nsec;
  for (const p of [...dirs.values()].sort((x, y) => depth(y) - depth(x) || compareBytes(x, y))) {
    if ((await input.merged.lookup(p)) === undefined) continue;
    const [b, t, c] = await Promise.all([stateAt(input.base, p), stateAt(input.updated, p), stateAt(input.client, p)]);
    // Three-way on the times too: the client's where it changed them, else the update's.
    // A directory T has not (the client's whole directory kept over the update's file) is the client's.
    const keep = c?.kind === 'dir' && (b === null || t?.kind !== 'dir' || !sameTime(c.inode.mtime, b.inode.mtime)) ? c : t?.kind === 'dir' ? t : null;
    if (keep !== null) await input.merged.setTimes(p, keep.inode.mtime, keep.inode.atime);
  }
  return { decisions: settled, relocatedBlocks, carriedBytes };
}

/**
 * Puts the client's blocks `runs` into M at the same places, a run at a time: the files a
 * client wrote lie mostly side by side, so their blocks coalesce into few runs. Done after
 * every path is carried: what T kept in those blocks has been relocated by then, and M's
 * writer allocates nothing there (the client's blocks are avoided).
 */
async function linkBlocks(input: MergeInput, runs: BlockRuns): Promise<void> {
  const bs = input.client.blockSize;
  for (const [start, count] of runs.runs()) await input.linkClientBytes(start * bs, count * bs);
}

/**
 * A path the client keeps, below a directory that T does not have as a directory (the
 * update deleted it, or put something else there): that directory is a conflict too, else
 * the client's path would have no parent in M. How it is resolved, for its whole subtree,
 * is settleSubtrees'.
 */
async function settleAncestors(input: MergeInput, decisions: readonly MergeDecision[]): Promise<MergeDecision[]> {
  const out = new Map(decisions.map((d) => [byteKey(d.path), d]));
  const policy: MergeDecision['result'] = input.conflict === 'take-update' ? 'update' : 'client';
  const dirInT = new Map<string, boolean>();
  for (const d of decisions) {
    if (d.result !== 'client' || (await input.client.lookup(d.path)) === undefined) continue; // removals need no parent
    const parts = splitPath(d.path);
    let prefix: Uint8Array = new Uint8Array(0);
    let above: MergeDecision | undefined;
    for (let i = 0; i < parts.length - 1; i++) {
      prefix = joinPath(prefix, parts[i]!);
      const key = byteKey(prefix);
      let isDir = dirInT.get(key);
      if (isDir === undefined) {
        isDir = (await stateAt(input.updated, prefix))?.kind === 'dir';
        dirInT.set(key, isDir);
      }
      if (isDir) continue;
      let here = out.get(key);
      // The topmost such directory is the conflict; those below it follow its resolution.
      if (here === undefined || (above === undefined && !here.conflict && here.result === 'update')) {
        here = above === undefined ? { path: prefix, result: policy, conflict: true } : { path: prefix, result: above.result, conflict: false };
        out.set(key, here);
      }
      above ??= here;
      if (here.result === 'update') {
        out.set(byteKey(d.path), { ...d, result: 'update' });
        break;
      }
    }
  }
  return [...out.values()];
}

/**
 * A conflict where one side has a directory and the other has not (a directory deleted,
 * or replaced by a file or a symlink, on one side; added to or changed below on the
 * other) is resolved for the whole directory, as the report says: kept as the client's,
 * M has the client's directory as the client sees it, what it inherited from the base
 * included (those paths the client did not change are carried too); taken as the
 * update's, T's directory as it is, the base's entries it kept included (the client's
 * changes below are given up, deletions too). Path by path, the three-way rule would
 * leave a mix that is neither side's. A conflict where both sides have a directory is
 * about the directory's own attributes: its entries are merged one by one.
 */
async function settleSubtrees(input: MergeInput, decisions: readonly MergeDecision[]): Promise<MergeDecision[]> {
  const out = new Map(decisions.map((d) => [byteKey(d.path), d]));
  const settled: string[] = [];
  // Topmost first: a conflict below one already settled follows that one.
  for (const d of [...decisions].sort((x, y) => depth(x.path) - depth(y.path) || compareBytes(x.path, y.path))) {
    const key = byteKey(d.path);
    if (!d.conflict || settled.some((r) => isBelow(key, r))) continue;
    const [t, c] = await Promise.all([stateAt(input.updated, d.path), stateAt(input.client, d.path)]);
    const clientDir = c?.kind === 'dir';
    if (clientDir === (t?.kind === 'dir')) continue;
    settled.push(key);
    const wholeClientDir = d.result === 'client' && clientDir;
    for (const [k, e] of out) {
      if (!isBelow(k, key)) continue;
      // In the client's directory carried whole, what the client deleted is simply not there.
      const result = wholeClientDir && (await input.client.lookup(e.path)) === undefined ? 'update' : d.result;
      // The directory's conflict is the one reported: what lies below follows it (found by a new user: listed path by path, as well).
      if (e.result !== result || e.conflict) out.set(k, { ...e, result, conflict: false });
    }
    if (!wholeClientDir) continue;
    for await (const e of input.client.walk(c.inode.ino, d.path)) {
      const k = byteKey(e.path);
      if (!out.has(k)) out.set(k, { path: e.path, result: 'client', conflict: false });
    }
  }
  return [...out.values()];
}

/** Writes the client's state of `path` into M, keeping its inode number and data blocks where it can. */
async function carryPath(input: MergeInput, path: Uint8Array, c: PathState, carried: Map<number, Uint8Array>, toLink: Array<[number, number]>): Promise<{ relocated: number; bytes: number }> {
  const m = input.merged;
  const attrs = await attrsOf(input.client, c.inode);
  const existing = await m.lookup(path);
  if (c.kind === 'dir') {
    if (existing !== undefined && (await m.fs.stat(existing)).type === 'dir') await m.setAttrs(path, attrs);
    else await m.put(path, { kind: 'dir' }, attrs, (await m.inodeFree(c.inode.ino)) ? { at: c.inode.ino } : {});
    return { relocated: 0, bytes: 0 };
  }
  const first = carried.get(c.inode.ino);
  if (first !== undefined) {
    await m.hardlink(path, first);
    return { relocated: 0, bytes: 0 };
  }
  if (existing !== undefined) await m.remove(path);
  if (await sameFileInMerged(m, c)) {
    // A name of a file whose other names M keeps from T (a hard link the base had across a
    // directory the client keeps whole): one file still, as in the client, not a copy.
    await m.linkInode(path, c.inode.ino);
    carried.set(c.inode.ino, path);
    return { relocated: 0, bytes: 0 };
  }
  const at = (await m.inodeFree(c.inode.ino)) ? { at: c.inode.ino } : {};
  let content: NodeContent;
  switch (c.kind) {
    case 'file':
      content = { kind: 'file', size: 0, data: async function* () {} };
      break;
    case 'symlink':
      content = { kind: 'symlink', target: await input.client.readlinkOf(c.inode) };
      break;
    case 'chardev':
    case 'blockdev': {
      const rdev = input.client.statOf(c.inode).rdev ?? { major: 0, minor: 0 };
      content = { kind: c.kind, major: rdev.major, minor: rdev.minor };
      break;
    }
    default:
      content = { kind: c.kind as 'fifo' | 'socket' };
  }
  // The client's data blocks (none for inline data, or a map the reader cannot give).
  const extents: Array<{ lblk: number; pblk: number; len: number; unwritten: boolean }> = [];
  if (c.kind === 'file') for await (const e of input.client.extentsOf(c.inode)) extents.push({ lblk: e.lblk, pblk: e.pblk, len: e.len, unwritten: e.unwritten });
  if (c.kind === 'file' && extents.length === 0 && c.inode.i_size > 0) {
    // Written as ordinary content instead, at the client's inode number still.
    await m.put(path, { kind: 'file', size: c.inode.i_size, data: () => input.client.readFile(c.inode.ino) }, attrs, at);
    carried.set(c.inode.ino, path);
    return { relocated: 0, bytes: c.inode.i_size };
  }
  const ino = await m.put(path, content, attrs, at);
  carried.set(c.inode.ino, path);
  if (c.kind !== 'file') return { relocated: 0, bytes: 0 };
  // The client's data: its blocks, in place. Blocks M uses for something else are freed first.
  const bs = input.client.blockSize;
  let relocated = 0;
  let bytes = 0;
  for (const e of extents) {
    for (const b of await m.blocksInUse(e.pblk, e.len)) {
      // A relocation may free what it moves from, a rebuilt extent tree's old nodes included.
      if (!(await m.blockInUse(b))) continue;
      await m.relocate(b, 1, await input.updatedOwnership());
      relocated++;
    }
    toLink.push([e.pblk, e.len]);
    bytes += e.len * bs;
  }
  await m.point(ino, extents, c.inode.i_size);
  return { relocated, bytes };
}

/**
 * Whether M holds the client's multiply linked file `c` under its own inode number already:
 * T never allocates an inode a client uses, so M's inode of that number in use is the base's
 * file, linked under names M kept from T; it is the client's file if it is the same object
 * (generation) in the same state. Then the client's name joins those names.
 */
async function sameFileInMerged(m: Ext4Writer, c: PathState): Promise<boolean> {
  if (c.kind === 'dir' || c.inode.i_links_count < 2) return false;
  const ino = c.inode.ino;
  const sb = m.fs.superblock;
  if (ino < sb.s_first_ino || ino > sb.s_inodes_count || (await m.inodeFree(ino))) return false;
  const inM = await m.fs.readInode(ino);
  if (inM.i_links_count === 0 || inM.i_generation !== c.inode.i_generation) return false;
  return sameState({ fs: m.fs, inode: inM, kind: kindOfMode(inM.i_mode) ?? 'file' }, c);
}

/** Whether path key `key` lies strictly below directory key `dir` (the root '/' holds every other path). */
function isBelow(key: string, dir: string): boolean {
  return key !== dir && key.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}
