/**
 * `imgdedup ls IMAGE[:PART] [PATH]`: lists a directory (or one file) of the ext2/3/4
 * filesystem inside an image chain, optionally long (-l) and recursive (-R).
 * Read-only. A checksum mismatch is BAD_CHECKSUM (as for diff), or with ignoreChecksums a
 * warning; directory loops are warnings.
 * Names are bytes; they are shown quoted where needed (ui/quoteName.ts), and PATH is
 * matched as bytes (UTF-8, or the quoted form).
 */
import { fileIsDisk, openChain } from '../diskimage/openChain.js';
import type { BlockDevice } from '../diskimage/BlockDevice.js';
import { SliceDevice } from '../diskimage/SliceDevice.js';
import { readPartitionTable } from '../diskimage/partition/readPartitionTable.js';
import { Ext4Fs, statTypeOf, type DirListing, type Ext4Stat } from '../fs/ext4/Ext4Fs.js';
import { EXT4_ROOT_INO, S_IFDIR, S_IFLNK } from '../fs/ext4/constants.js';
import { absolutePath, compareBytes, joinPath, splitPath, utf8Bytes } from '../fs/ext4/names.js';
import type { Inode } from '../fs/ext4/inode.js';
import { nameFields, parsePathArg, parsePathArgBytes, plainAsciiText, quoteName, quoteSpaced } from '../ui/quoteName.js';
import type { ByteSink } from '../ui/DeferredStdout.js';
import { UnsupportedError, UsageError } from '../errors.js';
import { detectFilesystem, isExtFilesystem, type FilesystemName } from '../diskimage/detectFilesystem.js';
import { parseImageArg } from './imageArg.js';

export interface LsOptions {
  /** IMAGE or IMAGE:PART (PART a partition number, as Linux numbers them). */
  readonly image: string;
  /** Path inside the filesystem, as typed (UTF-8, or quoted as ls prints names); default '/'. */
  readonly path?: string;
  /**
   * PATH's exact bytes, when `path` lost some: bytes that are not UTF-8, which Node decodes
   * to U+FFFD, recovered by the caller (cli.ts, from /proc/self/cmdline). Then they are PATH.
   */
  readonly pathBytes?: Uint8Array;
  /** Filesystem at this byte offset of the disk instead of a partition. */
  readonly offsetBytes?: number;
  readonly recursive?: boolean;
  /**
   * List a filesystem whose metadata checksums fail (as `debugfs -n`): each mismatch is a
   * warning (once per structure) instead of BAD_CHECKSUM.
   */
  readonly ignoreChecksums?: boolean;
  /** Called for every entry, in listing order (sorted by name per directory; -R: depth-first pre-order). */
  readonly onEntry?: (e: LsEntry) => void;
  /**
   * Instead of onEntry: every entry's line (formatLsEntry's, `long` or not, the path with
   * `recursive`) and a newline, in UTF-8 into `sink`; most lines written there byte by
   * byte from the directory's names and the inodes' fields, with no LsEntry or string.
   */
  readonly lines?: { readonly sink: ByteSink; readonly long: boolean };
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
   * is the state on disk), then checksum mismatches (with ignoreChecksums; each once) and
   * directory loops met while reading (read-only commands go on).
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
async function resolvePathArg(fs: Ext4Fs, file: string, arg: string, argBytes: Uint8Array | undefined): Promise<{ ino: number; parts: Uint8Array[] }> {
  if (arg === '') throw new UsageError('PATH is empty (the root directory is "/")');
  const decoded = argBytes !== undefined ? parsePathArgBytes(argBytes) : parsePathArg(arg);
  const literal = argBytes ?? utf8Bytes(arg);
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
  // Node hands over arguments decoded as UTF-8, bytes that are not replaced by U+FFFD. When
  // the caller could not recover them, such a name can only be given in its quoted form.
  const lossy =
    argBytes === undefined && arg.includes('\uFFFD')
      ? ' (PATH held bytes that are not UTF-8, shown as \uFFFD, and their values could not be read: give the path in the quoted form ls prints, with an octal escape for each such byte, e.g. "/srv/caf\\351" for the byte 0xe9)'
      : '';
  throw new UsageError(`${file}: ${quoteName(absolutePath(splitPath(decoded)))}: ${d.missing}${lossy}`);
}

