/**
 * `imgdedup ls IMAGE[:PART] [PATH]`: lists a directory (or one file) of the ext2/3/4
 * filesystem inside an image chain, optionally long (-l) and recursive (-R).
 * Read-only: checksum mismatches and directory loops are reported as warnings, not errors.
 * Names are bytes; they are shown quoted where needed (ui/quoteName.ts), and PATH is
 * matched as bytes (UTF-8, or the quoted form).
 */
import { fileIsDisk, openChain } from '../diskimage/openChain.js';
import type { BlockDevice } from '../diskimage/BlockDevice.js';
import { SliceDevice } from '../diskimage/SliceDevice.js';
import { readPartitionTable } from '../diskimage/partition/readPartitionTable.js';
import { Ext4Fs, statTypeOf, type Ext4Stat, type InodeStatFields } from '../fs/ext4/Ext4Fs.js';
import { EXT4_ROOT_INO, S_IFDIR, S_IFLNK } from '../fs/ext4/constants.js';
import { absolutePath, compareBytes, joinPath, splitPath, utf8Bytes } from '../fs/ext4/names.js';
import type { Inode } from '../fs/ext4/inode.js';
import { nameFields, parsePathArg, plainAsciiText, plainAsciiTextAt, quoteName } from '../ui/quoteName.js';
import { UnsupportedError, UsageError } from '../errors.js';
import { detectFilesystem, isExtFilesystem, type FilesystemName } from '../diskimage/detectFilesystem.js';
import { parseImageArg } from './imageArg.js';

export interface LsOptions {
  /** IMAGE or IMAGE:PART (PART a partition number, as Linux numbers them). */
  readonly image: string;
  /** Path inside the filesystem, as typed (UTF-8, or quoted as ls prints names); default '/'. */
  readonly path?: string;
  /** Filesystem at this byte offset of the disk instead of a partition. */
  readonly offsetBytes?: number;
  readonly recursive?: boolean;
  /** Called for every entry, in listing order (sorted by name per directory; -R: depth-first pre-order). */
  readonly onEntry: (e: LsEntry) => void;
}

/**
 * One listed file, ready for JSON. `path`, `name` and `target` are the display forms (the
 * name's UTF-8 text, or quoted with escapes when it is not plain UTF-8 text); `pathBytes`,
 * `nameBytes` and `targetBytes` (base64 of the exact bytes) are present exactly when the
 * display form is quoted.
 */
export interface LsEntry {
  /** Absolute path within the filesystem. */
  readonly path: string;
  readonly pathBytes?: string;
  readonly name: string;
  readonly nameBytes?: string;
  readonly ino: number;
  readonly type: Ext4Stat['type'];
  /** Full i_mode (type and permission bits). */
  readonly mode: number;
  readonly links: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
  readonly mtimeNsec: number;
  /** Symlink target. */
  readonly target?: string;
  readonly targetBytes?: string;
  readonly rdev?: { readonly major: number; readonly minor: number };
}

export interface LsResult {
  readonly image: string;
  readonly partition: number | null;
  readonly offsetBytes: number;
  /** PATH, in display form. */
  readonly path: string;
  readonly entries: number;
  /**
   * Dirty states (a journal that needs recovery, recorded errors, orphans: what is listed
   * is the state on disk), then checksum mismatches and directory loops met while reading
   * (read-only commands go on).
   */
  readonly warnings: readonly string[];
}

/** Bytes that must all be zero for a place to count as blank: boot block and superblock. */
const BLANK_CHECK_BYTES = 4096;

/**
 * Refuses a device that holds a recognised filesystem other than ext2/3/4, naming it, or
 * nothing (zeros). Anything else unrecognised is left to the ext4 reader, whose error
 * names the bad superblock field.
 */
