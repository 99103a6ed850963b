/**
 * zstd clusters are decompressed on worker threads: what comes back equals what the
 * `zstd` tool compressed, many requests in flight at once each get their own answer,
 * and a frame that does not decompress is a rejection, after which the pool still works.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { zstdDecompressOffThread } from '../../../src/diskimage/qcow2/zstdPool.js';

function zstdCompress(data: Uint8Array): Uint8Array {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return new Uint8Array(r.stdout);
}

function cluster(seed: number, size: number): Uint8Array {
  const next = mulberry32(seed);
  const b = new Uint8Array(size);
  // Compressible: runs of a few byte values.
  for (let i = 0; i < size; i += 64) b.fill(Math.floor(next() * 4), i, i + 64);
  return b;
}

describe('zstdDecompressOffThread', () => {
  it('returns exactly what zstd compressed, for many requests at once', async () => {
    const size = 65536;
    const inputs = Array.from({ length: 24 }, (_, i) => cluster(i + 1, size));
    const frames = inputs.map(zstdCompress);
    const outs = await Promise.all(frames.map((f) => zstdDecompressOffThread(f, size)));
    outs.forEach((o, i) => expect(Buffer.from(o).equals(Buffer.from(inputs[i]!))).toBe(true));
  });

  it('rejects a corrupt frame, and the pool answers the next request', async () => {
    const size = 4096;
    const good = cluster(99, size);
    const frame = zstdCompress(good);
    const bad = frame.slice();
    bad.fill(0xff, 4, Math.min(bad.length, 40));
    await expect(zstdDecompressOffThread(bad, size)).rejects.toThrow();
    const out = await zstdDecompressOffThread(frame, size);
    expect(Buffer.from(out).equals(Buffer.from(good))).toBe(true);
  });
});
