/**
 * Applies an update source to an ext4 filesystem through the writer, with OCI layer
 * semantics (image-spec, layer.md): entries replace what is at their path (a directory
 * over a directory keeps its children), whiteouts delete, an opaque directory loses the
 * children the layers below gave it. Parents that do not exist are created (0755,
 * root), as container runtimes do. Before anything is written, the space the update
 * needs is checked against the space free (NO_SPACE).
 */
import { EXT4_GOOD_OLD_INODE_SIZE } from '../fs/ext4/constants.js';
import { storableSeconds } from '../fs/ext4/inode.js';
import { RefusedError } from '../errors.js';
import type { Ext4Writer, NodeAttrs, NodeContent, WriteReport } from '../fs/ext4/Ext4Writer.js';
import { byteKey, joinPath, splitPath } from '../fs/ext4/names.js';
import { roughBlocksNeeded } from './summarizeUpdate.js';
import type { EntryMeta, UpdateEntry, UpdateSource } from './UpdateEntry.js';
import { UnchangedEntries } from './unchangedEntry.js';
import { DirectoriesOnPaths } from './directoriesOnPaths.js';

export interface ApplySummary {
  /** Paths that did not exist before and do now (any type). */
  readonly added: number;
  /** Paths that existed and were replaced or changed. */
  readonly replaced: number;
  /** Paths removed (whiteouts, opaque directories, replaced subtrees), each path once. */
  readonly deleted: number;
  /** Entries left alone because the filesystem already held them as they are (with `skipUnchanged`). */
  readonly unchanged: number;
  /** File content bytes written, to files the update leaves in place (a file a later layer deletes does not count). */
  readonly bytesWritten: number;
  /** Things the user should know (a whiteout for a path that does not exist). */
  readonly warnings: readonly string[];
  /**
   * Directories a layer made opaque (OCI): applied to another filesystem, the update also
   * removes what that one added there. The rebase's merge needs them (a client's addition
   * below one is a conflict).
   */
  readonly opaqueDirs: readonly Uint8Array[];
}

export interface ApplyOptions {
  /** Called with the entries done so far and the layer's name. */
  readonly onProgress?: (entriesDone: number, layer: string) => void;
  /** Leave directory times as the writer's changes left them (default: the update's times are set again after each layer, as container runtimes do). */
  readonly keepDirTimes?: boolean;
  /**
   * Leave alone files, symlinks and directories the filesystem already holds as the update
   * has them (see unchangedEntry.ts): an update applied again rewrites nothing. `apply` and
   * the rebase's T both set it; a path left alone is not in the writer's report.
   */
  readonly skipUnchanged?: boolean;
  /** checkSpace's figures, for a NO_SPACE met after it passed (the estimate was short). */
  readonly estimate?: { readonly neededBytes: number; readonly freeBytes: number; readonly creditBytes: number; readonly entries: number };
}

function attrsOf(meta: EntryMeta): NodeAttrs {
  return { mode: meta.mode, uid: meta.uid, gid: meta.gid, mtime: meta.mtime, ...(meta.atime ? { atime: meta.atime } : {}), xattrs: meta.xattrs };
}

function contentOf(e: Exclude<UpdateEntry, { kind: 'whiteout' | 'opaque' | 'hardlink' }>): NodeContent {
  switch (e.kind) {
    case 'file':
      return { kind: 'file', size: e.size, data: () => e.open() };
    case 'dir':
      return { kind: 'dir' };
    case 'symlink':
      return { kind: 'symlink', target: e.target };
    case 'chardev':
    case 'blockdev':
      return { kind: e.kind, major: e.major, minor: e.minor };
    case 'fifo':
    case 'socket':
      return { kind: e.kind };
  }
}

const show = (p: Uint8Array): string => new TextDecoder().decode(p);

/**
 * Checks that the update fits: the blocks its files, directories and symlinks need
 * against the blocks free (under the writer's constraints) plus those the files it
 * replaces or deletes hold now. Throws NO_SPACE with both figures. Also returns the
 * directories the update goes through (for checkDirectoriesOnPaths).
 */