async function requireExt(device: BlockDevice, file: string, where: string, at: { offset?: number; deviceOffset: number }): Promise<void> {
  const found = await detectFilesystem(device);
  if (isExtFilesystem(found)) return;
  if (found === undefined) {
    // A blank place (a new partition, a wrong --offset into zeros) has no superblock to blame.
    const head = await device.read(0, Math.min(BLANK_CHECK_BYTES, device.size));
    if (!head.every((b) => b === 0)) return;
    throw new UnsupportedError('UNSUPPORTED_FORMAT', {
      file,
      ...at,
      detail: `${where} holds no recognised filesystem (its first ${head.length} bytes are zeros); ls reads ext2/3/4 filesystems only`,
    });
  }
  const what = found === 'jbd' ? 'an ext3/4 external journal' : found === 'swap' ? 'swap space' : found === 'LVM2_member' ? 'an LVM physical volume' : `a ${found} filesystem`;
  throw new UnsupportedError('UNSUPPORTED_FORMAT', {
    file,
    ...at,
    detail: `${where} holds ${what}; ls reads ext2/3/4 filesystems only`,
    filesystem: found,
  });
}

/**
 * Picks the filesystem device: partition PART, the disk at `offsetBytes`, the whole disk
 * when it has no partition table, or the only partition that holds an ext filesystem.
 * Throws USAGE (no such partition; several candidates), UNSUPPORTED_FORMAT (the chosen
 * place holds another filesystem, or no partition holds an ext one).
 */
export async function selectFilesystemDevice(
  disk: BlockDevice,
  file: string,
  sel: { partition?: number; offsetBytes?: number; fileIsDisk?: boolean },
): Promise<{ device: BlockDevice; partition: number | null; offsetBytes: number }> {
  // Error offsets (README, "Errors"): the disk byte, and the file byte for a raw image.
  const at = (diskByte: number): { offset?: number; deviceOffset: number } => ({ ...(sel.fileIsDisk === true ? { offset: diskByte } : {}), deviceOffset: diskByte });
  if (sel.partition !== undefined && sel.offsetBytes !== undefined) throw new UsageError('give either IMAGE:PART or --offset, not both');
  if (sel.offsetBytes !== undefined) {
    if (!Number.isSafeInteger(sel.offsetBytes) || sel.offsetBytes < 0 || sel.offsetBytes >= disk.size) throw new UsageError(`--offset ${sel.offsetBytes} is outside the disk (${disk.size} bytes)`);
    const device = new SliceDevice(disk, sel.offsetBytes, disk.size - sel.offsetBytes, { file });
    await requireExt(device, file, `--offset ${sel.offsetBytes}`, at(sel.offsetBytes));
    return { device, partition: null, offsetBytes: sel.offsetBytes };
  }
  const table = await readPartitionTable(disk, { file });
  if (sel.partition !== undefined) {
    const p = table.partitions.find((x) => x.index === sel.partition);
    if (p === undefined) throw new UsageError(`no partition ${sel.partition} (partitions: ${table.partitions.map((x) => x.index).join(', ') || 'none'})`, { file });
    if (p.kind === 'extended') {
      throw new UnsupportedError('UNSUPPORTED_FORMAT', { file, ...at(p.startBytes), detail: `partition ${p.index} is an extended partition (a container of logical partitions, numbered from 5), not a filesystem` });
    }
    await requireExt(p.device(), file, `partition ${p.index}`, at(p.startBytes));
    return { device: p.device(), partition: p.index, offsetBytes: p.startBytes };
  }
  if (table.scheme === 'none' || table.partitions.length === 0) {
    await requireExt(disk, file, 'the disk', at(0));
    return { device: disk, partition: null, offsetBytes: 0 };
  }
  const found: Array<{ index: number; startBytes: number; device: BlockDevice; fs: FilesystemName | undefined }> = [];
  for (const p of table.partitions) if (p.kind !== 'extended') found.push({ index: p.index, startBytes: p.startBytes, device: p.device(), fs: await detectFilesystem(p.device()) });
  const candidates = found.filter((p) => isExtFilesystem(p.fs));
  if (candidates.length === 1) return { device: candidates[0]!.device, partition: candidates[0]!.index, offsetBytes: candidates[0]!.startBytes };
  if (candidates.length === 0) {
    throw new UnsupportedError('UNSUPPORTED_FORMAT', {
      file,
      detail: `no partition holds an ext2/3/4 filesystem, which is what ls reads (${found.map((p) => `${p.index}: ${p.fs ?? 'unknown'}`).join(', ')})`,
    });
  }
  throw new UsageError(`several partitions hold ext filesystems (${candidates.map((p) => p.index).join(', ')}); name one as IMAGE:PART`, { file });
}

