/** qemu-img as an oracle. */
import { sh, run } from './run.js';

export function qemuImg(...args: string[]): string {
  return sh('qemu-img', args);
}

/** Runs qemu-io commands on an image (e.g. 'write -P 1 0 64k'). */
export function qemuIo(file: string, commands: readonly string[], format?: string): void {
  sh('qemu-io', [...(format ? ['-f', format] : []), ...commands.flatMap((c) => ['-c', c]), file]);
}

export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

export function qemuMap(file: string): QemuMapEntry[] {
  return JSON.parse(sh('qemu-img', ['map', '--output=json', file])) as QemuMapEntry[];
}

/** `qemu-img check` result: exit 0 and no errors or leaks reported. */
export function qemuCheck(file: string, format?: string): { clean: boolean; output: string } {
  const r = run('qemu-img', ['check', ...(format ? ['-f', format] : []), '--output=json', file]);
  if (r.status !== 0) return { clean: false, output: r.stdout + r.stderr };
  const j = JSON.parse(r.stdout) as { 'check-errors'?: number; leaks?: number; corruptions?: number };
  return { clean: (j['check-errors'] ?? 0) === 0 && (j.leaks ?? 0) === 0 && (j.corruptions ?? 0) === 0, output: r.stdout };
}

/** `qemu-img compare` of two images: true if the guest content is identical. */
export function qemuCompare(a: string, b: string): boolean {
  const r = run('qemu-img', ['compare', a, b]);
  if (r.status > 1) throw new Error(`qemu-img compare failed: ${r.stderr}`);
  return r.status === 0;
}