/** A listing being shown, and how its entries' paths are written. */
interface Frame {
  readonly l: DirListing;
  /** The next entry to show. */
  next: number;
  /** What entries' paths are joined to (the listing's path, or nothing for '/'). */
  readonly base: Uint8Array;
  /** The listing's path + '/' (just '/' for the root) when its path is plain (plainAsciiText), as text and as bytes; else undefined. */
  readonly prefixText: string | undefined;
  readonly prefixBytes: Uint8Array | undefined;
  /** Whether that prefix holds a space (then a -R text line quotes the path: quoteSpaced). */
  readonly prefixSpaced: boolean;
}

function frameOf(l: DirListing): Frame {
  const root = l.path.length === 1 && l.path[0] === SLASH;
  const text = plainAsciiText(l.path);
  const prefixText = text === undefined ? undefined : root ? '/' : `${text}/`;
  return {
    l,
    next: 0,
    base: root ? new Uint8Array(0) : l.path,
    prefixText,
    prefixBytes: prefixText === undefined ? undefined : utf8Bytes(prefixText),
    prefixSpaced: prefixText?.includes(' ') === true,
  };
}

/** Whether entry i's name is plain (plainAsciiText's test), in place; with `noSpace`, and holds no space (quoteSpaced leaves it as it is). */
function plainNameAt(l: DirListing, i: number, noSpace: boolean): boolean {
  const b = l.names;
  const low = noSpace ? 0x21 : 0x20;
  for (let k = l.nameStart[i]!, end = l.nameStart[i + 1]!; k < end; k++) {
    const c = b[k]!;
    if (c < low || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/**
 * The LsEntry of entry i of a listing whose path is plain, when its name is plain and it
 * is no symlink or device (no inode kept for it): its stat columns, in the order
 * plainEntryOf gives them (--json).
 */
function plainEntry(l: DirListing, i: number, prefixText: string): LsEntry {
  const name = l.names.toString('latin1', l.nameStart[i]!, l.nameStart[i + 1]!);
  return { path: prefixText + name, name, ...statColumns(l, i) };
}

/** Entry i's fields after its path and name, from the listing's stat columns, in LsEntry's order. */
function statColumns(l: DirListing, i: number): Omit<LsEntry, 'path' | 'name'> {
  return {
    ino: l.ino[i]!,
    type: statTypeOf(l.mode[i]!),
    mode: l.mode[i]!,
    links: l.links[i]!,
    uid: l.uid[i]!,
    gid: l.gid[i]!,
    size: l.size[i]!,
    mtime: l.mtimeSec[i]!,
    mtimeNsec: l.mtimeNsec[i]!,
  };
}

/** The LsEntry of entry i of frame f (any entry: quoted names, symlinks' targets, devices). */
async function listedEntry(fs: Ext4Fs, f: Frame, i: number): Promise<LsEntry> {
  const l = f.l;
  const name = l.name(i);
  const nameText = plainAsciiText(name);
  const pathText = f.prefixText === undefined || nameText === undefined ? undefined : f.prefixText + nameText;
  const inode = l.inodes.get(i);
  if (inode !== undefined) return plainEntryOf(inode, pathText, nameText) ?? (await entryOf(fs, inode, () => joinPath(f.base, name), pathText, name));
  // A file, directory, fifo or socket: its stat columns say all (as entryOf would from its inode).
  return {
    ...(pathText !== undefined ? { path: pathText } : nameFields('path', joinPath(f.base, name))),
    ...nameFields('name', name),
    ...statColumns(l, i),
  };
}

const SLASH = 0x2f;

/**
 * Lists PATH: a directory's entries (without '.' and '..'), sorted by name bytes, or the
 * file itself; with `recursive`, every entry below PATH in depth-first pre-order (a
 * directory, then everything below it, then its next sibling), siblings sorted by name
 * bytes. A directory met again (a directory hard link or loop, which e2fsck reports as
 * corruption) is listed as an entry but not descended into again, with a warning, as
 * Ext4Fs.walk does. Throws USAGE (no such path), BAD_CHECKSUM (a metadata checksum fails,
 * unless ignoreChecksums), and what the image, partition and ext4 readers throw.
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
    const fs = await Ext4Fs.open(sel.device, { file, verifyChecksums: options.ignoreChecksums === true ? 'warn' : 'error', location: { diskStart: sel.offsetBytes, fileIsDisk: onDisk } });
    const dirty = await fs.readWarnings();
    const { ino, parts } = await resolvePathArg(fs, file, options.path ?? '/', options.pathBytes);
    const path = absolutePath(parts);
    let count = 0;
    const loops: string[] = [];
    const lineOptions = { ...(options.lines?.long === true ? { long: true } : {}), ...(options.recursive ? { recursive: true } : {}) };
    const writer = options.lines === undefined ? undefined : new LineWriter(options.lines.sink, options.lines.long, options.recursive === true);
    const emit = (e: LsEntry): void => {
      count++;
      if (writer !== undefined) writer.sink.write(`${formatLsEntry(e, lineOptions)}\n`);
      else options.onEntry?.(e);
    };
    const top = await fs.readInode(ino);
    fs.requireRootDirectory(top);
    if ((top.i_mode & 0o170000) !== S_IFDIR) emit(await entryOf(fs, top, path, plainAsciiText(path), parts[parts.length - 1] ?? path));
    else {
      // Pre-order: each entry, then (with -R) everything below it, before its next sibling.
      // The walk yields a directory's listing when the entry it belongs to comes next; only
      // the listings of the directories on the current path are held, never the tree.
      const frames: Frame[] = [];
      const emitUpTo = async (f: Frame, end: number): Promise<void> => {
        for (const stop = Math.min(end, f.l.count); f.next < stop; f.next++) {
          const i = f.next;
          // Text lines quote names (and -R paths) that hold a space: those take the general way.
          const spaced = writer !== undefined && options.recursive === true && f.prefixSpaced;
          if (f.prefixBytes !== undefined && !spaced && !f.l.inodes.has(i) && plainNameAt(f.l, i, writer !== undefined)) {
            count++;
            if (writer !== undefined) writer.row(f.l, i, f.prefixBytes);
            else options.onEntry?.(plainEntry(f.l, i, f.prefixText!));
          } else emit(await listedEntry(fs, f, i));
        }
      };
      const walk = fs.listings({
        start: ino,
        startPath: path,
        stat: true,
        sorted: true,
        recursive: options.recursive === true,
        onRevisit: (childPath, childIno, first) =>
          loops.push(`${file}: ${quoteName(childPath)} is directory inode ${childIno}, already listed as ${quoteName(first)} (a directory hard link or loop: corrupt); not descended into again`),
      });
      for await (const l of walk) {
        if (l.parent !== undefined) {
          // The listings above it whose entries are all shown end; its parent's go up to it.
          while (frames[frames.length - 1]!.l !== l.parent) await emitUpTo(frames.pop()!, Number.POSITIVE_INFINITY);
          await emitUpTo(frames[frames.length - 1]!, l.parentIndex + 1);
        }
        frames.push(frameOf(l));
      }
      while (frames.length > 0) await emitUpTo(frames.pop()!, Number.POSITIVE_INFINITY);
    }
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

/** The columns before the size ('-rw-r--r--   1     0     0 '). */
function headText(type: Ext4Stat['type'], mode: number, links: number, uid: number, gid: number): string {
  const key = `${type}${mode}`;
  let m = modeStrings.get(key);
  if (m === undefined) modeStrings.set(key, (m = modeString(type, mode)));
  return `${m} ${padded(links, 3)} ${padded(uid, 5)} ${padded(gid, 5)} `;
}

/**
 * headText kept for the last entry's values: the files of a directory mostly share them,
 * so most lines reuse one string.
 */
const lastHead = { type: '' as string, mode: -1, links: -1, uid: -1, gid: -1, text: '' };

function headColumns(e: LsEntry): string {
  const h = lastHead;
  if (e.type === h.type && e.mode === h.mode && e.links === h.links && e.uid === h.uid && e.gid === h.gid) return h.text;
  h.type = e.type;
  h.mode = e.mode;
  h.links = e.links;
  h.uid = e.uid;
  h.gid = e.gid;
  h.text = headText(e.type, e.mode, e.links, e.uid, e.gid);
  return h.text;
}

/**
 * One line of output: the name (the path with -R), or with `long` the `ls -l` columns (UTC
 * times). Names and targets that hold a space are quoted (quoteSpaced), so that a name
 * like `a -> b`, or with spaces at its ends, cannot pass for a symlink or another name.
 */
export function formatLsEntry(e: LsEntry, options: { long?: boolean; recursive?: boolean }): string {
  const name = quoteSpaced(options.recursive ? e.path : e.name);
  if (!options.long) return name;
  const size = e.rdev ? `${e.rdev.major}, ${e.rdev.minor}`.padStart(10) : padded(e.size, 10);
  const shown = e.target !== undefined ? `${name} -> ${quoteSpaced(e.target)}` : name;
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

const EMPTY: Uint8Array = new Uint8Array(0);

/**
 * Writes the lines of plain entries (see plainEntry) into a ByteSink as formatLsEntry
 * would format them, without strings: a line is a template (the columns before the size,
 * a 10-column size field, the time column, the directory's path prefix) copied whole, the
 * size's digits written into it, then the name's bytes. The template is rebuilt when one
 * of its parts changes (a directory's files mostly share them all).
 */
class LineWriter {
  private headKey = { mode: -1, links: -1, uid: -1, gid: -1 };
  private head: Uint8Array = EMPTY;
  private minute = Number.NaN;
  private time: Uint8Array = EMPTY;
  private prefix: Uint8Array = EMPTY;
  private template: Uint8Array = EMPTY;
  private stale = true;

  constructor(
    readonly sink: ByteSink,
    private readonly long: boolean,
    private readonly recursive: boolean,
  ) {}

  /** The line of entry i of `l`, whose path (with -R) is `prefix` + its name. */
  row(l: DirListing, i: number, prefix: Uint8Array): void {
    const long = this.long;
    if (long) {
      this.headOf(l.mode[i]!, l.links[i]!, l.uid[i]!, l.gid[i]!);
      this.timeOf(l.mtimeSec[i]!);
    }
    if (this.recursive && prefix !== this.prefix) {
      this.prefix = prefix;
      this.stale = true;
    }
    if (this.stale) this.rebuild();
    const size = l.size[i]!;
    // The size field holds up to 10 digits; a larger size is written as formatLsEntry would.
    if (long && !(size >= 0 && size < 1e10 && Number.isInteger(size))) {
      this.sink.write(`${formatLsEntry(plainLsFields(l, i, this.prefix), { long: true, recursive: this.recursive })}\n`);
      return;
    }
    const from = l.nameStart[i]!;
    const to = l.nameStart[i + 1]!;
    const t = this.template;
    const s = this.sink;
    s.room(t.length + (to - from) + 1);
    const b = s.buf;
    let p = s.pos;
    b.set(t, p);
    if (long) {
      // Right-aligned in the 10 columns after the head (spaces in the template).
      let x = size;
      let k = p + this.head.length + 9;
      do {
        b[k--] = 0x30 + (x % 10);
        x = Math.floor(x / 10);
      } while (x > 0);
    }
    p += t.length;
    const names = l.names;
    for (let k = from; k < to; k++) b[p++] = names[k]!;
    b[p++] = 0x0a;
    s.pos = p;
  }

  private rebuild(): void {
    const h = this.head;
    const t = this.time;
    const pre = this.recursive ? this.prefix : EMPTY;
    const size = this.long ? 10 : 0;
    const out = new Uint8Array(h.length + size + t.length + pre.length);
    out.set(h, 0);
    out.fill(0x20, h.length, h.length + size);
    out.set(t, h.length + size);
    out.set(pre, h.length + size + t.length);
    this.template = out;
    this.stale = false;
  }

  private headOf(mode: number, links: number, uid: number, gid: number): void {
    const h = this.headKey;
    if (mode === h.mode && links === h.links && uid === h.uid && gid === h.gid) return;
    this.headKey = { mode, links, uid, gid };
    this.head = Buffer.from(headText(statTypeOf(mode), mode, links, uid, gid), 'latin1');
    this.stale = true;
  }

  private timeOf(sec: number): void {
    const minute = Math.floor(sec / 60);
    if (minute === this.minute) return;
    this.time = Buffer.from(formatTime(sec), 'latin1');
    this.minute = minute;
    this.stale = true;
  }
}

/** The fields of entry i that formatLsEntry shows of a plain entry (its path `prefix` + name). */
function plainLsFields(l: DirListing, i: number, prefix: Uint8Array): LsEntry {
  return plainEntry(l, i, Buffer.from(prefix.buffer, prefix.byteOffset, prefix.byteLength).toString('latin1'));
}

