/**
 * An update given as a directory tree that mirrors the root filesystem, with OCI
 * whiteouts (OCI image spec, layer.md "Whiteouts"): ".wh.NAME" deletes NAME from the
 * filesystem, ".wh..wh..opq" empties its directory of what the filesystem had. Modes,
 * owners, times (nanoseconds), symlinks, device nodes, fifos, sockets, hard links (same
 * device and inode, more than one link: the first path is the file, later ones link to it)
 * and xattrs (getfattr, see hostXattrs.ts) are carried over. overlayfs's whiteouts are
 * understood too (an overlay upper directory as the tree). The tree's own root is not an
 * entry: its mode and owner are the temporary directory's, not the filesystem root's.
 */
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { RefusedError, wrapIoError } from '../errors.js';
import { NAME_MAX_BYTES, OPAQUE_MARKER, SYMLINK_MAX_BYTES, SYMLINK_MODE, WHITEOUT_PREFIX, badEntry, classifyWhiteout, joinPath, ROOT_PATH, type EntryContext } from './entryPath.js';
import { readHostXattrs, type HostXattrs, type XattrMap } from './hostXattrs.js';
import type { EntryMeta, EntryTime, EntryXattr, UpdateEntry, UpdateLayer } from './UpdateEntry.js';

const S_IFMT = 0o170000n;
/** overlayfs (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"). */
const OVERLAY_PREFIX = Buffer.from('trusted.overlay.');
const OVERLAY_OPAQUE = Buffer.from('trusted.overlay.opaque');
const OVERLAY_YES = Buffer.from('y');
const NS_PER_SEC = 1_000_000_000n;

function timeOf(ns: bigint): EntryTime {
  // Floor division, so times before 1970 keep nsec in 0..999,999,999.
  let sec = ns / NS_PER_SEC;
  let nsec = ns % NS_PER_SEC;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += NS_PER_SEC;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

/** Linux's dev_t split (glibc gnu_dev_major/gnu_dev_minor): 12-bit major and 20-bit minor, spread over 64 bits. */
export function splitDevice(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major: Number(major & 0xffffffffn), minor: Number(minor & 0xffffffffn) };
}

function startsWith(b: Uint8Array, prefix: Uint8Array): boolean {
  return b.length >= prefix.length && prefix.every((x, i) => b[i] === x);
}

/** Entries of a walk kept for the next ones (beyond this the tree is walked again: memory stays bounded). */
const KEEP_ENTRIES = 200_000;
/** Largest piece of a file's content handed to the writer at once. */
const READ_CHUNK = 1 << 20;

/** readExactly's buffer while no read holds it. */
let spareBuffer: Buffer | undefined;

/**
 * A file's content, exactly `size` bytes (the size taken from lstat when the entry was
 * made): a file that grew or shrank since is refused, not written half old, half new.
 * The tree is read with synchronous calls, here and in the walk: an update is thousands
 * of small files, and a thread-pool round trip per open, read and close costs more than
 * the reads themselves (the writer waits for each file anyway).
 */
async function* readExactly(hostPath: Buffer, size: number, ctx: EntryContext, path: Uint8Array): AsyncGenerator<Uint8Array> {
  const where = (): string => `${ctx.file}${Buffer.from(path).toString('latin1')}`;
  let fd: number;
  let buf: Buffer | undefined;
  try {
    fd = openSync(hostPath, 'r');
  } catch (err) {
    throw wrapIoError(err, where(), 'read the file');
  }
  try {
    let seen = 0;
    // One buffer, reused chunk after chunk (the consumer copies each before asking for the
    // next) and file after file: a buffer per file is garbage the size of the whole update.
    // A read started while another is under way (not done by apply) gets its own.
    const shared = spareBuffer;
    spareBuffer = undefined;
    buf = shared ?? Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      // At the stated end, a one-byte probe: a file that grew is refused.
      const want = Math.max(1, Math.min(buf.length, size - seen));
      let n: number;
      try {
        n = readSync(fd, buf, 0, want, seen);
      } catch (err) {
        throw wrapIoError(err, where(), 'read the file');
      }
      if (n === 0) break;
      seen += n;
      if (seen > size) throw badEntry(ctx, path, `the file grew while the update was read (expected ${size} bytes)`);
      yield buf.subarray(0, n);
    }
    if (seen !== size) throw badEntry(ctx, path, `the file shrank while the update was read (expected ${size} bytes, read ${seen})`);
  } finally {
    closeSync(fd);
    if (buf !== undefined) spareBuffer = buf;
  }
}

