/**
 * An OCI/Docker image layer (OCI image spec, layer.md): a tar archive, plain, gzip or
 * zstd, read as a stream through tar-stream (ustar, GNU long names, PAX). Names are taken
 * as bytes (tar-stream decodes them as latin1, which maps each byte to one char, and
 * PAX records are read raw: paxRecords.ts). Whiteouts, hard links, symlinks, devices,
 * fifos, PAX xattrs (SCHILY.xattr, LIBARCHIVE.xattr), PAX uid/gid/size and times to the
 * nanosecond are honoured; what cannot be applied faithfully (GNU sparse members, volume
 * labels, multi-volume parts, a directory with data) is refused, never approximated.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { extract, type Extract, type Header } from 'tar-stream';
import { ImgdedupError, InternalError, RefusedError, wrapIoError } from '../errors.js';
import { decompressLayer, detectCompression, type LayerCompression } from './decompressLayer.js';
import { SYMLINK_MAX_BYTES, SYMLINK_MODE, badEntry, classifyWhiteout, normaliseEntryPath, type EntryContext } from './entryPath.js';
import { decodePaxRecords, mergePax, paxInteger, paxTime, paxXattrs, type PaxRecords } from './paxRecords.js';
import type { EntryMeta, UpdateEntry, UpdateLayer } from './UpdateEntry.js';

/** tar-stream's entry stream (a streamx Readable): what this module uses of it. */
interface EntrySource {
  readonly header: Header;
  /** Byte offset of the entry's own header in the tar stream. */
  readonly offset: number;
  on(event: 'data', fn: (chunk: Uint8Array) => void): unknown;
  on(event: 'end' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (err: unknown) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** Extract's private parts this module reaches for, checked at run time (see `hookPax`). */
interface ExtractInternals {
  _decodeLongHeader?: (buf: Uint8Array) => unknown;
  _header?: { type?: string | null } | null;
  /** Offset of the header being decoded (set before decoding it). */
  _offset?: number;
}

/**
 * The bytes fed to tar-stream lately, so each entry's own 512-byte header can be read raw
 * when tar-stream announces the entry (tar-stream parses numbers leniently: "0zz" is 0 to
 * it). Bytes before the next header are dropped as they come, so this holds a chunk or two.
 */
class RecentBytes {
  private chunks: { start: number; bytes: Uint8Array }[] = [];
  private end = 0;

  add(bytes: Uint8Array): void {
    this.chunks.push({ start: this.end, bytes });
    this.end += bytes.length;
  }

  dropBefore(offset: number): void {
    while (this.chunks.length > 0 && this.chunks[0]!.start + this.chunks[0]!.bytes.length <= offset) this.chunks.shift();
  }

  /** Bytes [from, from + length), if all still held. */
  slice(from: number, length: number): Uint8Array | undefined {
    const out = new Uint8Array(length);
    let got = 0;
    for (const c of this.chunks) {
      const a = Math.max(from, c.start);
      const b = Math.min(from + length, c.start + c.bytes.length);
      if (a < b) {
        out.set(c.bytes.subarray(a - c.start, b - c.start), a - from);
        got += b - a;
      }
    }
    return got === length ? out : undefined;
  }
}

/** Numeric fields of the ustar header (POSIX.1-2008 pax, "ustar Interchange Format"): name, offset, length, PAX keyword that overrides it. */
const NUMERIC_FIELDS: ReadonlyArray<readonly [string, number, number, string | undefined]> = [
  ['mode', 100, 8, undefined],
  ['uid', 108, 8, 'uid'],
  ['gid', 116, 8, 'gid'],
  ['size', 124, 12, 'size'],
  ['mtime', 136, 12, 'mtime'],
  ['devmajor', 329, 8, undefined],
  ['devminor', 337, 8, undefined],
];

/**
 * Checks the header's numeric fields as GNU tar reads them: octal digits after optional
 * spaces, ended by NUL or space and nothing else after; or GNU base-256 (first byte 0x80
 * or 0xff). Device numbers may be empty (some writers leave them so for other entries).
 */
function checkNumericFields(raw: Uint8Array, records: PaxRecords, ctx: EntryContext, path: Uint8Array, only?: readonly string[]): void {
  for (const [name, offset, length, paxKey] of NUMERIC_FIELDS) {
    if (only !== undefined && !only.includes(name)) continue;
    if (paxKey !== undefined && records.has(paxKey)) continue;
    const f = raw.subarray(offset, offset + length);
    if (f[0] === 0x80 || f[0] === 0xff) continue;
    const text = Buffer.from(f).toString('latin1');
    const ok = name.startsWith('dev') ? /^ *[0-7]*[ \0]*$/.test(text) : /^ *[0-7]+[ \0]*$/.test(text);
    if (!ok) throw badEntry(ctx, path, `the header's ${name} field is not an octal number: ${JSON.stringify(text.replace(/\0+$/, ''))}`);
  }
}

/**
 * A GNU base-256 number field (first byte 0x80: positive, the rest big-endian; 0xff: a
 * negative number in two's complement over the whole field), or undefined for an octal
 * one. tar-stream decodes negative ones one too high (found by a new user: an mtime of -1
 * became 0); GNU tar, Go's archive/tar and Python's tarfile read them as here.
 */
function base256(raw: Uint8Array, offset: number, length: number): number | undefined {
  const f = raw.subarray(offset, offset + length);
  if (f[0] !== 0x80 && f[0] !== 0xff) return undefined;
  let v = 0n;
  for (const b of f) v = (v << 8n) | BigInt(b);
  const bits = BigInt(length * 8);
  v = f[0] === 0xff ? v - (1n << bits) : v & ((1n << (bits - 1n)) - 1n);
  return Number(v);
}

/** Bytes an entry reader holds before it pauses the archive. */
const ENTRY_QUEUE_BYTES = 1 << 20;

/**
 * An entry's content as a pull stream over tar-stream's push stream: the consumer may stop
 * early (or never start) and `drain` discards the rest, without destroying the archive
 * (destroying an entry stream destroys tar-stream's whole extract).
 */
class EntryReader {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private ended = false;
  private failure: unknown;
  private discard = false;
  private wake: (() => void) | undefined;
  private opened = false;
  private stale = false;

  constructor(private readonly src: EntrySource) {
    src.on('data', (chunk) => {
      if (this.discard) return;
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued >= ENTRY_QUEUE_BYTES) src.pause();
      this.notify();
    });
    src.on('end', () => {
      this.ended = true;
      this.notify();
    });
    src.on('error', (err) => {
      this.failure ??= err ?? new Error('the archive was closed');
      this.notify();
    });
    src.on('close', () => {
      if (!this.ended) this.failure ??= new Error('the archive was closed');
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private next(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  /** The content, once; `fail` turns a stream failure into the error to throw. */
  async *chunks(fail: (err: unknown) => Error): AsyncGenerator<Uint8Array> {
    if (this.opened) throw new InternalError('an update entry was opened twice');
    if (this.stale) throw new InternalError('a tar entry was opened after the next entry was taken');
    this.opened = true;
    for (;;) {
      const c = this.queue.shift();
      if (c !== undefined) {
        this.queued -= c.length;
        if (this.queued < ENTRY_QUEUE_BYTES) this.src.resume();
        yield c;
        continue;
      }
      if (this.failure !== undefined) throw fail(this.failure);
      if (this.ended) return;
      this.src.resume();
      await this.next();
    }
  }

  /** Discards what is left of the content; rejects with the stream's failure, if any. */
  async drain(): Promise<void> {
    this.stale = true;
    // tar-stream gives a directory no data and ends its stream only if its size is 0.
    if (this.src.header.type === 'directory') return;
    this.discard = true;
    this.queue = [];
    this.queued = 0;
    this.src.resume();
    while (!this.ended && this.failure === undefined) await this.next();
    if (this.failure !== undefined) throw this.failure;
  }
}

/**
 * Captures the raw bytes of PAX headers as tar-stream decodes them (its own decoder is
 * lossy, see paxRecords.ts). Refuses to go on with a tar-stream whose internals moved.
 */
function hookPax(ex: Extract, ctxAt: (offset: number | undefined) => EntryContext, checkHeader: (offset: number | undefined) => void): { take(): PaxRecords | undefined } {
  const internals = ex as unknown as ExtractInternals;
  const original = internals._decodeLongHeader;
  if (typeof original !== 'function') throw new InternalError('tar-stream has no _decodeLongHeader: PAX records cannot be read as bytes with this version');
  let global: PaxRecords | undefined;
  let local: PaxRecords | undefined;
  internals._decodeLongHeader = function (this: unknown, buf: Uint8Array) {
    checkHeader(internals._offset);
    const type = internals._header?.type;
    if (type === 'pax-header' || type === 'pax-global-header') {
      const records = decodePaxRecords(buf, ctxAt(internals._offset));
      if (type === 'pax-header') local = records;
      else global = mergePax(global, records);
    }
    return original.call(ex, buf);
  };
  return {
    take() {
      const r = global !== undefined || local !== undefined ? mergePax(global, local) : undefined;
      local = undefined;
      return r;
    },
  };
}

function latin1Bytes(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s, 'latin1'));
}

/** A finite integer in range, else BAD_UPDATE naming the field. */
function checkNumber(v: number, field: string, ctx: EntryContext, path: Uint8Array, min = 0): number {
  if (!Number.isSafeInteger(v) || v < min) throw badEntry(ctx, path, `the header's ${field} field is not a valid number`);
  return v;
}

/** uid_t and gid_t are 32 bits (ext4 keeps 32-bit ids too). */
const MAX_ID = 0xffffffff;
/** Linux dev_t: 12-bit major, 20-bit minor (what ext4's new_encode_dev keeps). */
const MAX_MAJOR = 0xfff;
const MAX_MINOR = 0xfffff;

function checkRange(v: number, max: number, field: string, ctx: EntryContext, path: Uint8Array): number {
  if (v > max) throw badEntry(ctx, path, `${field} ${v} is out of range (0..${max})`);
  return v;
}

/** Makes one UpdateEntry of a tar member (whiteouts included), or throws BAD_UPDATE. */
function toEntry(h: Header, raw: Uint8Array | undefined, pax: PaxRecords | undefined, ctx: EntryContext, reader: EntryReader, fail: (err: unknown) => Error, warn?: Warn): UpdateEntry {
  const records = pax ?? new Map<string, Uint8Array>();
  if (raw === undefined) throw new InternalError('the raw header of a tar entry was not kept', { file: ctx.file });
  for (const k of records.keys()) {
    // GNU sparse members (pax formats 0.0-1.0) keep a map and a real size elsewhere: their content is not the member's data.
    if (k.startsWith('GNU.sparse.')) throw badEntry(ctx, latin1Bytes(h.name), 'GNU sparse members are not supported (create the layer without --sparse)');
  }
  const rawName = records.get('path') ?? latin1Bytes(h.name);
  const path = normaliseEntryPath(rawName, ctx);
  // GNU tar --acls and star write ACLs as text (user and group names the image may not share):
  // not applied, and said so, rather than dropped in silence.
  const textAcls = [...records.keys()].filter((k) => k === 'SCHILY.acl.access' || k === 'SCHILY.acl.default');
  if (textAcls.length > 0) warn?.('text-acls', `${ctx.file}: ${new TextDecoder().decode(path)} (and any other entry like it): ACLs stored as text (${textAcls.join(', ')}, as tar --acls writes them) are not applied; store them as xattrs (system.posix_acl_access) to have them applied`);
  checkNumericFields(raw, records, ctx, path);
  // tar-stream takes a PAX size with parseInt ("12abc" is 12 to it): it must be a number, and the one used.
  const paxSize = paxInteger(records, 'size', ctx, path);
  if (paxSize !== undefined && paxSize !== h.size) throw new InternalError(`tar-stream used size ${h.size} for PAX size ${paxSize}`, { file: ctx.file });
  // Times this reader does not keep are still checked: a corrupt record is a corrupt archive.
  paxTime(records, 'ctime', ctx, path);
  // Every member's numbers are checked, whiteouts' and links' too: a corrupt header is a corrupt archive.
  const mtime = paxTime(records, 'mtime', ctx, path) ?? { sec: checkNumber(base256(raw, 136, 12) ?? h.mtime.getTime() / 1000, 'mtime', ctx, path, -Number.MAX_SAFE_INTEGER), nsec: 0 };
  const atime = paxTime(records, 'atime', ctx, path);
  const meta: EntryMeta = {
    mode: checkNumber(h.mode, 'mode', ctx, path) & 0o7777,
    uid: checkRange(paxInteger(records, 'uid', ctx, path) ?? checkNumber(h.uid, 'uid', ctx, path), MAX_ID, 'uid', ctx, path),
    gid: checkRange(paxInteger(records, 'gid', ctx, path) ?? checkNumber(h.gid, 'gid', ctx, path), MAX_ID, 'gid', ctx, path),
    mtime,
    ...(atime !== undefined ? { atime } : {}),
    xattrs: paxXattrs(records, ctx, path),
  };
  // An old-style (pre-POSIX) directory: typeflag NUL and a name ending in '/', as Go's
  // archive/tar (containerd's reader) and Python's tarfile take it. tar-stream makes it a
  // file (found by a new user: the directory became an empty file).
  const oldStyleDir = raw[156] === 0 && rawName[rawName.length - 1] === 0x2f;
  const type = oldStyleDir ? 'directory' : (h.type as string | null);
  // tar-stream reads no data for a directory: with a size, what follows would be taken for headers.
  if (type === 'directory' && h.size !== 0) throw badEntry(ctx, path, 'a directory entry with data');
  let linkTarget: Uint8Array | undefined;
  if (type === 'link') {
    const raw = records.get('linkpath') ?? latin1Bytes(h.linkname ?? '');
    if (raw.length === 0) throw badEntry(ctx, path, 'a hard link with no target');
    linkTarget = normaliseEntryPath(raw, ctx);
    if (linkTarget.length === 1) throw badEntry(ctx, path, 'a hard link to the root directory');
  }
  const wh = classifyWhiteout(path, ctx);
  if (wh !== undefined) return wh;
  if (type === null) throw badEntry(ctx, path, 'an entry type this reader does not support (GNU sparse, multi-volume, volume label, dump directory or unknown)');
  if (linkTarget !== undefined) return { kind: 'hardlink', path, target: linkTarget };
  if (path.length === 1 && type !== 'directory') throw badEntry(ctx, path, 'the root must be a directory');
  switch (type) {
    case 'file':
    case 'contiguous-file': {
      const size = checkNumber(h.size, 'size', ctx, path);
      return { kind: 'file', path, meta, size, open: () => exactly(reader.chunks(fail), size, ctx, path) };
    }
    case 'directory':
      return { kind: 'dir', path, meta };
    case 'symlink': {
      const target = records.get('linkpath') ?? latin1Bytes(h.linkname ?? '');
      if (target.length === 0) throw badEntry(ctx, path, 'a symlink with an empty target');
      if (target.length > SYMLINK_MAX_BYTES) throw badEntry(ctx, path, `the symlink target is ${target.length} bytes long; the limit is ${SYMLINK_MAX_BYTES}`);
      if (target.includes(0)) throw badEntry(ctx, path, 'the symlink target contains a NUL byte');
      return { kind: 'symlink', path, meta: { ...meta, mode: SYMLINK_MODE }, target: Uint8Array.from(target) };
    }
    case 'character-device':
    case 'block-device':
      return {
        kind: type === 'character-device' ? 'chardev' : 'blockdev',
        path,
        meta,
        major: checkRange(checkNumber(h.devmajor, 'devmajor', ctx, path), MAX_MAJOR, 'devmajor', ctx, path),
        minor: checkRange(checkNumber(h.devminor, 'devminor', ctx, path), MAX_MINOR, 'devminor', ctx, path),
      };
    case 'fifo':
      return { kind: 'fifo', path, meta };
    default:
      throw badEntry(ctx, path, `an entry of type ${type} where a file was expected`);
  }
}

/** Passes `chunks` through, checking that they add up to `size` (tar-stream's promise, kept by us). */
async function* exactly(chunks: AsyncIterable<Uint8Array>, size: number, ctx: EntryContext, path: Uint8Array): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const c of chunks) {
    seen += c.length;
    if (seen > size) throw new InternalError(`tar entry gave more than its ${size} bytes`, { file: ctx.file });
    yield c;
  }
  if (seen !== size) throw badEntry(ctx, path, `the archive ends inside the entry (${seen} of ${size} bytes)`);
}

/** Resolves when `ex` can take more, or is gone. */
function writable(ex: Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      ex.off('drain', done);
      ex.off('close', done);
      resolve();
    };
    ex.on('drain', done);
    ex.on('close', done);
  });
}