/**
 * The LsEntry of `inode` when it needs no I/O and no quoting: `pathText` is the path's
 * display form when it is known to be plain (printable ASCII), and the name is plain, and
 * the inode is no symlink (whose target is read) and no device. Then the entry is one
 * object literal, with no name scan of the whole path and no spreads (listings hold
 * 100,000s of entries). Undefined otherwise (entryOf).
 */
function plainEntryOf(inode: Inode, pathText: string | undefined, nameText: string | undefined): LsEntry | undefined {
  if (pathText === undefined || nameText === undefined) return undefined;
  // The fields statOf gives, read from the inode directly (no Ext4Stat per entry).
  const type = statTypeOf(inode.i_mode);
  if (type === 'symlink' || type === 'chardev' || type === 'blockdev') return undefined;
  const mtime = inode.mtime;
  return {
    path: pathText,
    name: nameText,
    ino: inode.ino,
    type,
    mode: inode.i_mode,
    links: inode.i_links_count,
    uid: inode.i_uid,
    gid: inode.i_gid,
    size: inode.i_size,
    mtime: mtime.sec,
    mtimeNsec: mtime.nsec,
  };
}

/** The LsEntry of `inode` (see plainEntryOf for the usual case). */
async function entryOf(fs: Ext4Fs, inode: Inode, path: Uint8Array | (() => Uint8Array), pathText: string | undefined, name: Uint8Array): Promise<LsEntry> {
  const plain = plainEntryOf(inode, pathText, plainAsciiText(name));
  if (plain !== undefined) return plain;
  const st = fs.statOf(inode);
  return {
    ...nameFields('path', typeof path === 'function' ? path() : path),
    ...nameFields('name', name),
    ino: inode.ino,
    type: st.type,
    mode: st.mode,
    links: st.links,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    mtime: st.mtime.sec,
    mtimeNsec: st.mtime.nsec,
    ...(st.type === 'symlink' ? nameFields('target', await fs.readlinkOf(inode)) : {}),
    ...(st.rdev ? { rdev: st.rdev } : {}),
  };
}

/** Symlinks followed while resolving one PATH, as Linux's MAXSYMLINKS: bounds a loop. */
const MAX_SYMLINK_HOPS = 40;

type Resolved = { ino: number } | { missing: string };

/**
 * Resolves PATH (bytes) as the kernel would inside the filesystem: symlinks in the middle,
 * and a last one when PATH ends in '/', are followed (absolute targets from the
 * filesystem's root, '..' at the root stays there); a trailing '/' demands a directory.
 */
async function resolveBytes(fs: Ext4Fs, path: Uint8Array): Promise<Resolved> {
  const mustBeDir = path.length > 1 && path[path.length - 1] === 0x2f;
  let todo = splitPath(path);
  // The directory the next component is looked up in.
  let dir = EXT4_ROOT_INO;
  let ino = EXT4_ROOT_INO;
  let hops = 0;
  while (todo.length > 0) {
    const name = todo[0]!;
    todo = todo.slice(1);
    const next = await fs.lookupIn(dir, name);
    if (next === undefined) return { missing: 'no such file or directory' };
    const inode = await fs.readInode(next);
    if ((inode.i_mode & 0o170000) === S_IFLNK && (todo.length > 0 || mustBeDir)) {
      if (++hops > MAX_SYMLINK_HOPS) return { missing: 'too many levels of symbolic links' };
      const target = await fs.readlinkOf(inode);
      if (target[0] === 0x2f) dir = EXT4_ROOT_INO;
      todo = [...splitPath(target), ...todo];
      continue;
    }
    if (todo.length > 0 && (inode.i_mode & 0o170000) !== S_IFDIR) return { missing: 'not a directory' };
    dir = next;
    ino = next;
  }
  if (mustBeDir && ((await fs.readInode(ino)).i_mode & 0o170000) !== S_IFDIR) return { missing: 'not a directory' };
  return { ino };
}

