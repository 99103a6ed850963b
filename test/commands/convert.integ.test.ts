/**
 * `imgdedup convert` against qemu-img: outputs pass `qemu-img check`, compare
 * equal to the source chain, overlays record their backing and hold only what
 * differs; the CLI refuses an existing output and leaves nothing behind on failure.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { convert } from '../../src/commands/convert.js';
import { useTempDir } from '../helpers/tmp.js';
import { imgdedup } from '../helpers/run.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap } from '../helpers/qemu.js';

const tmp = useTempDir();
const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

let dir: string;
let base: string;
let top: string;

/** base (64k clusters) <- mid (4k clusters) <- top (64k, extended L2): three deep, with zeroed and rewritten ranges. */
beforeAll(() => {
  dir = tmp();
  base = join(dir, 'base.qcow2');
  const mid = join(dir, 'mid.qcow2');
  top = join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, String(SIZE));
  qemuIo(base, ['write -P 0x11 0 12M', 'write -P 0x12 20M 4M', 'write -z 2M 1M', 'write -P 0x00 5M 512k'], 'qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', mid);
  qemuIo(mid, ['write -P 0x21 1M 8k', 'write -P 0x22 9M 100k', 'write -z 21M 64k', 'write -P 0x23 30M 4k'], 'qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k,extended_l2=on', '-b', 'mid.qcow2', '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0x31 4k 4k', 'write -P 0x32 10M 2k', 'write -z 0 2k', 'write -P 0x33 31M 1M', 'write -z 22M 8k'], 'qcow2');
});

describe('convert to a standalone image', () => {
  it.each([
    { clusterSize: 512, extendedL2: false },
    { clusterSize: 4096, extendedL2: false },
    { clusterSize: 65536, extendedL2: false },
    { clusterSize: 65536, extendedL2: true },
    { clusterSize: 2 * MiB, extendedL2: false },
    { clusterSize: 2 * MiB, extendedL2: true },
  ])('qcow2, cluster $clusterSize extendedL2 $extendedL2: check clean, compares equal to the chain', async ({ clusterSize, extendedL2 }) => {
    const out = join(dir, `flat-${clusterSize}-${extendedL2}.qcow2`);
    const progress: [number, number][] = [];
    const r = await convert({ source: top, output: out, clusterSize, extendedL2, onProgress: (d, t) => progress.push([d, t]) });
    const check = qemuCheck(out);
    expect(check.clean, check.output).toBe(true);
    expect(qemuCompare(top, out)).toBe(true);
    const info = JSON.parse(qemuImg('info', '--output=json', out)) as Record<string, unknown>;
    expect(info['backing-filename']).toBeUndefined();
    expect(info['cluster-size']).toBe(clusterSize);
    expect(r).toMatchObject({ output: out, format: 'qcow2', virtualSize: SIZE, backing: null });
    expect(r.fileSize).toBe(statSync(out).size);
    // The zero ranges (base's explicit 0x00 write, write -z) were detected and skipped
    // (a 2 MiB cluster is never wholly inside one of them).
    if (clusterSize < 2 * MiB || extendedL2) expect(r.zeroClustersSkipped).toBeGreaterThan(0);
    // qemu's own allocation of the output: data only where the chain's content is non-zero.
    const dataBytes = qemuMap(out).filter((e) => e.data).reduce((n, e) => n + e.length, 0);
    expect(dataBytes).toBe(r.bytesWritten);
    expect(dataBytes).toBeLessThan(20 * MiB);
    const last = progress[progress.length - 1]!;
    expect(last[0]).toBe(last[1]);
  });

  it('raw: sparse, compares equal', async () => {
    const out = join(dir, 'flat.raw');
    const r = await convert({ source: top, output: out, outputFormat: 'raw' });
    expect(statSync(out).size).toBe(SIZE);
    expect(qemuCompare(top, out)).toBe(true);
    expect(statSync(out).blocks * 512).toBeLessThan(20 * MiB); // holes where the chain reads zeros
    expect(r.format).toBe('raw');
  });
});

