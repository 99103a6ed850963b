/**
 * `imgdedup check` end to end (the built CLI): exit status and JSON against
 * qemu-img check's verdict and counts.
 */
import { describe, expect, it } from 'vitest';
import { appendFileSync, openSync, readSync, writeSync, closeSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { imgdedup, run } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-checkcli-');

function makeImage(name: string): string {
  const f = join(tmp(), name);
  qemuImg('create', '-q', '-f', 'qcow2', f, '8M');
  qemuIo(f, ['write -P 1 0 128k']);
  return f;
}

/** Appends a cluster and gives it refcount 1 in the first refcount block: one leak for qemu-img check. */
function addLeak(f: string): void {
  const size = statSync(f).size;
  appendFileSync(f, Buffer.alloc(65536, 0x11));
  const fd = openSync(f, 'r+');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, 48);
  const reftable = Number(b.readBigUInt64BE(0));
  readSync(fd, b, 0, 8, reftable);
  const refblock = Number(b.readBigUInt64BE(0) & ~0x1ffn);
  const one = Buffer.from([0, 1]);
  writeSync(fd, one, 0, 2, refblock + 2 * (size / 65536));
  closeSync(fd);
}

describe('imgdedup check', () => {
  it('exits 0 and says so for a clean image (qemu-img check agrees)', () => {
    const f = makeImage('clean.qcow2');
    expect(run('qemu-img', ['check', f]).status).toBe(0);
    const r = imgdedup(['check', f]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('No errors were found');
  });

  it('--json prints the result; a leak makes it unclean and exits 2 (qemu-img check: 1 leak)', () => {
    const f = makeImage('leak.qcow2');
    addLeak(f);
    const q = JSON.parse(run('qemu-img', ['check', '--output=json', f]).stdout) as { leaks?: number; 'image-end-offset': number };
    expect(q.leaks).toBe(1);
    const r = imgdedup(['check', '--json', f]);
    expect(r.status).toBe(2);
    const j = JSON.parse(r.stdout) as { clean: boolean; leaks: number; corruptions: number; imageEndOffset: number; errors: { kind: string }[] };
    expect(j).toMatchObject({ clean: false, leaks: 1, corruptions: 0, imageEndOffset: q['image-end-offset'] });
    expect(j.errors.map((e) => e.kind)).toEqual(['leak']);
    const text = imgdedup(['check', f]);
    expect(text.status).toBe(2);
    expect(text.stdout).toContain('1 leaked clusters were found');
  });

  it('a raw image is trivially clean', () => {
    const f = join(tmp(), 'disk.raw');
    writeFileSync(f, Buffer.alloc(1 << 20, 3));
    const r = imgdedup(['check', '--json', f]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'raw', clean: true, imageEndOffset: 1 << 20 });
  });

  it('an image that cannot be checked is an error (exit 2, code in --json stderr); a missing file exits 5', () => {
    const f = join(tmp(), 'notqcow.qcow2');
    writeFileSync(f, Buffer.alloc(4096));
    const r = imgdedup(['check', '--json', '-f', 'qcow2', f]);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({ code: 'CORRUPT_IMAGE', data: { offset: 0, structure: 'qcow2.header.magic' } });
    expect(imgdedup(['check', join(tmp(), 'missing.qcow2')]).status).toBe(5);
  });
});