/** `text` as one POSIX shell word: single-quoted where it holds anything a shell would interpret. */
function shellWord(text: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The inode PATH names, and PATH's components as typed (what the listing shows). A part
 * in quotes may also be a name with literal quotes: when both readings exist and differ,
 * the choice is the user's (USAGE naming both); when one exists, it is used. Throws USAGE
 * for an empty PATH and for a PATH that does not resolve.
 */
async function resolvePathArg(fs: Ext4Fs, file: string, arg: string): Promise<{ ino: number; parts: Uint8Array[] }> {
  if (arg === '') throw new UsageError('PATH is empty (the root directory is "/")');
  const decoded = parsePathArg(arg);
  const literal = utf8Bytes(arg);
  const same = compareBytes(decoded, literal) === 0;
  const [d, l] = await Promise.all([resolveBytes(fs, decoded), same ? undefined : resolveBytes(fs, literal)]);
  if (l !== undefined && 'ino' in l) {
    if ('ino' in d && d.ino !== l.ino) {
      const asLiteral = quoteName(absolutePath(splitPath(literal)));
      const asDecoded = quoteName(absolutePath(splitPath(decoded)));
      // The suggestions are shell words, so that they can be pasted as they are printed.
      throw new UsageError(
        `${file}: PATH ${arg} is ambiguous: ${asLiteral} (with the quotes in its name) and ${asDecoded} both exist; give ${shellWord(asLiteral)} for the first or ${shellWord(asDecoded)} for the second`,
      );
    }
    return { ino: l.ino, parts: splitPath(literal) };
  }
  if ('ino' in d) return { ino: d.ino, parts: splitPath(decoded) };
  throw new UsageError(`${file}: ${quoteName(absolutePath(splitPath(decoded)))}: ${d.missing}`);
}

const DOT = 0x2e;

/** A directory's entry being listed: its name as text when plain ASCII (plainAsciiText), else as bytes. */
interface Child {
  readonly ino: number;
  readonly text: string | undefined;
  bytes: Uint8Array | undefined;
}

const byText = (a: Child, b: Child): number => (a.text! < b.text! ? -1 : a.text! > b.text! ? 1 : 0);
const byBytes = (a: Child, b: Child): number => compareBytes(a.bytes!, b.bytes!);

/**
 * Lists PATH: a directory's entries (without '.' and '..'), sorted by name bytes, or the
 * file itself; with `recursive`, every entry below PATH in depth-first pre-order (a
 * directory, then everything below it, then its next sibling), siblings sorted by name
 * bytes. A directory met again (a directory hard link or loop, which e2fsck reports as
 * corruption) is listed as an entry but not descended into again, with a warning, as
 * Ext4Fs.walk does. Throws USAGE (no such path), and what the image, partition and ext4
 * readers throw.
 */
export async function ls(options: LsOptions): Promise<LsResult> {
  const { image, partition } = parseImageArg(options.image);
  const chain = await openChain(image);
  try {
    const onDisk = fileIsDisk(chain);
    const sel = await selectFilesystemDevice(chain.device, image, {
      fileIsDisk: onDisk,
      ...(partition !== undefined ? { partition } : {}),
      ...(options.offsetBytes !== undefined ? { offsetBytes: options.offsetBytes } : {}),
    });
    const file = sel.partition !== null ? `${image}:${sel.partition}` : image;
    const fs = await Ext4Fs.open(sel.device, { file, verifyChecksums: 'warn', location: { diskStart: sel.offsetBytes, fileIsDisk: onDisk } });
    const dirty = await fs.readWarnings();
    const { ino, parts } = await resolvePathArg(fs, file, options.path ?? '/');
    const path = absolutePath(parts);
    let count = 0;
    const emit = (e: LsEntry): void => {
      count++;
      options.onEntry(e);
    };
    const loops: string[] = [];
    // Directory inode -> the path it was first listed at.
    const listed = new Map<number, Uint8Array>([[ino, path]]);
    // One holder for the fast path's inode fields (statFieldsCached), refilled per entry.
    const st: InodeStatFields = { mode: 0, links: 0, uid: 0, gid: 0, size: 0, mtimeSec: 0, mtimeNsec: 0 };
    // dirText: dirPath's display form when it is plain ASCII, so that children's paths are
    // its text + '/' + their name, without joining and scanning the bytes again.
    const listDir = async (dirIno: number, dirPath: Uint8Array, dirText: string | undefined): Promise<void> => {
      // Names taken from the directory blocks in place: plain ones as text (nearly all), others as bytes.
      const children: Child[] = [];
      let allPlain = true;
      await fs.forEachEntry(await fs.readInode(dirIno), (childIno, _fileType, bytes, at, len) => {
        if (bytes[at] === DOT && (len === 1 || (len === 2 && bytes[at + 1] === DOT))) return;
        const text = plainAsciiTextAt(bytes, at, len);
        if (text !== undefined) children.push({ ino: childIno, text, bytes: undefined });
        else {
          allPlain = false;
          // A copy (the block's bytes are a Buffer, whose slice is a view).
          children.push({ ino: childIno, text: undefined, bytes: new Uint8Array(bytes.subarray(at, at + len)) });
        }
      });
      // By name bytes: plain text orders as its bytes do, so text alone sorts a plain directory.
      if (allPlain) children.sort(byText);
      else {
        for (const c of children) c.bytes ??= utf8Bytes(c.text!);
        children.sort(byBytes);
      }
      // Their inodes in a few concurrent reads of the inode tables, then read in place without waiting.
      await fs.prefetchInodes(children.map((c) => c.ino));
      const parent = dirPath.length === 1 ? new Uint8Array(0) : dirPath;
      const prefix = dirText === undefined ? undefined : dirPath.length === 1 ? '/' : `${dirText}/`;
      // Pre-order: each entry, then (with -R) everything below it, before its next sibling.
      // Only the entries of the directories on the current path are held, never the tree.
      // (The child's path bytes are joined only where needed: directories, names to quote.)
      const entries: LsEntry[] = [];
      for (const c of children) {
        const pathText = prefix === undefined || c.text === undefined ? undefined : prefix + c.text;
        if (pathText !== undefined && fs.statFieldsCached(c.ino, st)) {
          // Same fields, in the same order (--json), as plainEntryOf.
          entries.push({
            path: pathText,
            name: c.text!,
            ino: c.ino,
            type: statTypeOf(st.mode),
            mode: st.mode,
            links: st.links,
            uid: st.uid,
            gid: st.gid,
            size: st.size,
            mtime: st.mtimeSec,
            mtimeNsec: st.mtimeNsec,
          });
          continue;
        }
        const name = c.bytes ?? utf8Bytes(c.text!);
        const inode = fs.cachedInode(c.ino) ?? (await fs.readInode(c.ino));
        entries.push(plainEntryOf(inode, pathText, c.text) ?? (await entryOf(fs, inode, () => joinPath(parent, name), pathText, name)));
      }
      if (options.recursive) fs.prefetchDirectories(entries.filter((e) => e.type === 'dir' && !listed.has(e.ino)).map((e) => e.ino));
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        emit(e);
        if (!options.recursive || e.type !== 'dir') continue;
        const c = children[i]!;
        const childIno = e.ino;
        const childPath = joinPath(parent, c.bytes ?? utf8Bytes(c.text!));
        const first = listed.get(childIno);
        if (first !== undefined) {
          loops.push(`${file}: ${quoteName(childPath)} is directory inode ${childIno}, already listed as ${quoteName(first)} (a directory hard link or loop: corrupt); not descended into again`);
          continue;
        }
        listed.set(childIno, childPath);
        await listDir(childIno, childPath, prefix === undefined || c.text === undefined ? undefined : prefix + c.text);
      }
    };
    const top = await fs.readInode(ino);
    if ((top.i_mode & 0o170000) === S_IFDIR) await listDir(ino, path, plainAsciiText(path));
    else emit(await entryOf(fs, top, path, plainAsciiText(path), parts[parts.length - 1] ?? path));
    return {
      image,
      partition: sel.partition,
      offsetBytes: sel.offsetBytes,
      path: quoteName(path),
      entries: count,
      warnings: [...dirty, ...fs.diagnostics.map((d) => d.message), ...loops],
    };
  } finally {
    await chain.close();
  }
}

