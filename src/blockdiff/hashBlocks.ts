/**
 * Content hashing with xxhash-wasm (XXH64): per block, to find which blocks of two
 * devices differ without keeping either, and over byte streams, to compare file
 * contents. The wasm module is instantiated once per process.
 */
import type { XXHashAPI } from 'xxhash-wasm';

let api: Promise<XXHashAPI> | undefined;

/** The xxhash-wasm API, loaded and instantiated on first use (a diff that hashes nothing never loads it). */
export function xxhashApi(): Promise<XXHashAPI> {
  api ??= import('xxhash-wasm').then((m) => m.default());
  return api;
}

/**
 * XXH64 of each `blockSize`-byte block of `bytes` (a short last block is hashed as is).
 * One call per chunk keeps the wasm boundary crossings to one per block.
 */
export async function hashBlocks(bytes: Uint8Array, blockSize: number): Promise<BigUint64Array> {
  const { h64Raw } = await xxhashApi();
  const n = Math.ceil(bytes.length / blockSize);
  const out = new BigUint64Array(n);
  for (let i = 0; i < n; i++) out[i] = h64Raw(bytes.subarray(i * blockSize, Math.min(bytes.length, (i + 1) * blockSize)));
  return out;
}

/** XXH64 of a whole byte array. */
export async function hashBytes(bytes: Uint8Array): Promise<bigint> {
  const { h64Raw } = await xxhashApi();
  return h64Raw(bytes);
}