export async function checkSpace(writer: Ext4Writer, source: UpdateSource, file: string): Promise<{ neededBytes: number; freeBytes: number; creditBytes: number; entries: number; dirsOnPaths: readonly Uint8Array[] }> {
  const bs = writer.blockSize;
  let needed = 0;
  let credit = 0;
  let entries = 0;
  let inodesNeeded = 0;
  const dirs = new DirectoriesOnPaths();
  for await (const layer of source.layers()) {
    for await (const e of layer.entries()) {
      entries++;
      dirs.addAncestors(e.path);
      if (e.kind === 'opaque') dirs.addDirectory(e.path);
      needed += roughBlocksNeeded(e, bs);
      // A new path takes an inode; a replaced one frees one first (unless the constraints keep it
      // from being used again: the rebase's clients use it), a directory over a directory keeps its own.
      if (e.kind === 'opaque' || e.kind === 'hardlink') continue;
      const ino = await writer.lookup(e.path).catch(() => undefined);
      if (e.kind !== 'whiteout' && (ino === undefined || (writer.inodeAvoided(ino) && !(e.kind === 'dir' && (await writer.fs.stat(ino)).type === 'dir')))) inodesNeeded++;
      if (e.kind === 'file' || e.kind === 'whiteout') {
        if (ino !== undefined) {
          const st = await writer.fs.stat(ino);
          // Under constraints (the rebase) the blocks a replaced file frees are the clients' still: no credit.
          if (st.type === 'file' && st.links === 1 && !writer.blocksConstrained) credit += Math.floor((st.blocks512 * 512) / bs);
        }
      }
    }
  }
  const free = await writer.freeBytes();
  const neededBytes = needed * bs;
  const freeInodes = await writer.freeInodes();
  if (inodesNeeded > freeInodes) {
    throw new RefusedError('NO_SPACE', { file, structure: 'ext4', detail: `the update needs ${inodesNeeded} new inodes, the filesystem has ${freeInodes} free inodes${freeInodes < writer.fs.superblock.s_free_inodes_count ? ` that the constraints allow (of ${writer.fs.superblock.s_free_inodes_count})` : ''}`, inodesNeeded, inodesFree: freeInodes });
  }
  if (neededBytes > free + credit * bs) {
    throw new RefusedError('NO_SPACE', {
      file,
      structure: 'ext4',
      detail: `the update needs ${neededBytes} bytes, the filesystem has ${free} free (and ${credit * bs} in files the update replaces)`,
      bytesNeeded: neededBytes,
      bytesFree: free,
    });
  }
  return { neededBytes, freeBytes: free, creditBytes: credit * bs, entries, dirsOnPaths: dirs.paths };
}

/**
 * Applies every layer of `source` in order. Throws BAD_UPDATE (a hard link to a path that
 * does not exist, a path through a non-directory), NO_SPACE, and what the writer throws.
 */