describe('convert --backing', () => {
  it('writes an overlay holding only what differs from FILE, smaller than a standalone copy', async () => {
    const out = join(dir, 'thin.qcow2');
    const r = await convert({ source: top, output: out, backing: 'base.qcow2', clusterSize: 4096 });
    const check = qemuCheck(out);
    expect(check.clean, check.output).toBe(true);
    expect(qemuCompare(top, out)).toBe(true);
    const info = JSON.parse(qemuImg('info', '--output=json', out)) as Record<string, unknown>;
    expect(info['backing-filename']).toBe('base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    expect(r.backingFormat).toBe('qcow2');
    expect(r.zeroClustersWritten).toBeGreaterThan(0); // write -z over base data in mid/top
    // The source sits on base.qcow2 itself: only what mid and top store is compared, not
    // base's whole allocation (16 MiB of data): the cost follows the overlay.
    expect(r.unchangedClusters * 4096).toBeLessThan(2 * MiB);
    const standalone = join(dir, 'standalone-4k.qcow2');
    await convert({ source: top, output: standalone, clusterSize: 4096 });
    expect(statSync(out).size).toBeLessThan(statSync(standalone).size / 4);
    // What the overlay stores (depth 0) is within the ranges mid and top changed.
    const changed = [[0, 8192], [1 * MiB, 8192], [9 * MiB, 100 * 1024], [10 * MiB, 4096], [21 * MiB, 65536], [22 * MiB, 8192], [30 * MiB, 2 * MiB]];
    for (const e of qemuMap(out).filter((x) => x.depth === 0)) {
      expect(changed.some(([s, l]) => e.start >= s! && e.start + e.length <= s! + l!), JSON.stringify(e)).toBe(true);
    }
  });

  it('a VMDK delta stores zeros over its parent as zeroed grain entries, not grains of zeros', async () => {
    const vbase = join(dir, 'vbase.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', vbase, '8M');
    qemuIo(vbase, ['write -P 0x55 0 8M'], 'vmdk');
    const client = join(dir, 'vclient.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'vbase.vmdk', '-F', 'vmdk', client);
    qemuIo(client, ['write -z 1M 1M', 'write -P 0x66 4M 64k'], 'qcow2');
    const out = join(dir, 'vdelta.vmdk');
    const r = await convert({ source: client, output: out, outputFormat: 'vmdk', backing: 'vbase.vmdk', clusterSize: 4096 });
    expect(qemuCompare(client, out)).toBe(true);
    expect(qemuCheck(out, 'vmdk').clean).toBe(true);
    const own = qemuMap(out).filter((e) => e.depth === 0);
    expect(own.filter((e) => e.data).reduce((n, e) => n + e.length, 0)).toBe(64 * 1024);
    expect(own.filter((e) => !e.data && e.zero).reduce((n, e) => n + e.length, 0)).toBe(MiB);
    expect(r.fileSize).toBeLessThan(512 * 1024);
  });

  it('takes a backing format and an overlay of the source itself stores nothing new', async () => {
    const out = join(dir, 'same.qcow2');
    const r = await convert({ source: base, output: out, backing: 'base.qcow2', backingFormat: 'qcow2' });
    expect(r.clustersWritten).toBe(0);
    expect(qemuCheck(out).clean).toBe(true);
    expect(qemuCompare(base, out)).toBe(true);
  });
});

// Runs dist/cli.cjs as built by `npm test` (or `npx tsup`). Rebuilding it here raced with the
// other test files running the CLI at the same time (tsup empties dist/ first).
describe('imgdedup convert (CLI)', () => {
  it('--json prints the result; an existing DST is refused with OUTPUT_EXISTS (exit 2)', () => {
    const out = join(dir, 'cli.qcow2');
    const ok = imgdedup(['convert', '--json', '--cluster-size', '4k', top, out]);
    expect(ok.status, ok.stderr).toBe(0);
    const r = JSON.parse(ok.stdout) as Record<string, unknown>;
    expect(r).toMatchObject({ output: out, format: 'qcow2', clusterSize: 4096 });
    expect(typeof r.seconds).toBe('number');
    expect(qemuCompare(top, out)).toBe(true);
    const before = statSync(out).mtimeMs;
    const again = imgdedup(['convert', '--json', top, out]);
    expect(again.status).toBe(2);
    expect(JSON.parse(again.stderr)).toMatchObject({ code: 'OUTPUT_EXISTS', data: { file: out } });
    expect(statSync(out).mtimeMs).toBe(before);
    const forced = imgdedup(['convert', '--json', '--force', '-O', 'raw', top, out]);
    expect(forced.status, forced.stderr).toBe(0);
    expect(statSync(out).size).toBe(SIZE);
    expect(readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('--force never replaces a file SRC or the backing file reads: an overlay on it would change (exit 1, nothing written)', () => {
    const d = join(dir, 'chain');
    mkdirSync(d);
    const [base, overlay, sibling, other] = ['base.qcow2', 'top.qcow2', 'sibling.qcow2', 'other.qcow2'].map((n) => join(d, n));
    qemuImg('create', '-q', '-f', 'qcow2', base!, '4M');
    qemuIo(base!, ['write -P 0x11 0 1M'], 'qcow2');
    for (const o of [overlay!, sibling!]) qemuImg('create', '-q', '-f', 'qcow2', '-b', base!, '-F', 'qcow2', o);
    qemuIo(overlay!, ['write -P 0x22 0 64k'], 'qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', other!, '4M');
    const sums = (): string[] => [base!, overlay!].map((f) => readFileSync(f).toString('base64'));
    const before = sums();
    for (const args of [
      ['convert', '--force', overlay!, base!],
      ['convert', '--force', '-O', 'raw', overlay!, overlay!],
      ['convert', '--force', '--backing', overlay!, other!, base!],
    ]) {
      const r = imgdedup(['--json', ...args]);
      expect(r.status, r.stderr).toBe(1);
      expect(JSON.parse(r.stderr)).toMatchObject({ code: 'USAGE' });
    }
    expect(sums()).toEqual(before);
    // Oracle: the sibling overlay still reads the base's bytes.
    qemuIo(sibling!, ['read -P 0x11 0 64k'], 'qcow2');
    expect(readdirSync(d).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('rejects bad options with exit 1', () => {
    expect(imgdedup(['convert', '--cluster-size', '3000', top, join(dir, 'x.qcow2')]).status).toBe(1);
    expect(imgdedup(['convert', '-O', 'raw', '--backing', 'base.qcow2', top, join(dir, 'x.raw')]).status).toBe(1);
    expect(existsSync(join(dir, 'x.qcow2'))).toBe(false);
  });

  it('a source that fails mid-copy leaves neither DST nor a temp file (exit 2, CORRUPT_IMAGE)', () => {
    const bad = join(dir, 'bad.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', bad, '4M');
    qemuIo(bad, ['write -P 0x44 0 4M'], 'qcow2');
    // Point the last L2 entry of the first table past the end of the file: open succeeds, reading fails.
    const fd = openSync(bad, 'r+');
    const hdr = Buffer.alloc(48);
    readSync(fd, hdr, 0, 48, 0);
    const l1 = Number(hdr.readBigUInt64BE(40));
    const l1e = Buffer.alloc(8);
    readSync(fd, l1e, 0, 8, l1);
    const l2 = Number(l1e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE((1n << 63n) | (1n << 40n));
    writeSync(fd, entry, 0, 8, l2 + 63 * 8);
    closeSync(fd);
    const out = join(dir, 'from-bad.qcow2');
    const r = imgdedup(['convert', '--json', bad, out]);
    expect(r.status, r.stderr).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: { file: bad, offset: l2 + 63 * 8 } });
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
