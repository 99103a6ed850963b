/**
 * The htree name hashes (ext4 doc, directory.rst, "Hash Tree Directories"): legacy
 * (dx_hack_hash), half_md4 and tea, each in a signed and an unsigned variant. The
 * variant is the one historical difference between architectures: whether name bytes
 * were read as `char` (signed on x86) or `unsigned char`. The filesystem records which
 * one it uses in s_flags (EXT2_FLAGS_SIGNED_HASH / EXT2_FLAGS_UNSIGNED_HASH), and the
 * kernel adds 3 to a root's hash_version <= tea when the unsigned flag is set.
 *
 * Casefolded names (the casefold feature, and siphash, hash_version 6, which only
 * casefolded encrypted directories use) are out of scope: the writer refuses such
 * directories, and dxHash throws WRITE_REFUSED for a version it does not know.
 */
import { RefusedError } from '../../errors.js';
import { DX_HASH_HALF_MD4, DX_HASH_LEGACY, DX_HASH_TEA } from './constants.js';

/** ext4 doc, directory.rst: the unsigned variants of legacy, half_md4 and tea. */
export const DX_HASH_LEGACY_UNSIGNED = 3;
export const DX_HASH_HALF_MD4_UNSIGNED = 4;
export const DX_HASH_TEA_UNSIGNED = 5;

/** ext4 doc, directory.rst: the seed used when s_hash_seed is all zero (the MD4 initial state). */
export const DX_DEFAULT_HASH_SEED: readonly number[] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/** The last hash value is reserved as the end-of-directory cookie of 32-bit readdir. */
const EXT4_HTREE_EOF_32BIT = 0x7fffffff;

export interface DxHash {
  /** The major hash, low bit cleared (the bit marks collisions in index entries). */
  readonly hash: number;
  readonly minorHash: number;
}

/**
 * The hash version a directory uses: its dx_root hash_version, turned into the unsigned
 * variant when the filesystem says so (s_flags & EXT2_FLAGS_UNSIGNED_HASH).
 */
export function effectiveHashVersion(rootHashVersion: number, unsignedHash: boolean): number {
  return rootHashVersion <= DX_HASH_TEA && unsignedHash ? rootHashVersion + 3 : rootHashVersion;
}

/**
 * Hashes `name` with hash version `version` (0..5: legacy, half_md4, tea, then their
 * unsigned variants) and the four 32-bit words of s_hash_seed (all zero: the default
 * seed). Returns { hash, minorHash } as the kernel computes them. Throws WRITE_REFUSED
 * for any other version (siphash: casefolded directories).
 */
export function dxHash(name: Uint8Array, version: number, seed: readonly number[]): DxHash {
  const buf = seed.length === 4 && seed.some((w) => w !== 0) ? seed.map((w) => w >>> 0) : [...DX_DEFAULT_HASH_SEED];
  let hash: number;
  let minorHash = 0;
  switch (version) {
    case DX_HASH_LEGACY:
    case DX_HASH_LEGACY_UNSIGNED:
      hash = dxHackHash(name, version === DX_HASH_LEGACY_UNSIGNED);
      break;
    case DX_HASH_HALF_MD4:
    case DX_HASH_HALF_MD4_UNSIGNED: {
      const input = new Array<number>(8);
      for (let p = 0; p < name.length; p += 32) {
        strToHashBuf(name, p, input, 8, version === DX_HASH_HALF_MD4_UNSIGNED);
        halfMd4Transform(buf, input);
      }
      hash = buf[1]!;
      minorHash = buf[2]!;
      break;
    }
    case DX_HASH_TEA:
    case DX_HASH_TEA_UNSIGNED: {
      const input = new Array<number>(4);
      for (let p = 0; p < name.length; p += 16) {
        strToHashBuf(name, p, input, 4, version === DX_HASH_TEA_UNSIGNED);
        teaTransform(buf, input);
      }
      hash = buf[0]!;
      minorHash = buf[1]!;
      break;
    }
    default:
      throw new RefusedError('WRITE_REFUSED', { structure: 'ext4.dx_root.hash_version', detail: 'htree hash version not supported for writing (casefolded or unknown)', actual: version });
  }
  hash = (hash & ~1) >>> 0;
  // The kernel keeps the 32-bit EOF cookie out of the hash space.
  if (hash === (EXT4_HTREE_EOF_32BIT << 1) >>> 0) hash = ((EXT4_HTREE_EOF_32BIT - 1) << 1) >>> 0;
  return { hash, minorHash: minorHash >>> 0 };
}

