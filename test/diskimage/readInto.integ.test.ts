/**
 * readInto fills a caller's buffer, which may hold anything from an earlier read: every
 * byte of it must be set (data, zero clusters, unallocated ranges, ranges past the end),
 * so reading a whole image through one reused buffer gives `qemu-img convert -O raw`.
 */
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openChain } from '../../src/diskimage/openChain.js';
import { readInto } from '../../src/diskimage/readInto.js';
import { SliceDevice } from '../../src/diskimage/SliceDevice.js';
import type { BlockDevice } from '../../src/diskimage/BlockDevice.js';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir();
const M = 1024 * 1024;

/** Writes with partial clusters, zero writes and a discard, over 4 MiB. */
const WRITES = ['write -P 0x11 0 64k', 'write -P 0x22 100k 8k', 'write -P 0x33 1M 1M', 'write -z 1536k 128k', 'discard 1M 64k', 'write -P 0x44 3M 4k', 'write -P 0x55 4000k 512'];

/** Reads `dev` whole, through one buffer pre-filled with 0xee, in pieces of `chunk` bytes. */
async function readThroughOneBuffer(dev: BlockDevice, chunk: number): Promise<Buffer> {
  const out = Buffer.alloc(dev.size);
  const buf = new Uint8Array(chunk);
  for (let pos = 0; pos < dev.size; pos += chunk) {
    const piece = buf.subarray(0, Math.min(chunk, dev.size - pos));
    piece.fill(0xee);
    await readInto(dev, piece, pos);
    out.set(piece, pos);
  }
  return out;
}

async function expectLikeQemu(file: string, format?: string): Promise<void> {
  const expected = join(tmp(), `${Math.random().toString(36).slice(2)}.raw`);
  qemuImg('convert', ...(format ? ['-f', format] : []), '-O', 'raw', file, expected);
  const want = readFileSync(expected);
  const chain = await openChain(file, format ? { format } : {});
  try {
    // Chunks that straddle cluster boundaries, and one larger than the disk.
    for (const chunk of [3 * 65536 + 4096 + 512, 8 * M]) {
      expect((await readThroughOneBuffer(chain.device, chunk)).equals(want)).toBe(true);
    }
  } finally {
    await chain.close();
  }
}

function qcow2(name: string, options: string, { compress = false } = {}): string {
  const file = join(tmp(), name);
  if (!compress) {
    qemuImg('create', '-q', '-f', 'qcow2', '-o', options, file, '4M');
    qemuIo(file, WRITES);
    return file;
  }
  const src = join(tmp(), `${name}.src.qcow2`);
  qemuImg('create', '-q', '-f', 'qcow2', src, '4M');
  qemuIo(src, WRITES);
  qemuImg('convert', '-c', '-O', 'qcow2', '-o', options, src, file);
  return file;
}

describe('readInto sets every byte of a reused buffer', () => {
  test.each([
    ['qcow2', 'cluster_size=65536'],
    ['qcow2 with 4K clusters', 'cluster_size=4096'],
    ['qcow2 with extended L2', 'extended_l2=on,cluster_size=65536'],
  ])('%s', async (_name, options) => {
    await expectLikeQemu(qcow2(`${options}.qcow2`, options));
  });

  test.each([['zlib'], ['zstd']])('compressed qcow2 (%s)', async (type) => {
    await expectLikeQemu(qcow2(`c-${type}.qcow2`, `compression_type=${type}`, { compress: true }));
  });

  test('a qcow2 overlay over a shorter backing file', async () => {
    const base = join(tmp(), 'short-base.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '2M');
    qemuIo(base, ['write -P 0x77 0 2M']);
    const top = join(tmp(), 'over-short.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '4M');
    qemuIo(top, ['write -P 0x88 512k 64k', 'write -z 1M 64k', 'write -P 0x99 3M 64k']);
    await expectLikeQemu(top);
  });

  test.each([['monolithicSparse'], ['streamOptimized'], ['monolithicFlat']])('VMDK %s', async (subformat) => {
    const src = join(tmp(), `v-${subformat}.qcow2`);
    qemuImg('create', '-q', '-f', 'qcow2', src, '4M');
    qemuIo(src, WRITES);
    const file = join(tmp(), `v-${subformat}.vmdk`);
    qemuImg('convert', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, file);
    await expectLikeQemu(file);
  });

  test('raw, with a size that is not a multiple of the chunk', async () => {
    const file = join(tmp(), 'odd.raw');
    qemuImg('create', '-q', '-f', 'raw', file, `${4 * M + 512}`);
    qemuIo(file, ['write -P 0x5a 4M 512', 'write -P 0x11 0 4k'], 'raw');
    await expectLikeQemu(file, 'raw');
  });

  test('a slice reads its window, and zeros past its end', async () => {
    const file = qcow2('slice.qcow2', 'cluster_size=65536');
    const chain = await openChain(file);
    try {
      const whole = await chain.device.read(0, chain.device.size);
      const slice = new SliceDevice(chain.device, 96 * 1024, 2 * M);
      const buf = new Uint8Array(2 * M + 4096).fill(0xee);
      await readInto(slice, buf, 0);
      const want = new Uint8Array(2 * M + 4096);
      want.set(whole.subarray(96 * 1024, 96 * 1024 + 2 * M));
      expect(Buffer.from(buf).equals(Buffer.from(want))).toBe(true);
    } finally {
      await chain.close();
    }
  });
});
