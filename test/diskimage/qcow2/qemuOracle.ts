/**
 * Cross-checks of our qcow2 reading and checking against qemu-img (the oracle):
 * content against `qemu-img convert -O raw`, map against `qemu-img map --output=json`,
 * check against `qemu-img check --output=json`. Shared by the qcow2 *.integ tests.
 */
import { expect } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { openChain } from '../../../src/diskimage/openChain.js';
import { map, type MapEntry } from '../../../src/commands/map.js';
import { checkQcow2 } from '../../../src/diskimage/qcow2/checkQcow2.js';
import type { CheckResult } from '../../../src/diskimage/CheckResult.js';
import { qemuImg, qemuMap, type QemuMapEntry } from '../../helpers/qemu.js';
import { run } from '../../helpers/run.js';

/**
 * The map fields we compare, with qemu's view of host-file holes taken out: qemu also asks the
 * host file system (SEEK_HOLE), so it reports raw-file holes and preallocated-but-unwritten
 * clusters as zero ("zero": true with "data": true), and it reports host offsets for
 * unallocated subclusters. Node cannot see holes; what we compare is what the image says.
 */
export function normaliseMap(entries: readonly (QemuMapEntry | MapEntry)[], rawDepths: ReadonlySet<number>): QemuMapEntry[] {
  const out: QemuMapEntry[] = [];
  for (const e of entries) {
    let n: QemuMapEntry = { start: e.start, length: e.length, depth: e.depth, present: e.present, zero: e.zero && !e.data, data: e.data, ...(e.offset !== undefined && e.present ? { offset: e.offset } : {}) };
    if (e.present && rawDepths.has(e.depth)) n = { ...n, zero: false, data: true, offset: e.start };
    const prev = out[out.length - 1];
    if (
      prev &&
      prev.start + prev.length === n.start &&
      prev.depth === n.depth && prev.present === n.present && prev.zero === n.zero && prev.data === n.data &&
      (prev.offset === undefined ? n.offset === undefined : n.offset === prev.offset + prev.length)
    ) {
      prev.length += n.length;
    } else out.push(n);
  }
  return out;
}

/**
 * Asserts that the chain topped by `file` reads as `qemu-img convert -O raw` reads it
 * (byte for byte, in uneven chunks so that reads start and end inside clusters) and
 * maps as `qemu-img map` maps it. `scratch` is a path for qemu's raw output (removed after).
 */
export async function expectReadsAsQemu(file: string, scratch: string): Promise<void> {
  qemuImg('convert', '-O', 'raw', file, scratch);
  const expected = readFileSync(scratch);
  rmSync(scratch);
  const chain = await openChain(file);
  try {
    expect(chain.device.size).toBe(expected.length);
    const chunk = 3 * 65536 + 512;
    for (let pos = 0; pos < chain.device.size; pos += chunk) {
      const len = Math.min(chunk, chain.device.size - pos);
      const got = Buffer.from(await chain.device.read(pos, len));
      const want = expected.subarray(pos, pos + len);
      if (!got.equals(want)) {
        let i = 0;
        while (got[i] === want[i]) i++;
        expect.fail(`${file}: content differs from qemu-img convert first at guest byte ${pos + i} (ours 0x${got[i]!.toString(16)}, qemu 0x${want[i]!.toString(16)})`);
      }
    }
    const rawDepths = new Set(chain.layers.flatMap((l, i) => (l.format === 'raw' ? [i] : [])));
    const ours = (await map({ image: file })).entries;
    expect(normaliseMap(ours, rawDepths)).toEqual(normaliseMap(qemuMap(file), rawDepths));
  } finally {
    await chain.close();
  }
}

export interface QemuCheck {
  readonly status: number;
  readonly corruptions: number;
  readonly leaks: number;
  readonly imageEnd: number | undefined;
}

export function qemuCheckJson(file: string): QemuCheck {
  const r = run('qemu-img', ['check', '--output=json', file]);
  const j = JSON.parse(r.stdout) as { corruptions?: number; leaks?: number; 'image-end-offset'?: number };
  return { status: r.status, corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0, imageEnd: j['image-end-offset'] };
}

/** Asserts that checkQcow2's verdict, counts and image end equal qemu-img check's, and that qemu's verdict is `expectClean`. */
export async function expectCheckAgrees(file: string, expectClean: boolean): Promise<CheckResult> {
  const q = qemuCheckJson(file);
  const r = await checkQcow2(file);
  const summary = JSON.stringify({ ours: { ...r, errors: r.errors.slice(0, 10) }, qemu: q }, null, 1);
  expect(q.status === 0, `qemu verdict\n${summary}`).toBe(expectClean);
  expect(r.clean, summary).toBe(q.status === 0);
  expect(r.corruptions, summary).toBe(q.corruptions);
  expect(r.leaks, summary).toBe(q.leaks);
  if (q.imageEnd !== undefined) expect(r.imageEndOffset, summary).toBe(q.imageEnd);
  return r;
}
