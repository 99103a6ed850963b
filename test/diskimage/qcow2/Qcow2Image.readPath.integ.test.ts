/**
 * The qcow2 read path when a read spans many pieces: clusters stored out of guest
 * order (one file read each, several in flight) and batches of compressed clusters
 * (fetched together, inflated concurrently). Oracle: qemu-img.
 */
import { describe, expect, test } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../../../src/diskimage/qcow2/Qcow2Image.js';
import { qemuImg, qemuIo } from '../../helpers/qemu.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const tmp = useTempDir();
const K = 1024;

describe('Qcow2Image read path', () => {
  test('clusters written in reverse guest order (reversed on the host) read in one call as qemu reads them', async () => {
    const file = join(tmp(), 'reversed.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '1M');
    const writes: string[] = [];
    for (let i = 255; i >= 0; i -= 1) if (i % 5 !== 2) writes.push(`write -P ${i} ${i * 4}k 4k`);
    qemuIo(file, writes);
    const raw = join(tmp(), 'reversed.raw');
    qemuImg('convert', '-O', 'raw', file, raw);
    const img = await Qcow2Image.open(file);
    try {
      expect(Buffer.from(await img.read(0, img.size)).equals(readFileSync(raw))).toBe(true);
    } finally {
      await img.close();
    }
  });

  test('of two damaged compressed clusters in one read, the first in guest order is reported', async () => {
    const src = join(tmp(), 'c2-src.qcow2');
    const file = join(tmp(), 'c2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', src, '1M');
    qemuIo(src, ['write -P 0x61 0 512k']);
    qemuImg('convert', '-c', '-O', 'qcow2', src, file);
    const b = readFileSync(file);
    const l1 = Number(b.readBigUInt64BE(40));
    const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const hostOf = (cluster: number) => Number(b.readBigUInt64BE(l2 + cluster * 8) & ((1n << 54n) - 1n));
    // Cluster 5 is damaged so that it fails fast; cluster 2 is damaged too and is reported.
    b.fill(0xff, hostOf(2), hostOf(2) + 16);
    b.fill(0xff, hostOf(5), hostOf(5) + 2);
    writeFileSync(file, b);
    const img = await Qcow2Image.open(file);
    try {
      await expectImgError(() => img.read(0, 512 * K), 'CORRUPT_IMAGE', { file, structure: 'qcow2.compressed_cluster', offset: hostOf(2) });
    } finally {
      await img.close();
    }
  });
});