/** A name byte as the `char` (signed) or `unsigned char` the hash was specified with. */
function nameByte(name: Uint8Array, i: number, unsigned: boolean): number {
  const b = name[i]!;
  return unsigned || b < 128 ? b : b - 256;
}

/** The legacy hash (dx_hack_hash), from the Reiserfs r5 hash. */
function dxHackHash(name: Uint8Array, unsigned: boolean): number {
  let hash0 = 0x12a3fe2d;
  let hash1 = 0x37abe8f9;
  for (let i = 0; i < name.length; i++) {
    let hash = (hash1 + ((hash0 ^ Math.imul(nameByte(name, i, unsigned), 7152373)) >>> 0)) >>> 0;
    if (hash & 0x80000000) hash = (hash - 0x7fffffff) >>> 0;
    hash1 = hash0;
    hash0 = hash;
  }
  return (hash0 << 1) >>> 0;
}

/**
 * Packs up to 4*num bytes of name[from..] into `num` 32-bit words, big-endian within a
 * word, padding with the length byte repeated (so names differing only in length differ).
 */
function strToHashBuf(name: Uint8Array, from: number, out: number[], num: number, unsigned: boolean): void {
  let len = name.length - from;
  let pad = (len | (len << 8)) >>> 0;
  pad = (pad | (pad << 16)) >>> 0;
  let val = pad;
  if (len > num * 4) len = num * 4;
  let k = 0;
  for (let i = 0; i < len; i++) {
    val = (nameByte(name, from + i, unsigned) + ((val << 8) >>> 0)) >>> 0;
    if (i % 4 === 3) {
      out[k++] = val;
      val = pad;
    }
  }
  if (k < num) out[k++] = val;
  while (k < num) out[k++] = pad;
}

const rol32 = (x: number, s: number): number => ((x << s) | (x >>> (32 - s))) >>> 0;

/**
 * The 24 steps of halfMd4Transform: which input word each reads and by how much it
 * rotates; steps 0-7 use F and no constant, 8-15 G and K2, 16-23 H and K3. A table built
 * once: the transform runs for every name hashed (a leaf split hashes all of its names).
 */
const MD4_X = Uint8Array.of(0, 1, 2, 3, 4, 5, 6, 7, 1, 3, 5, 7, 0, 2, 4, 6, 3, 7, 2, 6, 1, 5, 0, 4);
const MD4_S = Uint8Array.of(3, 7, 11, 19, 3, 7, 11, 19, 3, 5, 9, 13, 3, 5, 9, 13, 3, 9, 11, 15, 3, 9, 11, 15);
const K2 = 0x5a827999;
const K3 = 0x6ed9eba1;

/** The reduced MD4 round (three rounds of eight steps) of the half_md4 hash. */
function halfMd4Transform(buf: number[], x: readonly number[]): void {
  let a = buf[0]!;
  let b = buf[1]!;
  let c = buf[2]!;
  let d = buf[3]!;
  for (let i = 0; i < 24; i++) {
    // F(b, c, d), G(b, c, d) or H(b, c, d), and the round's constant.
    const f = i < 8 ? d ^ (b & (c ^ d)) : i < 16 ? ((b & c) + ((b ^ c) & d)) >>> 0 : b ^ c ^ d;
    const k = i < 8 ? 0 : i < 16 ? K2 : K3;
    // a = rol(a + f + x[i] + k, s), with (a, b, c, d) rotating: the next step updates d (as "a").
    const t = rol32((a + f + x[MD4_X[i]!]! + k) >>> 0, MD4_S[i]!);
    a = d;
    d = c;
    c = b;
    b = t;
  }
  // After 24 steps (a multiple of 4) the roles are back in place.
  buf[0] = (buf[0]! + a) >>> 0;
  buf[1] = (buf[1]! + b) >>> 0;
  buf[2] = (buf[2]! + c) >>> 0;
  buf[3] = (buf[3]! + d) >>> 0;
}

/** 16 rounds of TEA, the name block as the key. */
function teaTransform(buf: number[], x: readonly number[]): void {
  let sum = 0;
  let b0 = buf[0]!;
  let b1 = buf[1]!;
  const [a, b, c, d] = [x[0]!, x[1]!, x[2]!, x[3]!];
  for (let n = 0; n < 16; n++) {
    sum = (sum + 0x9e3779b9) >>> 0;
    b0 = (b0 + ((((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >>> 5) + b)) >>> 0)) >>> 0;
    b1 = (b1 + ((((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >>> 5) + d)) >>> 0)) >>> 0;
  }
  buf[0] = (buf[0]! + b0) >>> 0;
  buf[1] = (buf[1]! + b1) >>> 0;
}
