/**
 * Block ownership: for any physical block, whether it is free or who owns it. Stored as
 * sorted [start, length, owner] runs in typed arrays (about 30 bytes per run), queried
 * by binary search, so a filesystem's map costs O(extents), not O(blocks).
 */
import { BlockRuns } from '../BlockRuns.js';
import { InternalError } from '../../errors.js';

/** What a block is used for. */
export type OwnerKind =
  | 'boot block'
  | 'superblock'
  | 'group descriptors'
  | 'reserved GDT'
  | 'block bitmap'
  | 'inode bitmap'
  | 'inode table'
  | 'journal'
  | 'extent node'
  | 'indirect block'
  | 'directory'
  | 'data'
  | 'xattr block';

export const OWNER_KINDS: readonly OwnerKind[] = [
  'boot block',
  'superblock',
  'group descriptors',
  'reserved GDT',
  'block bitmap',
  'inode bitmap',
  'inode table',
  'journal',
  'extent node',
  'indirect block',
  'directory',
  'data',
  'xattr block',
];

/** OWNER_KINDS index of each kind (add() runs once per extent of every inode). */
const KIND_INDEX: Readonly<Record<OwnerKind, number>> = Object.fromEntries(OWNER_KINDS.map((k, i) => [k, i])) as Record<OwnerKind, number>;

/** The owner of a block. `ino` for inode-owned blocks, `lblk` for file/directory/journal blocks, `group` for group metadata. */
export interface BlockOwner {
  readonly kind: OwnerKind;
  readonly ino?: number;
  /** Logical block within the inode of the queried block (data, directory, journal). */
  readonly lblk?: number;
  readonly group?: number;
}

/** A run of blocks with one owner; `lblk` is that of the run's first block. */
export interface OwnerRun extends BlockOwner {
  readonly start: number;
  readonly length: number;
}

/** Collects owner runs, then freezes into a sorted, searchable table. */
export class OwnershipBuilder {
  private n = 0;
  private start = new Float64Array(1024);
  private len = new Float64Array(1024);
  private lblk = new Float64Array(1024);
  private id = new Uint32Array(1024); // ino or group
  private kind = new Uint8Array(1024);

  add(start: number, length: number, owner: BlockOwner): void {
    if (length <= 0) return;
    const k = KIND_INDEX[owner.kind];
    const id = owner.ino ?? owner.group ?? 0;
    const l = owner.lblk ?? -1;
    // Extend the previous run when this one continues it (consecutive extents of one file).
    const p = this.n - 1;
    if (p >= 0 && this.kind[p] === k && this.id[p] === id && this.start[p]! + this.len[p]! === start && (l < 0 ? this.lblk[p] === -1 : this.lblk[p]! + this.len[p]! === l)) {
      this.len[p] = this.len[p]! + length;
      return;
    }
    if (this.n === this.start.length) this.grow();
    this.start[this.n] = start;
    this.len[this.n] = length;
    this.lblk[this.n] = l;
    this.id[this.n] = id;
    this.kind[this.n] = k;
    this.n++;
  }

