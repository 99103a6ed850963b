/** Small rebase inputs made with the oracles: a base image from a tree, clients edited by tune2fs and debugfs. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { qemuImg } from './qemu.js';

/** DIR/base.raw: an ext4 of `sizeMiB` made by mkfs.ext4 -d from DIR/tree (fixed mkfs time), and DIR/base.qcow2 from it. */
export function makeBase(d: string, sizeMiB: number, mkfsArgs: string[]): void {
  execFileSync('truncate', ['-s', `${sizeMiB}M`, join(d, 'base.raw')]);
  execFileSync('mkfs.ext4', ['-q', '-F', ...mkfsArgs, '-d', join(d, 'tree'), join(d, 'base.raw')], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' } });
  qemuImg('convert', '-O', 'qcow2', join(d, 'base.raw'), join(d, 'base.qcow2'));
}

/** A copy of `from` named `to`, changed by tune2fs (each argument list) and a `debugfs -w` script. Returns `to`. */
export function edited(from: string, to: string, script: string, tune: string[][] = []): string {
  execFileSync('cp', [from, to]);
  for (const args of tune) execFileSync('tune2fs', [...args, to], { stdio: 'ignore' });
  if (script !== '') execFileSync('debugfs', ['-w', '-f', '-', to], { input: script, stdio: ['pipe', 'ignore', 'ignore'] });
  return to;
}

/**
 * DIR/NAME.raw: a copy of DIR/base.raw changed by tune2fs and a debugfs -w script (see
 * edited), then DIR/NAME.qcow2: an overlay on base.qcow2 holding what differs. Returns its path.
 */
export function makeClient(d: string, name: string, script: string, tune: string[][] = []): string {
  const raw = edited(join(d, 'base.raw'), join(d, `${name}.raw`), script, tune);
  qemuImg('convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', raw, join(d, `${name}.qcow2`));
  return join(d, `${name}.qcow2`);
}
