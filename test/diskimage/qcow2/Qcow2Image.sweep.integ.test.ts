/**
 * The qcow2 sweep against qemu-img: every cluster size we care about x compression
 * (none, zlib, zstd) x extended L2 (where qemu allows it: clusters of 16 KiB and up) x
 * standalone/overlay. For each image: our bytes equal `qemu-img convert -O raw`, our
 * map equals `qemu-img map`, our check verdict equals `qemu-img check`.
 *
 * The images mix compressed clusters (written by `qemu-img convert -c` and by
 * `qemu-io write -c`), plain clusters, partially written (sub)clusters, zeroed
 * subclusters and partial writes into compressed clusters. Overlays sit on a raw
 * base of seeded random bytes, so a range read from the wrong place (or wrongly
 * falling through to the base) cannot match by accident.
 */
import { beforeAll, describe, test } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { qemuImg, qemuIo } from '../../helpers/qemu.js';
import { useTempDir } from '../../helpers/tmp.js';
import { expectCheckAgrees, expectReadsAsQemu } from './qemuOracle.js';

const tmp = useTempDir('imgdedup-sweep-');

const KiB = 1024;
const MiB = 1024 * KiB;
/** Guest size: at least 4 clusters (8 MiB for 2 MiB clusters, sparse), otherwise 1 MiB. */
const guestSize = (clusterSize: number) => Math.max(MiB, 4 * clusterSize);
/** The overlays' base is as large as the largest guest. */
const BASE_SIZE = guestSize(2 * MiB);

type Compression = 'none' | 'zlib' | 'zstd';
interface Case {
  readonly name: string;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  readonly compression: Compression;
  readonly overlay: boolean;
}

const CASES: Case[] = [];
function addCases(clusterSizes: number[], extendedL2s: boolean[], compressions: Compression[]): void {
  for (const clusterSize of clusterSizes) {
    // qemu needs subclusters of at least 512 bytes: extended L2 only from 16 KiB clusters.
    for (const extendedL2 of extendedL2s.filter((e) => !e || clusterSize >= 16 * KiB)) {
      for (const compression of compressions) {
        for (const overlay of [false, true]) {
          const name = `${clusterSize / KiB}K ${extendedL2 ? 'ext-L2' : 'std-L2'} ${compression} ${overlay ? 'overlay' : 'standalone'}`;
          CASES.push({ name, clusterSize, extendedL2, compression, overlay });
        }
      }
    }
  }
}
// The whole matrix on the smallest, common and largest cluster sizes.
addCases([512, 4 * KiB, 16 * KiB, 64 * KiB, 2 * MiB], [false, true], ['none', 'zlib', 'zstd']);
// Every other cluster size that has subclusters, compressed (alternately zlib and zstd):
// the compressed descriptor's bit split depends on cluster_bits.
addCases([32 * KiB, 256 * KiB, MiB], [true], ['zlib']);
addCases([128 * KiB, 512 * KiB], [true], ['zstd']);

/** Seeded random bytes: incompressible, and recognisably not what the overlays write. */
function randomBytes(length: number, seed: number): Buffer {
  const rnd = mulberry32(seed);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) out.writeUInt32LE(Math.floor(rnd() * 2 ** 32), i);
  return out;
}

/**
 * A source for `qemu-img convert`: clusters 0-2 stay empty (qemu cannot write compressed
 * over allocated clusters, and qemu-io writes them), then by (k - 3) mod 3 cluster k is a
 * one-byte pattern (compressible), random (stored plain even with -c) or zeros (not stored).
 */
function convertSource(size: number, clusterSize: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  const rnd = randomBytes(size, seed);
  for (let k = 3; k * clusterSize < size; k++) {
    const at = k * clusterSize;
    if ((k - 3) % 3 === 0) out.fill(0x60 + (k % 32), at, at + clusterSize);
    else if ((k - 3) % 3 === 1) rnd.copy(out, at, at, at + clusterSize);
  }
  return out;
}

/**
 * qemu-io writes in units of a subcluster (1/32 cluster; with standard L2 the same
 * fraction, so writes are partial clusters too). With compression, full clusters are
 * written compressed: 0 (left intact) and 2 (then partly overwritten, which makes qemu
 * decompress and rewrite it); cluster 1 gets partial plain and zero writes. An overlay
 * also gets compressed clusters 3 and the last; the clusters in between fall through to
 * the base. Cluster 4, where there is one, gets a partial zero write (into a compressed
 * cluster of a standalone image made by `convert -c`).
 */
function writes(c: Case, size: number): string[] {
  const cs = c.clusterSize;
  const u = cs / 32;
  const w = c.compression === 'none' ? 'write' : 'write -c';
  const last = size / cs - 1;
  return [
    `${w} -P 0x41 0 ${cs}`,
    `write -P 0x42 ${cs + u} ${3 * u}`,
    `write -z ${cs + 6 * u} ${2 * u}`,
    `${w} -P 0x43 ${2 * cs} ${cs}`,
    `write -P 0x44 ${2 * cs + 5 * u} ${u}`,
    `write -P 0x46 ${2 * cs + 31 * u} ${u}`,
    ...(c.overlay ? [`${w} -P 0x45 ${3 * cs} ${cs}`] : []),
    ...(c.overlay && last > 3 ? [`${w} -P 0x47 ${last * cs} ${cs}`] : []),
    ...(last > 4 ? [`write -z ${4 * cs + 7 * u} ${9 * u}`] : []),
  ];
}

let base: string;
beforeAll(() => {
  base = join(tmp(), 'base.raw');
  writeFileSync(base, randomBytes(BASE_SIZE, 0xba5e));
});

describe('qcow2 sweep: content, map and check agree with qemu-img', () => {
  test.each(CASES)('$name', async (c) => {
    const dir = tmp();
    const stem = join(dir, c.name.replace(/\W+/g, '_'));
    const file = `${stem}.qcow2`;
    const size = guestSize(c.clusterSize);
    const options = [
      `cluster_size=${c.clusterSize}`,
      `extended_l2=${c.extendedL2 ? 'on' : 'off'}`,
      ...(c.compression !== 'none' ? [`compression_type=${c.compression}`] : []),
    ].join(',');
    if (c.overlay) {
      qemuImg('create', '-q', '-f', 'qcow2', '-o', options, '-b', base, '-F', 'raw', file, String(size));
    } else {
      const src = `${stem}.src.raw`;
      writeFileSync(src, convertSource(size, c.clusterSize, c.clusterSize));
      qemuImg('convert', ...(c.compression !== 'none' ? ['-c'] : []), '-O', 'qcow2', '-o', options, src, file);
    }
    qemuIo(file, writes(c, size));
    await expectReadsAsQemu(file, `${stem}.expected.raw`);
    await expectCheckAgrees(file, true);
  });
});
