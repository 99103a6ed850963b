/**
 * The VMDK writers against qemu-img: what we write reads back through qemu-img as
 * the content we meant (`qemu-img compare` against the source, or byte comparison
 * with `qemu-img convert -O raw`), and `qemu-img check` finds no errors.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../../helpers/tmp.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuMap } from '../../helpers/qemu.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import { openImage } from '../../../src/diskimage/openImage.js';
import { VmdkImage } from '../../../src/diskimage/vmdk/VmdkImage.js';
import { SparseVmdkWriter, writeVmdk } from '../../../src/diskimage/vmdk/VmdkWriter.js';

const tmp = useTempDir('imgdedup-vmdkw-');
const MiB = 1024 * 1024;

let oracleRuns = 0;

function qemuRaw(image: string): Buffer {
  const out = join(tmp(), `oracle-${++oracleRuns}.raw`);
  qemuImg('convert', '-O', 'raw', image, out);
  return readFileSync(out);
}
function qemuInfo(image: string): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '--output=json', image)) as Record<string, unknown>;
}
/** Guest bytes the top layer stores as data, per qemu. */
function qemuDataBytes(image: string): number {
  return qemuMap(image)
    .filter((e) => e.depth === 0 && e.data)
    .reduce((n, e) => n + e.length, 0);
}

function makeSource(name: string, format: 'raw' | 'qcow2' = 'qcow2'): string {
  const src = join(tmp(), name);
  qemuImg('create', '-q', '-f', format, src, '32M');
  qemuIo(src, ['write -P 0x11 0 64k', 'write -P 0x22 100k 300k', 'write -P 0x33 3M 2M', 'write -P 0x44 31M 1M', 'write -z 6M 1M'], format);
  return src;
}