  private grow(): void {
    const cap = this.start.length * 2;
    const g = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(cap);
      b.set(a);
      return b;
    };
    this.start = g(this.start, Float64Array);
    this.len = g(this.len, Float64Array);
    this.lblk = g(this.lblk, Float64Array);
    this.id = g(this.id, Uint32Array);
    this.kind = g(this.kind, Uint8Array);
  }

  /** Sorts the runs and returns the table; `scope`: the only blocks it was built for (see BlockOwnership). */
  build(free: ReadonlyArray<readonly [number, number]>, blocksCount: number, scope?: BlockRuns): BlockOwnership {
    const n = this.n;
    const s = this.start;
    let maxStart = 0;
    let sorted = true;
    for (let i = 0; i < n; i++) {
      if (s[i]! < maxStart) sorted = false;
      maxStart = Math.max(maxStart, s[i]!);
    }
    if (sorted) {
      // Already in block order (a filesystem whose files were written one after another):
      // a stable sort would keep this order, so the arrays are the table as they are.
      return new BlockOwnership(this.start.slice(0, n), this.len.slice(0, n), this.lblk.slice(0, n), this.id.slice(0, n), this.kind.slice(0, n), free, blocksCount, scope);
    }
    let order: Uint32Array;
    if ((maxStart + 1) * n <= Number.MAX_SAFE_INTEGER) {
      // start * n + index is exact here: a numeric sort of those keys (no comparator
      // call per comparison) orders by start, ties by insertion, as the comparator would.
      const keys = new Float64Array(n);
      for (let i = 0; i < n; i++) keys[i] = s[i]! * n + i;
      keys.sort();
      order = new Uint32Array(n);
      for (let i = 0; i < n; i++) order[i] = keys[i]! % n;
    } else {
      order = new Uint32Array(n);
      for (let i = 0; i < n; i++) order[i] = i;
      order.sort((a, b) => s[a]! - s[b]! || a - b);
    }
    const pick = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(this.n);
      for (let i = 0; i < this.n; i++) b[i] = a[order[i]!]!;
      return b;
    };
    return new BlockOwnership(
      pick(this.start, Float64Array),
      pick(this.len, Float64Array),
      pick(this.lblk, Float64Array),
      pick(this.id, Uint32Array),
      pick(this.kind, Uint8Array),
      free,
      blocksCount,
      scope,
    );
  }
}

/** Block -> owner table of a filesystem, with its free runs (from the block bitmaps). */
export class BlockOwnership {
  /** Blocks claimed by more than one run (non-zero only on a corrupt filesystem). */
  readonly overlappingBlocks: number;
  private readonly free: BlockRuns;

  constructor(
    private readonly starts: Float64Array,
    private readonly lens: Float64Array,
    private readonly lblks: Float64Array,
    private readonly ids: Uint32Array,
    private readonly kinds: Uint8Array,
    /** Free runs [start, length], ascending, from the block bitmaps. */
    readonly freeRuns: ReadonlyArray<readonly [number, number]>,
    readonly blocksCount: number,
    /** When set, the table holds the owners of these blocks only: ownerOf refuses others (its answer would be wrong). */
    readonly scope?: BlockRuns,
  ) {
    this.free = new BlockRuns(freeRuns);
    let overlap = 0;
    let maxEnd = 0;
    for (let i = 0; i < starts.length; i++) {
      const s = starts[i]!;
      const e = s + lens[i]!;
      if (s < maxEnd) overlap += Math.min(maxEnd, e) - s;
      maxEnd = Math.max(maxEnd, e);
    }
    this.overlappingBlocks = overlap;
  }

  /** Number of owner runs. */
  get runCount(): number {
    return this.starts.length;
  }

  private runAt(i: number): OwnerRun {
    const kind = OWNER_KINDS[this.kinds[i]!]!;
    const isGroup = kind === 'block bitmap' || kind === 'inode bitmap' || kind === 'inode table' || kind === 'superblock' || kind === 'group descriptors' || kind === 'reserved GDT';
    const l = this.lblks[i]!;
    return {
      start: this.starts[i]!,
      length: this.lens[i]!,
      kind,
      ...(kind === 'boot block' ? {} : isGroup ? { group: this.ids[i]! } : { ino: this.ids[i]! }),
      ...(l >= 0 ? { lblk: l } : {}),
    };
  }

  /** Owner runs in block order. */
  *runs(): Generator<OwnerRun> {
    for (let i = 0; i < this.starts.length; i++) yield this.runAt(i);
  }

  /** The owner of block `blockNo`, 'free', or undefined (in use per the bitmaps, but no owner found: a leak). */
  ownerOf(blockNo: number): BlockOwner | 'free' | undefined {
    if (this.scope !== undefined && !this.scope.has(blockNo)) throw new InternalError(`ownerOf(${blockNo}): the table holds only the blocks it was built for`);
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= blockNo) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found >= 0 && blockNo < this.starts[found]! + this.lens[found]!) {
      const r = this.runAt(found);
      const { start, length, ...owner } = r;
      void length;
      return owner.lblk !== undefined ? { ...owner, lblk: owner.lblk + (blockNo - start) } : owner;
    }
    if (this.isFree(blockNo)) return 'free';
    return undefined;
  }

  /** Whether the block bitmaps mark `blockNo` free. */
  isFree(blockNo: number): boolean {
    return this.free.has(blockNo);
  }
}