export async function applyUpdate(writer: Ext4Writer, source: UpdateSource, options: ApplyOptions = {}): Promise<{ summary: ApplySummary; report: WriteReport }> {
  const warnings: string[] = [];
  let done = 0;
  let unchanged = 0;
  const same = options.skipUnchanged ? new UnchangedEntries(writer) : undefined;
  // Times the filesystem's inodes cannot hold are clamped (as the kernel does): said, not silent.
  const range = storableSeconds(writer.fs.superblock.s_inode_size > EXT4_GOOD_OLD_INODE_SIZE);
  let clamped = 0;
  let firstClamped: Uint8Array | undefined;
  const opaqueDirs: Uint8Array[] = [];
  for await (const layer of source.layers()) {
    // The paths this layer itself puts, so an opaque marker met after them keeps them.
    const own = new Set<string>();
    for await (const e of layer.entries()) if (e.kind !== 'whiteout' && e.kind !== 'opaque') own.add(byteKey(e.path));
    // Adding entries to a directory sets its mtime to now; its own entry's times are set again at the end.
    const dirs: Array<{ path: Uint8Array; meta: EntryMeta }> = [];
    /** Paths this layer has put so far. */
    const putHere = new Set<string>();
    /**
     * Where this layer's paths landed (their directory's inode, their name): two paths
     * that reach one place through a symlink to a directory in BASE (`lib/x` and
     * `usr/lib/x` over `/lib -> usr/lib`) are said, not silently one over the other.
     */
    const landed = new Map<string, Uint8Array>();
    const noteLanding = async (path: Uint8Array): Promise<void> => {
      const cut = path.lastIndexOf(0x2f);
      if (cut < 0) return;
      const dirIno = await writer.resolveDir(splitPath(path.subarray(0, cut)), path, { notDirIsMissing: true }).catch(() => undefined);
      if (dirIno === undefined) return;
      const k = `${dirIno}/${byteKey(path.subarray(cut + 1))}`;
      const earlier = landed.get(k);
      if (earlier !== undefined && byteKey(earlier) !== byteKey(path)) warnings.push(`${layer.name}: ${show(path)} and ${show(earlier)} are one path in BASE (through a symlink to a directory): the later, ${show(path)}, is what the filesystem holds`);
      landed.set(k, path);
    };
    for await (const e of layer.entries()) {
      try {
        await applyEntry(e);
      } catch (err) {
        throw shortOfSpace(err, e.path, done, options.estimate);
      }
      if (e.kind !== 'whiteout' && e.kind !== 'opaque') putHere.add(byteKey(e.path));
      options.onProgress?.(++done, layer.name);
    }
    async function applyEntry(e: UpdateEntry): Promise<void> {
      switch (e.kind) {
        case 'whiteout': {
          // Whiteouts hide what the layers below have (OCI image-spec, layer.md): never what this layer itself put.
          const key = byteKey(e.path);
          if (putHere.has(key) && !(await isDirectory(writer, e.path))) break;
          if (putAtOrBelow(putHere, key)) {
            // The layer put this directory, or something in it, before its whiteout (GNU tar lists
            // `old/` before `.wh.old`): what lay below is hidden, what the layer put stays, as
            // an opaque directory's (found by a new user: the base's children were kept).
            opaqueDirs.push(e.path);
            await hideLower(writer, e.path, own);
            break;
          }
          if (!(await writer.remove(e.path))) warnings.push(`${layer.name}: whiteout for ${show(e.path)}, which does not exist`);
          break;
        }
        case 'opaque':
          opaqueDirs.push(e.path);
          await hideLower(writer, e.path, own);
          break;
        case 'hardlink':
          await ensureParents(writer, e.path);
          await writer.hardlink(e.path, e.target);
          break;
        default:
          if ([e.meta.mtime, e.meta.atime].some((t) => t !== undefined && (t.sec < range.min || t.sec > range.max))) {
            clamped++;
            firstClamped ??= e.path;
          }
          if (same !== undefined && (await same.matches(e))) {
            await noteLanding(e.path);
            unchanged++;
            if (e.kind === 'dir') dirs.push({ path: e.path, meta: e.meta });
            break;
          }
          if (splitPath(e.path).length === 0) {
            // The root itself (a tar's "./"): only a directory can stand there; it takes the attributes.
            if (e.kind !== 'dir') throw new RefusedError('BAD_UPDATE', { file: layer.name, path: '/', detail: `the root cannot become a ${e.kind}` });
            await writer.setAttrs(e.path, attrsOf(e.meta));
            dirs.push({ path: e.path, meta: e.meta });
            break;
          }
          await ensureParents(writer, e.path);
          if (e.kind === 'dir') {
            const link = await symlinkToDirectory(writer, e.path);
            if (link !== undefined) {
              // Merged /usr (/lib -> usr/lib): a tree's directories only hold what is below them,
              // so the tree goes through the link, as dpkg does; a tar layer's directory entry
              // replaces it (OCI), which the user must hear about.
              if (source.kind === 'tree') {
                warnings.push(`${show(e.path)}: BASE has a symlink to a directory there (-> ${show(link)}); the update's directory was followed into it`);
                break;
              }
              warnings.push(`${show(e.path)}: the layer's directory replaced BASE's symlink to a directory (-> ${show(link)}), as OCI layers do; what it pointed to is no longer reached through ${show(e.path)}`);
            }
          }
          await noteLanding(e.path);
          await writer.put(e.path, contentOf(e), attrsOf(e.meta));
          if (e.kind === 'dir') dirs.push({ path: e.path, meta: e.meta });
      }
    }
    if (!options.keepDirTimes) {
      for (const d of dirs) {
        if ((await writer.lookup(d.path)) === undefined) continue;
        // A directory nothing was added to or removed from keeps its time: no inode rewritten for nothing.
        if (same !== undefined && (await same.mtimeIs(d.path, d.meta.mtime))) continue;
        await writer.setTimes(d.path, d.meta.mtime, d.meta.atime ?? d.meta.mtime);
      }
    }
  }
  const report = await writer.commit();
  // Count each path once by its first state and its last.
  const first = new Map<string, boolean>();
  const last = new Map<string, boolean>();
  for (const c of report.changes) {
    const k = byteKey(c.path);
    if (!first.has(k)) first.set(k, c.before !== null);
    last.set(k, c.after !== null);
  }
  let added = 0;
  let replaced = 0;
  let deleted = 0;
  for (const [k, existed] of first) {
    const exists = last.get(k)!;
    if (!existed && exists) added++;
    else if (existed && exists) replaced++;
    else if (existed && !exists) deleted++;
  }
  if (clamped > 0) {
    warnings.push(
      `${clamped} entr${clamped === 1 ? 'y has' : 'ies have'} times this filesystem cannot store (its ${writer.fs.superblock.s_inode_size}-byte inodes hold ${new Date(range.min * 1000).toISOString().slice(0, 10)} to ${new Date(range.max * 1000).toISOString().slice(0, 10)}): clamped to the nearest (first: ${show(firstClamped!)})`,
    );
  }
  return { summary: { added, replaced, deleted, unchanged, bytesWritten: report.bytesWritten, warnings: [...source.warnings, ...warnings], opaqueDirs }, report };
}

