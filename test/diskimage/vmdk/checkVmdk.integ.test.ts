/**
 * `check` and `convert` on VMDK through the built CLI, against qemu-img:
 * converted outputs compare equal to their source and pass `qemu-img check`;
 * our check agrees with qemu-img check on clean images and finds planted damage.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../../helpers/tmp.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo } from '../../helpers/qemu.js';
import { imgdedup } from '../../helpers/run.js';
import { checkVmdk } from '../../../src/diskimage/vmdk/checkVmdk.js';

const tmp = useTempDir('imgdedup-vmdkcli-');

describe('convert -O vmdk and check on VMDK', () => {
  it('converts to monolithicSparse, streamOptimized and a delta on a VMDK base; check is clean', () => {
    const dir = tmp();
    const base = join(dir, 'b.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '16M');
    qemuIo(base, ['write -P 0x31 0 4M'], 'vmdk');
    const client = join(dir, 'client.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'b.vmdk', '-F', 'vmdk', client);
    qemuIo(client, ['write -P 0x41 1M 8k', 'write -P 0x42 9M 1M'], 'qcow2');
    for (const [name, args] of [
      ['full.vmdk', ['-O', 'vmdk']],
      ['ship.vmdk', ['-O', 'vmdk', '--subformat', 'streamOptimized']],
      ['delta.vmdk', ['-O', 'vmdk', '--backing', 'b.vmdk', '--cluster-size', '4k']],
    ] as const) {
      const out = join(dir, name);
      const r = imgdedup(['convert', ...args, client, out]);
      expect(r.status, r.stderr).toBe(0);
      expect(qemuCompare(client, out)).toBe(true);
      expect(qemuCheck(out, 'vmdk').clean).toBe(true);
      const c = imgdedup(['check', '--json', out]);
      expect(c.status, c.stderr).toBe(0);
      expect(JSON.parse(c.stdout)).toMatchObject({ format: 'vmdk', clean: true, corruptions: 0 });
    }
    expect(JSON.parse(qemuImg('info', '--output=json', join(dir, 'delta.vmdk')))['backing-filename']).toBe('b.vmdk');
  });

  it('finds a redundant grain table that disagrees and two grains that overlap', async () => {
    const dir = tmp();
    const img = join(dir, 'dmg.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', img, '8M');
    qemuIo(img, ['write -P 0x51 0 256k'], 'vmdk');
    expect((await checkVmdk(img)).clean).toBe(true);
    const b = readFileSync(img);
    const gt = b.readUInt32LE(Number(b.readBigUInt64LE(56)) * 512);
    const rgt = b.readUInt32LE(Number(b.readBigUInt64LE(48)) * 512);
    // Make GTE 1 of the primary point at grain 0's sector: overlap, and the redundant copy now differs.
    b.writeUInt32LE(b.readUInt32LE(gt * 512), gt * 512 + 4);
    const bad = join(dir, 'dmg2.vmdk');
    writeFileSync(bad, b);
    const r = await checkVmdk(bad);
    expect(r.clean).toBe(false);
    expect(r.errors.map((e) => [e.kind, e.structure, e.offset])).toEqual(
      expect.arrayContaining([
        ['invalid_entry', 'vmdk.rgt[0]', rgt * 512],
        ['overlap', 'vmdk.gt', b.readUInt32LE(gt * 512) * 512],
      ]),
    );
  });
});
