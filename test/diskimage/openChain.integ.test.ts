/** Opening backing chains: relative names, loops, missing files, depth limits. */
import { describe, expect, test } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openChain } from '../../src/diskimage/openChain.js';
import { qemuImg } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';
import { expectImgError } from '../helpers/expectImgError.js';

const tmp = useTempDir();

function dir(name: string): string {
  const d = join(tmp(), name);
  mkdirSync(d, { recursive: true });
  return d;
}

/** Rewrites the backing file name stored in a qcow2 header (same length or shorter). */
function patchBackingName(file: string, name: string): void {
  const b = readFileSync(file);
  const off = Number(b.readBigUInt64BE(8));
  b.fill(0, off, off + b.readUInt32BE(16));
  b.write(name, off);
  b.writeUInt32BE(Buffer.byteLength(name), 16);
  writeFileSync(file, b);
}

describe('openChain', () => {
  test('below: overlays on an open base share its layers (same objects), read through them, and leave them open when closed', async () => {
    const d = dir('below');
    qemuImg('create', '-q', '-f', 'qcow2', join(d, 'base.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'mid.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', join(d, 'vm1.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'vm2.qcow2'));
    const { qemuIo } = await import('../helpers/qemu.js');
    qemuIo(join(d, 'base.qcow2'), ['write -P 0x11 0 1M'], 'qcow2');
    qemuIo(join(d, 'vm1.qcow2'), ['write -P 0x22 0 64k'], 'qcow2');
    const base = await openChain(join(d, 'base.qcow2'));
    const vm1 = await openChain(join(d, 'vm1.qcow2'), { below: base });
    const vm2 = await openChain(join(d, 'vm2.qcow2'), { below: base });
    expect(vm1.layers.map((l) => l.path)).toEqual([join(d, 'vm1.qcow2'), join(d, 'mid.qcow2'), join(d, 'base.qcow2')]);
    expect(vm1.layers[2]).toBe(base.layers[0]);
    expect(vm2.layers[1]).toBe(base.layers[0]);
    expect((await vm1.device.read(0, 4))[0]).toBe(0x22);
    expect((await vm1.device.read(65536, 4))[0]).toBe(0x11);
    await vm1.close();
    await vm2.close();
    // The base is still open and readable after its overlays are closed.
    expect((await base.device.read(0, 4))[0]).toBe(0x11);
    await base.close();
  });

  test('a loop in the chain is refused, naming the file and the backing name offset', async () => {
    const d = dir('loop');
    qemuImg('create', '-f', 'qcow2', join(d, 'a.qcow2'), '1M');
    qemuImg('create', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', join(d, 'b.qcow2'), '1M');
    qemuImg('create', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', join(d, 'c.qcow2'), '1M');
    // a's header has no backing name; give it one by recreating it with a placeholder then patching.
    qemuImg('create', '-f', 'qcow2', '-b', 'x.qcow2', '-F', 'qcow2', '-u', join(d, 'a.qcow2'), '1M');
    patchBackingName(join(d, 'a.qcow2'), 'c.qcow2');
    const e = await expectImgError(() => openChain(join(d, 'c.qcow2')), 'BACKING_CHAIN_LOOP', { file: join(d, 'a.qcow2'), structure: 'qcow2.backing_file' });
    expect(e.data.offset).toBe(Number(readFileSync(join(d, 'a.qcow2')).readBigUInt64BE(8)));
  });

  test('a self-referencing image is a loop', async () => {
    const d = dir('self');
    qemuImg('create', '-f', 'qcow2', '-b', 'x.qcow2', '-F', 'qcow2', '-u', join(d, 's.qcow2'), '1M');
    patchBackingName(join(d, 's.qcow2'), 's.qcow2');
    await expectImgError(() => openChain(join(d, 's.qcow2')), 'BACKING_CHAIN_LOOP');
  });

  test('a missing backing file is named, with where its name is stored', async () => {
    const d = dir('missing');
    qemuImg('create', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2', '-u', join(d, 'top.qcow2'), '1M');
    await expectImgError(() => openChain(join(d, 'top.qcow2')), 'BACKING_FILE_MISSING', { file: join(d, 'top.qcow2'), structure: 'qcow2.backing_file', backing: join(d, 'gone.qcow2') });
  });

  test('chains deeper than the limit are refused', async () => {
    const d = dir('deep');
    qemuImg('create', '-f', 'qcow2', join(d, 'l0.qcow2'), '1M');
    for (let i = 1; i <= 4; i++) qemuImg('create', '-f', 'qcow2', '-b', `l${i - 1}.qcow2`, '-F', 'qcow2', join(d, `l${i}.qcow2`), '1M');
    const ok = await openChain(join(d, 'l4.qcow2'), { maxDepth: 5 });
    expect(ok.layers).toHaveLength(5);
    await ok.close();
    await expectImgError(() => openChain(join(d, 'l4.qcow2'), { maxDepth: 4 }), 'BACKING_CHAIN_TOO_DEEP', { file: join(d, 'l1.qcow2') });
  });

  test('protocol backing names are refused', async () => {
    const d = dir('proto');
    qemuImg('create', '-f', 'qcow2', '-b', 'nbd://host/export', '-F', 'raw', '-u', join(d, 'top.qcow2'), '1M');
    await expectImgError(() => openChain(join(d, 'top.qcow2')), 'UNSUPPORTED_FORMAT', { structure: 'qcow2.backing_file' });
  });

  test('a recorded raw backing format is honoured even if the file looks like qcow2', async () => {
    const d = dir('rawfmt');
    qemuImg('create', '-f', 'qcow2', join(d, 'looks-like-qcow2.img'), '1M');
    qemuImg('create', '-f', 'qcow2', '-b', 'looks-like-qcow2.img', '-F', 'raw', join(d, 'top.qcow2'), '1M');
    const chain = await openChain(join(d, 'top.qcow2'));
    expect(chain.layers.map((l) => l.format)).toEqual(['qcow2', 'raw']);
    // Through the raw layer the guest sees the qcow2 header bytes.
    expect(Buffer.from(await chain.device.read(0, 4)).toString('latin1')).toBe('QFI\xfb');
    await chain.close();
  });

  test('a missing image is an I/O error naming it', async () => {
    await expectImgError(() => openChain(join(tmp(), 'nope.qcow2')), 'IO', { file: join(tmp(), 'nope.qcow2') });
  });
});