/**
 * A NO_SPACE met half-way, said as the update's: the estimate passed, and an allocation of a
 * few blocks failed (found by a new user: "17408 bytes needed, 0 free" read as if 17 KiB
 * more would do). Other errors are returned as they are.
 */
function shortOfSpace(err: unknown, path: Uint8Array, done: number, estimate: ApplyOptions['estimate']): unknown {
  if (!(err instanceof RefusedError) || err.code !== 'NO_SPACE' || estimate === undefined) return err;
  const detail = `the filesystem ran out of room at ${show(path)}, after ${done} of the update's ${estimate.entries} entries (${String(err.data['detail'] ?? '')}); the update was estimated at ${estimate.neededBytes} bytes, against ${estimate.freeBytes} free and ${estimate.creditBytes} in the files it replaces, and needs more: the new directory, extent and xattr blocks its files take (make room, or a larger filesystem); nothing was written`;
  return new RefusedError('NO_SPACE', { ...err.data, detail, path: show(path), estimatedBytesNeeded: estimate.neededBytes, bytesFreeBefore: estimate.freeBytes });
}

/** Whether `set` holds path key `key` or a path below it. */
function putAtOrBelow(set: ReadonlySet<string>, key: string): boolean {
  if (set.has(key)) return true;
  const prefix = key.endsWith('/') ? key : `${key}/`;
  for (const k of set) if (k.startsWith(prefix)) return true;
  return false;
}

async function isDirectory(writer: Ext4Writer, path: Uint8Array): Promise<boolean> {
  const ino = await writer.lookup(path);
  return ino !== undefined && (await writer.fs.stat(ino)).type === 'dir';
}

/**
 * Removes what lies below directory `dir` that the layer does not put (`own`, path keys),
 * keeping what it does and the directories on the way to it: the layers below are hidden,
 * this one's entries are not, whichever comes first in the layer.
 */
async function hideLower(writer: Ext4Writer, dir: Uint8Array, own: ReadonlySet<string>): Promise<void> {
  for (const name of await writer.children(dir)) {
    const p = joinPath(dir, name);
    const k = byteKey(p);
    if (!putAtOrBelow(own, k)) await writer.remove(p);
    else if (await isDirectory(writer, p)) await hideLower(writer, p, own);
  }
}

/** Creates missing parent directories of `path` (0755, root, the writer's time). */
async function ensureParents(writer: Ext4Writer, path: Uint8Array): Promise<void> {
  // Entry paths are normalised ('/a/b'): the parent is what comes before the last '/'.
  const cut = path.lastIndexOf(0x2f);
  if (cut <= 0) return;
  // The usual case, the parent exists: one resolution, not one per ancestor.
  if ((await writer.lookup(path.subarray(0, cut))) !== undefined) return;
  const parts = splitPath(path);
  let cur: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < parts.length - 1; i++) {
    cur = joinPath(cur, parts[i]!);
    if ((await writer.lookup(cur)) === undefined) await writer.put(cur, { kind: 'dir' }, { mode: 0o755, uid: 0, gid: 0 });
  }
}

/** The target of the symlink at `path` when it leads to a directory inside the filesystem, else undefined. */
async function symlinkToDirectory(writer: Ext4Writer, path: Uint8Array): Promise<Uint8Array | undefined> {
  const ino = await writer.lookup(path);
  if (ino === undefined) return undefined;
  const inode = await writer.fs.readInode(ino);
  if (writer.fs.statOf(inode).type !== 'symlink') return undefined;
  const dir = await writer.resolveDir(splitPath(path), path).catch(() => undefined);
  return dir === undefined ? undefined : writer.fs.readlinkOf(inode);
}