const TYPE_CHARS: Readonly<Record<Ext4Stat['type'], string>> = {
  file: '-',
  dir: 'd',
  symlink: 'l',
  chardev: 'c',
  blockdev: 'b',
  fifo: 'p',
  socket: 's',
  unknown: '?',
};

/** `drwxr-xr-x`-style mode string, with setuid/setgid/sticky as ls shows them. */
export function modeString(type: Ext4Stat['type'], mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string): string =>
    `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return (
    TYPE_CHARS[type] +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

let lastMinute = NaN;
let lastMinuteText = '';

/** The mtime column with the spaces around it (' 2020-09-13 12:26 '), in UTC. */
function formatTime(sec: number): string {
  // Files listed together mostly share their minute: format each minute once.
  const minute = Math.floor(sec / 60);
  if (minute === lastMinute) return lastMinuteText;
  const d = new Date(sec * 1000);
  lastMinuteText = ` ${Number.isNaN(d.getTime()) ? '?' : d.toISOString().slice(0, 16).replace('T', ' ')} `;
  lastMinute = minute;
  return lastMinuteText;
}

/** modeString results by type and mode: a listing has few distinct ones. */
const modeStrings = new Map<string, string>();

/**
 * The columns before the size ('-rw-r--r--   1     0     0 '), kept for the last entry's
 * values: the files of a directory mostly share them, so most lines reuse one string.
 */
const lastHead = { type: '' as string, mode: -1, links: -1, uid: -1, gid: -1, text: '' };

function headColumns(e: LsEntry): string {
  const h = lastHead;
  if (e.type === h.type && e.mode === h.mode && e.links === h.links && e.uid === h.uid && e.gid === h.gid) return h.text;
  const key = `${e.type}${e.mode}`;
  let mode = modeStrings.get(key);
  if (mode === undefined) modeStrings.set(key, (mode = modeString(e.type, e.mode)));
  h.type = e.type;
  h.mode = e.mode;
  h.links = e.links;
  h.uid = e.uid;
  h.gid = e.gid;
  h.text = `${mode} ${padded(e.links, 3)} ${padded(e.uid, 5)} ${padded(e.gid, 5)} `;
  return h.text;
}

/** One line of output: the name (the path with -R), or with `long` the `ls -l` columns (UTC times). */
export function formatLsEntry(e: LsEntry, options: { long?: boolean; recursive?: boolean }): string {
  const name = options.recursive ? e.path : e.name;
  if (!options.long) return name;
  const size = e.rdev ? `${e.rdev.major}, ${e.rdev.minor}`.padStart(10) : padded(e.size, 10);
  const shown = e.target !== undefined ? `${name} -> ${e.target}` : name;
  return headColumns(e) + size + formatTime(e.mtime) + shown;
}

/** Padded forms of small numbers (link counts, uids, gids: few distinct values per listing), by width. */
const paddedSmall = new Map<number, string[]>();

/** `n` right-aligned in `width` columns. */
function padded(n: number, width: number): string {
  if (n >= 1024 || !Number.isInteger(n) || n < 0) return String(n).padStart(width);
  let forWidth = paddedSmall.get(width);
  if (forWidth === undefined) paddedSmall.set(width, (forWidth = []));
  return (forWidth[n] ??= String(n).padStart(width));
}