/** One walk of the tree: entries in preorder, each directory's whiteouts first, names in byte order. */
async function* walkTree(root: string, xattrs: XattrMap | undefined): AsyncGenerator<UpdateEntry> {
  const ctx: EntryContext = { file: root };
  const rootBytes = Buffer.from(root);
  /** First path seen for each multiply-linked inode ("dev:ino"). */
  const links = new Map<string, Uint8Array>();
  const hostOf = (path: Uint8Array): Buffer => Buffer.concat([rootBytes, path]);

  const metaOf = (st: BigIntStats, host: Buffer): EntryMeta => ({
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: timeOf(st.mtimeNs),
    atime: timeOf(st.atimeNs),
    xattrs: xattrs?.get(host.toString('latin1')) ?? ([] as EntryXattr[]),
  });

  async function* dir(path: Uint8Array): AsyncGenerator<UpdateEntry> {
    const host = hostOf(path.length === 1 ? new Uint8Array(0) : path);
    let names: Buffer[];
    try {
      names = readdirSync(host, { encoding: 'buffer' });
    } catch (err) {
      throw wrapIoError(err, host.toString(), 'read the directory');
    }
    names.sort(Buffer.compare);
    // Whiteouts and the opaque marker first: they remove what lies below, then this layer adds.
    const marks = names.filter((n) => startsWith(n, WHITEOUT_PREFIX));
    marks.sort((a, b) => Number(b.equals(OPAQUE_MARKER)) - Number(a.equals(OPAQUE_MARKER)));
    for (const name of marks) {
      if (name.length > NAME_MAX_BYTES) throw badEntry(ctx, joinPath(path, name), `the name is ${name.length} bytes long; the limit is ${NAME_MAX_BYTES}`);
      yield classifyWhiteout(joinPath(path, name), ctx)!;
    }
    for (const name of names) {
      if (startsWith(name, WHITEOUT_PREFIX)) continue;
      const child = joinPath(path, name);
      if (name.length > NAME_MAX_BYTES) throw badEntry(ctx, child, `the name is ${name.length} bytes long; the limit is ${NAME_MAX_BYTES}`);
      const childHost = hostOf(child);
      let st: BigIntStats;
      try {
        st = lstatSync(childHost, { bigint: true });
      } catch (err) {
        throw wrapIoError(err, childHost.toString(), 'read the file status');
      }
      const type = st.mode & S_IFMT;
      if (type !== 0o040000n && st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const first = links.get(key);
        if (first !== undefined) {
          yield { kind: 'hardlink', path: child, target: first };
          continue;
        }
        links.set(key, child);
      }
      const meta = metaOf(st, childHost);
      // overlayfs's own whiteouts (an overlay upper directory used as the tree): a 0/0
      // character device deletes its name, trusted.overlay.opaque=y makes a directory opaque.
      if (type === 0o020000n && st.rdev === 0n) {
        yield { kind: 'whiteout', path: child };
        continue;
      }
      switch (type) {
        case 0o040000n: {
          const opaque = meta.xattrs.some((x) => Buffer.from(x.name).equals(OVERLAY_OPAQUE) && Buffer.from(x.value).equals(OVERLAY_YES));
          const xattrs = meta.xattrs.filter((x) => !Buffer.from(x.name).subarray(0, OVERLAY_PREFIX.length).equals(OVERLAY_PREFIX));
          yield { kind: 'dir', path: child, meta: { ...meta, xattrs } };
          if (opaque) yield { kind: 'opaque', path: child };
          yield* dir(child);
          break;
        }
        case 0o100000n: {
          const size = Number(st.size);
          yield { kind: 'file', path: child, meta, size, storedBytes: Number(st.blocks) * 512, reopenable: true, open: () => readExactly(childHost, size, ctx, child) };
          break;
        }
        case 0o120000n: {
          let target: Buffer;
          try {
            target = readlinkSync(childHost, { encoding: 'buffer' });
          } catch (err) {
            throw wrapIoError(err, childHost.toString(), 'read the symlink');
          }
          if (target.length > SYMLINK_MAX_BYTES) throw badEntry(ctx, child, `the symlink target is ${target.length} bytes long; the limit is ${SYMLINK_MAX_BYTES}`);
          yield { kind: 'symlink', path: child, meta: { ...meta, mode: SYMLINK_MODE }, target: Uint8Array.from(target) };
          break;
        }
        case 0o020000n:
        case 0o060000n:
          yield { kind: type === 0o020000n ? 'chardev' : 'blockdev', path: child, meta, ...splitDevice(st.rdev) };
          break;
        case 0o010000n:
          yield { kind: 'fifo', path: child, meta };
          break;
        case 0o140000n:
          yield { kind: 'socket', path: child, meta };
          break;
        default:
          throw badEntry(ctx, child, `unknown file type 0o${type.toString(8)}`);
      }
    }
  }

  yield* dir(ROOT_PATH);
}

/**
 * The tree at `root` (a directory) as one update layer. `warn` is called (once per
 * walk of the tree itself, not per replay) when xattrs cannot be read because getfattr
 * is missing.
 */
export function treeLayer(root: string, warn: (message: string) => void): UpdateLayer {
  // A trailing '/' would double up in host paths.
  const clean = root.length > 1 ? root.replace(/\/+$/, '') : root;
  /**
   * The entries of the first complete walk, replayed by later ones (apply walks the tree
   * three times: space check, opaque markers, writing): metadata only, the content is
   * read when the file is written. A tree too large to keep is walked again each time.
   */
  let walked: UpdateEntry[] | undefined;
  // getfattr is started now, for the first walk: it runs while the caller opens the image.
  let early: Promise<HostXattrs> | undefined = readHostXattrs(clean);
  early.catch(() => undefined); // a failure is reported by the walk that awaits it
  return {
    name: root,
    async *entries() {
      if (walked !== undefined) {
        yield* walked;
        return;
      }
      // The root itself may be a symlink to the tree (its entries below are taken as they are).
      const st = await stat(clean).catch((err: unknown) => {
        throw wrapIoError(err, root, 'read the update directory');
      });
      if (!st.isDirectory()) throw wrapIoError(Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }), root, 'read the update directory');
      const x = await (early ?? readHostXattrs(clean));
      early = undefined;
      if (!x.ok) warn(`${root}: ${x.reason}`);
      let kept: UpdateEntry[] | undefined = [];
      for await (const e of walkTree(clean, x.ok ? x.map : undefined)) {
        if (kept !== undefined && kept.length < KEEP_ENTRIES) kept.push(e);
        else kept = undefined;
        yield e;
      }
      walked = kept;
    },
  };
}
