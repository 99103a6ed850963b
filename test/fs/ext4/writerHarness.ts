/**
 * Runs the ext4 writer on a raw image the way `apply` does (a copy-on-write layer over
 * the image, the layer emitted into a new raw file), so tests can check the result with
 * the oracles (strict e2fsck, debugfs) and that the input was not touched.
 */
import { readFileSync } from 'node:fs';
import { CowDevice } from '../../../src/diskimage/cow/CowDevice.js';
import { openChain } from '../../../src/diskimage/openChain.js';
import { RawWriter } from '../../../src/diskimage/raw/RawWriter.js';
import { Ext4Writer, type Ext4WriterOptions, type WriteReport } from '../../../src/fs/ext4/Ext4Writer.js';
import { debugfsBatch } from './debugfsOracle.js';
import { spawnSync } from 'node:child_process';

/** The time every writer test gives changed objects (reproducible stat output). */
export const WRITER_NOW = { sec: 1_700_000_000, nsec: 0 };

/**
 * Opens `image` for writing in a copy-on-write layer, runs `ops`, commits, and writes the
 * result to `out` (a raw image). Returns the writer's report.
 */
export async function writeImage(image: string, out: string, ops: (w: Ext4Writer, device: CowDevice) => Promise<void>, options: Partial<Ext4WriterOptions> = {}): Promise<WriteReport> {
  const chain = await openChain(image);
  const cow = new CowDevice(chain.device);
  try {
    const w = await Ext4Writer.open(cow, { file: image, now: WRITER_NOW, ...options });
    await ops(w, cow);
    const report = await w.commit();
    const writer = await RawWriter.create(out, { size: cow.size, unitSize: 4096 });
    await cow.emitTo(writer);
    await writer.commit();
    return report;
  } finally {
    await cow.close();
    await chain.close();
  }
}

/** A file's content as debugfs reads it (`dump`). */
export function debugfsCat(image: string, path: string, tmpFile: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `dump "${path}" ${tmpFile}`, image], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return readFileSync(tmpFile);
}

/** `debugfs ls -p` names of a directory (without . and .., and without the empty records it lists with inode 0). */
export function debugfsNames(image: string, dir: string): string[] {
  const [out] = debugfsBatch(image, [`ls -p "${dir}"`]);
  return out!
    .split('\n')
    .map((l) => l.split('/'))
    .filter((f) => f.length >= 6 && f[1] !== '0')
    .map((f) => f[5]!)
    .filter((n) => n !== '.' && n !== '..');
}

/** Inode numbers that own `blocks` (debugfs icheck). */
export function debugfsIcheck(image: string, blocks: readonly number[]): Map<number, number | undefined> {
  const out = new Map<number, number | undefined>();
  if (blocks.length === 0) return out;
  const [text] = debugfsBatch(image, [`icheck ${blocks.join(' ')}`]);
  for (const line of text!.split('\n').slice(1)) {
    const m = /^(\d+)\s+(\d+|<block not found>)/.exec(line.trim());
    if (m) out.set(Number(m[1]), m[2] === '<block not found>' ? undefined : Number(m[2]));
  }
  return out;
}
