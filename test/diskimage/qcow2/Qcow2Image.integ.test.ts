/**
 * The qcow2 reader against qemu-img, on images qemu-img itself creates with many
 * options: our bytes equal `qemu-img convert -O raw`, our map equals `qemu-img map`.
 */
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openChain } from '../../../src/diskimage/openChain.js';
import { qemuImg, qemuIo } from '../../helpers/qemu.js';
import { useTempDir } from '../../helpers/tmp.js';
import { findForeignCorpusFile, noteMissingCorpus } from '../../helpers/corpus.js';
import { expectReadsAsQemu } from './qemuOracle.js';

const tmp = useTempDir();

/** Writes that exercise partial clusters, zero writes and discards. */
const PATTERN = [
  'write -P 0x11 0 64k',
  'write -P 0x22 100k 8k',
  'write -P 0x33 1M 1M',
  'write -z 1536k 128k',
  'write -P 0x44 3M 4k',
  'write -P 0x55 5000k 512',
  'discard 1M 64k',
  'write -P 0x66 7M 1M',
];

interface Variant {
  name: string;
  options: string;
  /** Write with qemu-io, or convert a written image with these extra flags (compression). */
  convertFlags?: string[];
}

const VARIANTS: Variant[] = [
  { name: 'compat 0.10', options: 'compat=0.10' },
  { name: 'compat 1.1', options: 'compat=1.1' },
  { name: 'cluster 512', options: 'cluster_size=512' },
  { name: 'cluster 4K', options: 'cluster_size=4096' },
  { name: 'cluster 2M', options: 'cluster_size=2M' },
  { name: 'extended_l2 64K', options: 'extended_l2=on,cluster_size=64k' },
  { name: 'extended_l2 2M', options: 'extended_l2=on,cluster_size=2M' },
  { name: 'lazy_refcounts', options: 'lazy_refcounts=on' },
  { name: 'refcount_bits=1', options: 'refcount_bits=1' },
  { name: 'refcount_bits=64', options: 'refcount_bits=64' },
  { name: 'preallocation=metadata', options: 'preallocation=metadata' },
  { name: 'preallocation=falloc', options: 'preallocation=falloc' },
  { name: 'preallocation=full', options: 'preallocation=full' },
  { name: 'compressed deflate', options: 'compression_type=zlib', convertFlags: ['-c'] },
  { name: 'compressed zstd', options: 'compression_type=zstd', convertFlags: ['-c'] },
  { name: 'compressed zstd 4K clusters', options: 'compression_type=zstd,cluster_size=4096', convertFlags: ['-c'] },
];

let oracleRuns = 0;

async function expectMatchesQemu(file: string): Promise<void> {
  await expectReadsAsQemu(file, join(tmp(), `expected-${++oracleRuns}.raw`));
}

describe('qcow2 images made by qemu-img read as qemu-img reads them', () => {
  test.each(VARIANTS)('$name', async ({ name, options, convertFlags }) => {
    const dir = tmp();
    const file = join(dir, `${name.replace(/\W+/g, '_')}.qcow2`);
    if (convertFlags) {
      const src = `${file}.src.qcow2`;
      qemuImg('create', '-f', 'qcow2', src, '9M');
      qemuIo(src, PATTERN);
      qemuImg('convert', ...convertFlags, '-O', 'qcow2', '-o', options, src, file);
    } else {
      qemuImg('create', '-f', 'qcow2', '-o', options, file, '9M');
      qemuIo(file, PATTERN);
    }
    await expectMatchesQemu(file);
  });
});

describe('backing chains', () => {
  test('three qcow2 layers over a raw base, relative names, different sizes', async () => {
    const dir = join(tmp(), 'chain');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    qemuImg('create', '-f', 'raw', join(dir, 'base.raw'), '6M');
    qemuIo(join(dir, 'base.raw'), ['write -P 0xa1 0 6M'], 'raw');
    // mid lives in sub/ and names its backing file relative to itself.
    qemuImg('create', '-f', 'qcow2', '-b', '../base.raw', '-F', 'raw', join(dir, 'sub', 'mid.qcow2'), '4M');
    qemuIo(join(dir, 'sub', 'mid.qcow2'), ['write -P 0xb2 64k 64k', 'write -z 1M 64k']);
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'sub/mid.qcow2', '-F', 'qcow2', join(dir, 'upper.qcow2'), '8M');
    qemuIo(join(dir, 'upper.qcow2'), ['write -P 0xc3 0 4k', 'write -P 0xc4 70k 4k', 'write -P 0xc5 5M 4k']);
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'upper.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'), '8M');
    qemuIo(join(dir, 'top.qcow2'), ['write -P 0xd6 2k 2k', 'write -z 3M 64k']);
    await expectMatchesQemu(join(dir, 'top.qcow2'));
    const chain = await openChain(join(dir, 'top.qcow2'));
    expect(chain.layers.map((l) => l.format)).toEqual(['qcow2', 'qcow2', 'qcow2', 'raw']);
    await chain.close();
  });

  test('a backing file without a recorded format is probed', async () => {
    const dir = join(tmp(), 'probe');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    qemuImg('create', '-f', 'qcow2', join(dir, 'base.qcow2'), '2M');
    qemuIo(join(dir, 'base.qcow2'), ['write -P 7 0 1M']);
    qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'), '2M');
    // Drop the backing format extension the way older qemu wrote images: rebase -u without -F is refused by
    // qemu 7, so write it with qemu-img amend? Not possible either; patch the extension type to an unknown one.
    const buf = readFileSync(join(dir, 'top.qcow2'));
    const pos = buf.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(pos).toBeGreaterThan(0);
    buf.writeUInt32BE(0x12345678, pos);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'top.qcow2'), buf);
    const chain = await openChain(join(dir, 'top.qcow2'));
    expect(chain.layers.map((l) => l.format)).toEqual(['qcow2', 'qcow2']);
    const data = await chain.device.read(0, 1024);
    expect(data.every((b) => b === 7)).toBe(true);
    await chain.close();
  });
});

// dfvfs's test images (Apache-2.0) are lent by ../shared/corpus, not fetchable here: skipped
// with a note where absent, CI included.
const FOREIGN = ['dfvfs-ext2.qcow2', 'dfvfs-windows_volume.qcow2'].map((name) => ({ name, file: findForeignCorpusFile(name) }));
const foreignNote = noteMissingCorpus('the dfvfs qcow2 images (corpus/foreign)', FOREIGN.every((f) => f.file !== undefined), 'Put them in ../shared/corpus/foreign or $IMGDEDUP_CORPUS/foreign.', false);
describe.skipIf(foreignNote !== '')(`foreign images${foreignNote}`, () => {
  test.each(FOREIGN)('$name reads as qemu-img reads it', async ({ file }) => {
    await expectMatchesQemu(file!);
  });
});
