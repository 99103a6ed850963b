/**
 * Block and inode allocation for the writer, as the kernel's goal-directed allocator
 * does it (ext4 doc, allocators.rst): start at a goal, take the first free run there
 * that is long enough, else the longest one nearby, group by group. Under constraints:
 * the rebase passes blocks and inode numbers that must never be handed out (those in
 * use in any client of the fleet), so a "free" block is free in the bitmap AND not
 * avoided. Running short is NO_SPACE, never a silent fallback onto an avoided block.
 *
 * This module only chooses and flips bits; GroupState keeps the counts and flags.
 */
import { RefusedError } from '../../errors.js';
import { testBit } from './bitmaps.js';

/** A set of numbers the allocator must not hand out (block numbers, or inode numbers). */
export interface NumberSet {
  has(n: number): boolean;
  /** The first member >= n, or undefined. Lets a scan skip an avoided run at once. */
  nextMember?(n: number): number | undefined;
  /** When n is a member, the first non-member after it; else undefined. Lets a scan jump over a run of members. */
  endOfRunAt?(n: number): number | undefined;
}

/** What the writer must not allocate, and where it should look first. */
export interface AllocConstraints {
  /** Blocks that must never be allocated (e.g. used in any client of the fleet). */
  readonly avoidBlocks?: NumberSet;
  /** Inode numbers that must never be allocated. */
  readonly avoidInodes?: NumberSet;
}

/** A run of `count` blocks from `start`. */
export interface Run {
  readonly start: number;
  readonly count: number;
}

export function setBits(bitmap: Uint8Array, from: number, count: number): void {
  for (let i = from; i < from + count; i++) bitmap[i >>> 3]! |= 1 << (i & 7);
}

export function clearBits(bitmap: Uint8Array, from: number, count: number): void {
  for (let i = from; i < from + count; i++) bitmap[i >>> 3]! &= ~(1 << (i & 7));
}

/**
 * Free runs of a group's bitmap of `nbits` bits, from bit `from` on (wrapping is the
 * caller's business), skipping numbers in `avoid` (bit i is number `base + i`). Yields
 * [start bit, length] in ascending order.
 */
export function* freeRuns(bitmap: Uint8Array, nbits: number, from: number, base: number, avoid?: NumberSet): Generator<[number, number]> {
  let i = from;
  while (i < nbits) {
    // Skip used bits a byte at a time where the byte is full.
    if ((i & 7) === 0 && bitmap[i >>> 3] === 0xff) {
      i += 8;
      continue;
    }
    if (testBit(bitmap, i)) {
      i++;
      continue;
    }
    if (avoid !== undefined && avoid.has(base + i)) {
      // Jump over the avoided run: at once where the set says where it ends, else by probing after it.
      const end = avoid.endOfRunAt?.(base + i);
      let j = end !== undefined ? end - base : i + 1;
      if (end === undefined) while (j < nbits && avoid.has(base + j)) j++;
      i = j;
      continue;
    }
    const start = i;
    const stopAt = avoid?.nextMember?.(base + i);
    const limit = stopAt === undefined ? nbits : Math.min(nbits, stopAt - base);
    while (i < limit) {
      // A free byte is taken whole only when nothing is avoided (or the avoid set said where it resumes).
      if ((i & 7) === 0 && bitmap[i >>> 3] === 0 && i + 8 <= limit && (avoid === undefined || stopAt !== undefined)) {
        i += 8;
        continue;
      }
      if (testBit(bitmap, i) || (stopAt === undefined && avoid?.has(base + i))) break;
      i++;
    }
    yield [start, i - start];
  }
}

/** NO_SPACE for a request the free space (under the constraints) cannot meet. */
export function noSpace(file: string, what: 'blocks' | 'inodes', needed: number, free: number, blockSize: number, detail?: string): RefusedError {
  const bytes = what === 'blocks' ? { bytesNeeded: needed * blockSize, bytesFree: free * blockSize } : {};
  return new RefusedError('NO_SPACE', {
    file,
    structure: 'ext4',
    detail: detail ?? (what === 'blocks' ? `not enough free space: ${needed * blockSize} bytes needed, ${free * blockSize} free` : `no free inode (${needed} needed, ${free} free)`),
    needed,
    free,
    ...bytes,
  });
}