async function* fileChunks(file: string): AsyncGenerator<Uint8Array> {
  const stream = createReadStream(file, { highWaterMark: 1 << 18 });
  try {
    for await (const c of stream as AsyncIterable<Buffer>) yield c;
  } catch (err) {
    throw wrapIoError(err, file, 'read the layer');
  } finally {
    stream.destroy();
  }
}

/** The layer's compression, read from its first bytes; BAD_UPDATE for an empty file. */
async function sniff(file: string): Promise<LayerCompression> {
  let head: Uint8Array;
  try {
    const fh = await open(file, 'r');
    try {
      const { buffer, bytesRead } = await fh.read(new Uint8Array(8), 0, 8, 0);
      head = buffer.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw wrapIoError(err, file, 'read the layer');
  }
  if (head.length === 0) throw new RefusedError('BAD_UPDATE', { file, offset: 0, detail: 'the layer file is empty, not a tar archive' });
  return detectCompression(head, file);
}

/** One pass over the archive's entries. */
async function* readEntries(file: string, compression: LayerCompression, warn?: Warn): AsyncGenerator<UpdateEntry> {
  const plain = compression === 'none';
  const ctxAt = (tarOffset: number | undefined): EntryContext => (tarOffset === undefined ? { file } : plain ? { file, offset: tarOffset } : { file, tarOffset });
  /** Turns what tar-stream (or the decompressor) threw into BAD_UPDATE with the offset reached. */
  let fed = 0;
  /** End of the last non-zero byte of the stream, and of the last entry's data (its header, then its data in 512-byte blocks). */
  let nonZeroEnd = 0;
  let lastEnd = 0;
  const fail = (err: unknown): Error => {
    if (err instanceof ImgdedupError) return err;
    const internals = ex as unknown as ExtractInternals;
    const why = err instanceof Error ? err.message : String(err);
    const endOfData = /Unexpected end of data/.test(why);
    const at = endOfData ? fed : typeof internals._offset === 'number' ? internals._offset : undefined;
    return new RefusedError('BAD_UPDATE', {
      ...ctxAt(at),
      // Data that ends before one whole header was read is no archive at all, not a truncated one.
      detail: endOfData ? (lastEnd === 0 && fed < 512 ? `not a tar archive (${fed} bytes, shorter than one 512-byte header)` : 'the archive is truncated (it ends inside an entry)') : `not a readable tar archive: ${why}`,
    });
  };
  // filenameEncoding is an option of tar-stream's that its typings omit.
  const ex = extract({ filenameEncoding: 'latin1' } as Parameters<typeof extract>[0]);
  const recent = new RecentBytes();
  // A long-name or PAX header, checked raw like an entry's: tar-stream takes the obsolete
  // GNU 'N' type for a long name, which GNU tar does not, and parses its size leniently.
  const pax = hookPax(ex, ctxAt, (offset) => {
    const raw = offset === undefined ? undefined : recent.slice(offset, 512);
    if (raw === undefined) throw new InternalError('the raw bytes of a tar extended header were not kept', { file });
    const name = raw.subarray(0, raw.indexOf(0) < 0 || raw.indexOf(0) > 100 ? 100 : raw.indexOf(0));
    if (raw[156] === 0x4e) throw badEntry(ctxAt(offset), name, "the obsolete GNU 'N' entry type is not supported");
    checkNumericFields(raw, new Map(), ctxAt(offset), name, ['size']);
  });
  /** Where the next header can start: nothing before it is needed again. */
  let keepFrom = 0;
  const rawHeaders = new Map<number, Uint8Array>();
  // Called synchronously inside write(), while the header's bytes are still held.
  ex.on('entry', (header: Header, stream: { offset: number }) => {
    const raw = recent.slice(stream.offset, 512);
    if (raw !== undefined) rawHeaders.set(stream.offset, raw);
    keepFrom = stream.offset + 512 + (header.type === 'directory' ? 0 : Math.ceil(header.size / 512) * 512);
    recent.dropBefore(Math.min(keepFrom, stream.offset + 512));
  });
  const it = ex[Symbol.asyncIterator]();
  const feeding = (async () => {
    try {
      for await (const chunk of decompressLayer(fileChunks(file), compression, file)) {
        if (ex.destroyed) return;
        let z = chunk.length;
        while (z > 0 && chunk[z - 1] === 0) z--;
        if (z > 0) nonZeroEnd = fed + z;
        fed += chunk.length;
        recent.add(chunk);
        recent.dropBefore(keepFrom);
        if (!ex.write(chunk)) await writable(ex);
      }
      ex.end(undefined);
    } catch (err) {
      ex.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  })();
  try {
    for (;;) {
      let r: IteratorResult<unknown>;
      try {
        r = await it.next();
      } catch (err) {
        throw fail(err);
      }
      if (r.done === true) break;
      const src = r.value as EntrySource;
      lastEnd = src.offset + 512 + (src.header.type === 'directory' ? 0 : Math.ceil(src.header.size / 512) * 512);
      const reader = new EntryReader(src);
      const ctx = ctxAt(src.offset);
      const raw = rawHeaders.get(src.offset);
      rawHeaders.delete(src.offset);
      yield toEntry(src.header, raw, pax.take(), ctx, reader, fail, warn);
      try {
        await reader.drain();
      } catch (err) {
        throw fail(err);
      }
    }
    // tar-stream takes an archive that stops at an entry's end as complete (so does GNU tar):
    // a layer cut there would lose its later entries without a word. The end-of-archive
    // marker (zero blocks, ustar) must be there, with nothing but zeros after the last entry.
    if (fed - lastEnd < 512 || nonZeroEnd > lastEnd) {
      throw new RefusedError('BAD_UPDATE', { ...ctxAt(Math.max(lastEnd, Math.min(nonZeroEnd, fed))), detail: 'the archive has no end-of-archive marker after its last entry (it is truncated, or has something else there)' });
    }
  } finally {
    ex.destroy();
    await it.return?.().catch(() => undefined);
    await feeding;
  }
}

/** A warning of a kind (said once per layer). */
type Warn = (kind: string, message: string) => void;

/** The tar layer in `file` (compression detected from its bytes); `warn` hears what is read but not applied. */
export function tarLayer(file: string, warn?: (m: string) => void): UpdateLayer {
  // One warning of a kind per layer: the first entry names it.
  const said = new Set<string>();
  const once: Warn = (kind, message) => {
    if (said.has(kind)) return;
    said.add(kind);
    warn?.(message);
  };
  return {
    name: file,
    async *entries() {
      yield* readEntries(file, await sniff(file), once);
    },
  };
}

/** The compression of a layer file, for describing it. */
export async function layerCompression(file: string): Promise<LayerCompression> {
  return sniff(file);
}
