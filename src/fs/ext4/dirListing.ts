/**
 * One directory's entries as a walk reads them (Ext4Fs.listings): columns (typed arrays
 * and one buffer of names) instead of an object per entry, so that a walk of 100,000
 * files makes next to no garbage. With `stat`, each entry's inode fields (InodeStatFields)
 * are read in place from the inode-table bytes, checked as readInode checks them.
 */
import type { Inode } from './inode.js';

const EMPTY_U16 = new Uint16Array(0);
const EMPTY_U32 = new Uint32Array(0);
const EMPTY_F64 = new Float64Array(0);

/** Columns grow by doubling from this many entries. */
const FIRST_CAPACITY = 32;

export class DirListing {
  /** Entries ('.' and '..' left out). */
  count = 0;
  ino: Uint32Array;
  /** The directory entry's file_type byte (0 without the filetype feature). */
  fileType: Uint8Array;
  /** Entry i's name is names[nameStart[i], nameStart[i + 1]). */
  names: Buffer;
  nameStart: Uint32Array;
  /** Whether stat columns were read (Ext4Fs.listings with `stat`). */
  hasStat = false;
  /** i_mode (type and permission bits). */
  mode = EMPTY_U16;
  links = EMPTY_U16;
  uid = EMPTY_U32;
  gid = EMPTY_U32;
  size = EMPTY_F64;
  /** mtime seconds since the epoch (epoch bits applied) and nanoseconds. */
  mtimeSec = EMPTY_F64;
  mtimeNsec = EMPTY_U32;
  /**
   * Decoded inodes of the entries whose stat needs more than the columns (symlinks for
   * their target, devices for their numbers) or whose table block was read alone: by
   * entry index. Checked once, as the columns are.
   */
  readonly inodes = new Map<number, Inode>();

  constructor(
    /** The directory's inode number. */
    readonly dirIno: number,
    /** The directory's path from the walk's start (bytes; see names.ts), '/'-prefixed, or the start path. */
    readonly path: Uint8Array,
    /** The listing this directory is an entry of (undefined for the walk's start). */
    readonly parent: DirListing | undefined,
    /** Its index among parent's entries (-1 for the start). */
    readonly parentIndex: number,
    /** Entries expected (a bound from the directory's size): the columns start that large. */
    capacity = FIRST_CAPACITY,
  ) {
    const n = Math.max(1, capacity);
    // The entry columns share one buffer (one allocation per directory, not three).
    const buf = new ArrayBuffer(n * 9 + 4);
    this.ino = new Uint32Array(buf, 0, n);
    this.nameStart = new Uint32Array(buf, n * 4, n + 1);
    this.fileType = new Uint8Array(buf, n * 8 + 4, n);
    this.names = Buffer.allocUnsafe(n * 8);
    this.nameStart[0] = 0;
  }

  /** Appends an entry whose name is bytes [at, at + len) of `bytes`. */
  add(ino: number, fileType: number, bytes: Uint8Array, at: number, len: number): void {
    const i = this.count;
    if (i === this.ino.length) this.grow();
    this.ino[i] = ino;
    this.fileType[i] = fileType;
    let end = this.nameStart[i]!;
    if (end + len > this.names.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.names.length * 2, end + len));
      this.names.copy(bigger, 0, 0, end);
      this.names = bigger;
    }
    // Names are short: a loop costs less than a native copy.
    const names = this.names;
    for (let k = 0; k < len; k++) names[end++] = bytes[at + k]!;
    this.nameStart[i + 1] = end;
    this.count = i + 1;
  }

  private grow(): void {
    const n = this.ino.length * 2;
    const buf = new ArrayBuffer(n * 9 + 4);
    const ino = new Uint32Array(buf, 0, n);
    ino.set(this.ino);
    const ns = new Uint32Array(buf, n * 4, n + 1);
    ns.set(this.nameStart);
    const ft = new Uint8Array(buf, n * 8 + 4, n);
    ft.set(this.fileType);
    this.ino = ino;
    this.nameStart = ns;
    this.fileType = ft;
  }

  /** Allocates the stat columns for the entries added (views of one buffer). */
  allocStat(): void {
    const n = this.count;
    this.hasStat = true;
    const buf = new ArrayBuffer(n * 32);
    this.size = new Float64Array(buf, 0, n);
    this.mtimeSec = new Float64Array(buf, n * 8, n);
    this.uid = new Uint32Array(buf, n * 16, n);
    this.gid = new Uint32Array(buf, n * 20, n);
    this.mtimeNsec = new Uint32Array(buf, n * 24, n);
    this.mode = new Uint16Array(buf, n * 28, n);
    this.links = new Uint16Array(buf, n * 30, n);
  }

  /** Entry i's name (a view: valid while the listing is). */
  name(i: number): Uint8Array {
    return this.names.subarray(this.nameStart[i]!, this.nameStart[i + 1]!);
  }

  /** Length of entry i's name. */
  nameLength(i: number): number {
    return this.nameStart[i + 1]! - this.nameStart[i]!;
  }

  /**
   * Reorders the entries by name bytes (as compareBytes orders them), before any stat
   * column is read. Stable: duplicate names (corrupt) keep their directory order.
   */
  sortByName(): void {
    const n = this.count;
    if (n < 2) return;
    const names = this.names;
    const start = this.nameStart;
    const order = new Array<number>(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => {
      let x = start[a]!;
      const xe = start[a + 1]!;
      let y = start[b]!;
      const ye = start[b + 1]!;
      for (; x < xe && y < ye; x++, y++) if (names[x] !== names[y]) return names[x]! - names[y]!;
      return xe - x - (ye - y);
    });
    let sorted = true;
    for (let i = 0; i < n && sorted; i++) sorted = order[i] === i;
    if (sorted) return;
    const cap = this.ino.length;
    const buf = new ArrayBuffer(cap * 9 + 4);
    const ino = new Uint32Array(buf, 0, cap);
    const ns = new Uint32Array(buf, cap * 4, cap + 1);
    const ft = new Uint8Array(buf, cap * 8 + 4, cap);
    const nm = Buffer.allocUnsafe(this.names.length);
    let end = 0;
    for (let i = 0; i < n; i++) {
      const j = order[i]!;
      ino[i] = this.ino[j]!;
      ft[i] = this.fileType[j]!;
      for (let k = start[j]!, e = start[j + 1]!; k < e; k++) nm[end++] = names[k]!;
      ns[i + 1] = end;
    }
    this.ino = ino;
    this.fileType = ft;
    this.nameStart = ns;
    this.names = nm;
  }
}