describe('writeVmdk', () => {
  it.each([
    { subformat: 'monolithicSparse' as const, grain: 128 },
    { subformat: 'monolithicSparse' as const, grain: 8 },
    { subformat: 'streamOptimized' as const, grain: 128 },
  ])('$subformat (grain $grain sectors) from a qcow2 reads back through qemu-img as the source', async ({ subformat, grain }) => {
    const src = makeSource(`src-${subformat}-${grain}.qcow2`);
    const out = join(tmp(), `out-${subformat}-${grain}.vmdk`);
    const chain = await openChain(src);
    try {
      const r = await writeVmdk(chain.device, out, { subformat, grainSizeSectors: grain, adapterType: 'lsilogic', hwVersion: 6 });
      expect(r.grainsWritten).toBeGreaterThan(0);
    } finally {
      await chain.close();
    }
    expect(qemuCompare(src, out)).toBe(true);
    expect(qemuCheck(out, 'vmdk').clean).toBe(true);
    const info = qemuInfo(out);
    expect(info['format']).toBe('vmdk');
    expect(info['virtual-size']).toBe(32 * MiB);
    const spec = (info['format-specific'] as { data: { 'create-type': string; extents: { 'cluster-size': number; compressed?: boolean }[] } }).data;
    expect(spec['create-type']).toBe(subformat);
    expect(spec.extents[0]!['cluster-size']).toBe(grain * 512);
    // Zero grains are skipped: qemu sees exactly the written data (64k+300k+2M+1M, grain-rounded).
    const dataBytes = qemuDataBytes(out);
    expect(dataBytes).toBeGreaterThanOrEqual(64 * 1024 + 300 * 1024 + 3 * MiB);
    expect(dataBytes).toBeLessThanOrEqual(64 * 1024 + 300 * 1024 + 3 * MiB + 4 * grain * 512);
    // The descriptor is as VMware writes it.
    const text = readFileSync(out).subarray(512, 512 * 21).toString('latin1');
    expect(text).toMatch(/^# Disk DescriptorFile\nversion=1\nCID=[0-9a-f]{8}\nparentCID=ffffffff\n/);
    for (const key of ['ddb.adapterType = "lsilogic"', 'ddb.virtualHWVersion = "6"', 'ddb.geometry.cylinders', 'ddb.geometry.heads = "255"', 'ddb.geometry.sectors = "63"', 'ddb.uuid', 'ddb.longContentID']) {
      expect(text).toContain(key);
    }
  });

  it('writes a delta child holding only the grains that differ from its parent', async () => {
    const dir = tmp();
    const base = join(dir, 'dbase.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '32M');
    qemuIo(base, ['write -P 0xa1 0 8M', 'write -P 0xa2 20M 4M'], 'vmdk');
    // The client: a qcow2 overlay on the base with its own changes, including zeros over base data.
    const client = join(dir, 'client.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'vmdk', client);
    qemuIo(client, ['write -P 0xc1 1M 4k', 'write -P 0xc2 12M 64k', 'write -z 21M 8k', 'write -P 0xa1 2M 64k'], 'qcow2');
    const child = join(dir, 'delta.vmdk');
    const parent = await VmdkImage.open(base);
    const clientChain = await openChain(client);
    const parentChain = await openChain(base);
    try {
      const r = await writeVmdk(clientChain.device, child, { grainSizeSectors: 8, parent: { fileNameHint: 'dbase.vmdk', cid: parent.cid, device: parentChain.device } });
      // 1 grain at 1M, 16 at 12M, 2 zero grains at 21M; the 0xa1 rewrite equals the base.
      expect(r.grainsWritten).toBe(1 + 16 + 2);
    } finally {
      await parent.close();
      await clientChain.close();
      await parentChain.close();
    }
    expect(qemuCompare(client, child)).toBe(true);
    expect(qemuCheck(child, 'vmdk').clean).toBe(true);
    const info = qemuInfo(child);
    expect(info['backing-filename']).toBe('dbase.vmdk');
    // The zeros over base data are zeroed grain-table entries, not stored grains.
    expect(qemuDataBytes(child)).toBe(17 * 4096);
    const zeroed = qemuMap(child).filter((e) => e.depth === 0 && !e.data && e.zero);
    expect(zeroed.reduce((n, e) => n + e.length, 0)).toBe(2 * 4096);
    // Our own chain opener accepts it (parentCID matches).
    const chain = await openChain(child);
    await chain.close();
  });

  it('SparseVmdkWriter takes grains in any order and rewrites in place', async () => {
    const out = join(tmp(), 'anyorder.vmdk');
    const w = await SparseVmdkWriter.create(out, 16 * MiB, { grainSizeSectors: 8 });
    const expected = Buffer.alloc(16 * MiB);
    const order = [4095, 0, 2048, 513, 512, 7, 1000, 7];
    for (const [i, g] of order.entries()) {
      const data = Buffer.alloc(4096, (i * 37 + 1) & 0xff);
      await w.writeGrain(g, data);
      data.copy(expected, g * 4096);
    }
    await w.commit();
    expect(qemuRaw(out).equals(expected)).toBe(true);
    expect(qemuCheck(out, 'vmdk').clean).toBe(true);
    // 7 distinct grains stored, one GT copy pair per touched table.
    expect(qemuMap(out).filter((e) => e.data).reduce((n, e) => n + e.length, 0)).toBe(7 * 4096);
    const img = await openImage(out);
    await img.close();
  });

  it('zeroed-grain deltas are read by qemu as zeros over the parent', async () => {
    const dir = tmp();
    const base = join(dir, 'zbase.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '8M');
    qemuIo(base, ['write -P 0x77 0 8M'], 'vmdk');
    const parent = await VmdkImage.open(base);
    const out = join(dir, 'zchild.vmdk');
    const w = await SparseVmdkWriter.create(out, 8 * MiB, { zeroedGrains: true, parent: { fileNameHint: 'zbase.vmdk', cid: parent.cid } });
    await parent.close();
    w.writeZeroGrain(3);
    await w.writeGrain(5, Buffer.alloc(64 * 1024, 0x99));
    await w.commit();
    const expected = Buffer.alloc(8 * MiB, 0x77);
    expected.fill(0, 3 * 65536, 4 * 65536);
    expected.fill(0x99, 5 * 65536, 6 * 65536);
    expect(qemuRaw(out).equals(expected)).toBe(true);
  });
});
