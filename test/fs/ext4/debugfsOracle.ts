/**
 * debugfs and dumpe2fs as oracles: batched command runs and parsers of their output
 * (`stat`, `ls -p`, `blocks`, `dump_extents`, `ea_list`, dumpe2fs free ranges).
 */
import { spawnSync } from 'node:child_process';

/** Runs many debugfs commands in one process; returns each command's output. */
export function debugfsBatch(image: string, commands: readonly string[]): string[] {
  if (commands.length === 0) return [];
  const r = spawnSync('debugfs', ['-f', '-', image], { input: commands.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`debugfs failed: ${r.stderr}`);
  const parts = r.stdout.split(/^debugfs: /m).slice(1);
  if (parts.length !== commands.length) throw new Error(`debugfs: ${commands.length} commands, ${parts.length} outputs`);
  return parts.map((p) => p.slice(p.indexOf('\n') + 1));
}

export interface DebugfsTime {
  sec: number;
  nsec: number;
}

export interface DebugfsStat {
  ino: number;
  type: string;
  mode: number;
  flags: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  blockcount: number;
  fileAcl: number;
  ctime: DebugfsTime;
  atime: DebugfsTime;
  mtime: DebugfsTime;
  crtime?: DebugfsTime;
  xattrs: Array<{ name: string; length: number; value: string }>;
  fastLink?: string;
  device?: { major: number; minor: number };
}

function time(text: string, name: string): DebugfsTime | undefined {
  const m = new RegExp(`^\\s*${name}: 0x([0-9a-f]{8})(?::([0-9a-f]{8}))?`, 'm').exec(text);
  if (!m) return undefined;
  const lo = parseInt(m[1]!, 16) | 0;
  const extra = m[2] !== undefined ? parseInt(m[2], 16) : 0;
  return { sec: lo + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

/** Parses `debugfs stat` output. */
export function parseStat(text: string): DebugfsStat {
  const num = (re: RegExp): number => {
    const m = re.exec(text);
    if (!m) throw new Error(`debugfs stat: no ${re} in\n${text}`);
    return Number(m[1]);
  };
  const xattrs: DebugfsStat['xattrs'] = [];
  const xi = text.indexOf('Extended attributes:\n');
  if (xi >= 0) {
    for (const line of text.slice(xi).split('\n').slice(1)) {
      const m = /^ {2}(\S+) \((\d+)\)(?: = (.*))?$/.exec(line);
      if (!m) break;
      xattrs.push({ name: m[1]!, length: Number(m[2]), value: m[3] ?? '' });
    }
  }
  const dev = /Device major\/minor number: (\d+):(\d+)/.exec(text);
  const fast = /Fast link dest: "((?:.|\n)*)"\s*$/.exec(text);
  const mode = /Mode: +(\d+)/.exec(text);
  return {
    ino: num(/Inode: (\d+)/),
    type: /Type: (\S+)/.exec(text)![1]!,
    mode: parseInt(mode![1]!, 8),
    flags: parseInt(/Flags: 0x([0-9a-f]+)/.exec(text)![1]!, 16),
    // Printed as signed 32-bit numbers: ids of 2^31 and more come out negative.
    uid: num(/User: +(-?\d+)/) >>> 0,
    gid: num(/Group: +(-?\d+)/) >>> 0,
    size: num(/Size: (\d+)\n/),
    links: num(/Links: (\d+)/),
    blockcount: num(/Blockcount: (\d+)/),
    fileAcl: num(/File ACL: (\d+)/),
    ctime: time(text, 'ctime')!,
    atime: time(text, 'atime')!,
    mtime: time(text, 'mtime')!,
    ...(time(text, 'crtime') ? { crtime: time(text, 'crtime')! } : {}),
    xattrs,
    ...(fast ? { fastLink: fast[1]! } : {}),
    ...(dev ? { device: { major: Number(dev[1]), minor: Number(dev[2]) } } : {}),
  };
}

export interface LsEntry {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  name: string;
  size: string;
}

/** Parses `debugfs ls -p` output: /ino/mode/uid/gid/name/size/. */
export function parseLsP(text: string): LsEntry[] {
  const out: LsEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('/')) continue;
    // debugfs prints owners as signed 32-bit numbers: ids of 2^31 and more come out negative.
    const m = /^\/(\d+)\/(\d+)\/(-?\d+)\/(-?\d+)\/(.*)\/(\d*)\/$/.exec(line);
    if (!m) throw new Error(`debugfs ls -p: cannot parse ${line}`);
    if (Number(m[1]) === 0) continue; // debugfs lists unused records too
    out.push({ ino: Number(m[1]), mode: parseInt(m[2]!, 8), uid: Number(m[3]) >>> 0, gid: Number(m[4]) >>> 0, name: m[5]!, size: m[6]! });
  }
  return out;
}

/** Parses `debugfs blocks` output: the data blocks in logical order. */
export function parseBlocks(text: string): number[] {
  return text.trim() === '' ? [] : text.trim().split(/\s+/).map(Number);
}

export interface DumpExtents {
  leaves: Array<{ lblk: number; pblk: number; len: number; unwritten: boolean }>;
  /** Blocks of index and leaf nodes below the root. */
  nodes: number[];
}

/** Parses `debugfs dump_extents` output. */
export function parseDumpExtents(text: string): DumpExtents {
  const leaves: DumpExtents['leaves'] = [];
  const nodes: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)(?:\s*-\s*(\d+))?\s+(\d+)\s*(\S*)/.exec(line);
    if (!m) continue;
    const level = Number(m[1]);
    const max = Number(m[2]);
    if (level < max) {
      nodes.push(Number(m[5]));
    } else {
      leaves.push({ lblk: Number(m[3]), pblk: Number(m[5]), len: Number(m[7]), unwritten: m[8] === 'Uninit' });
    }
  }
  return { leaves, nodes };
}

/** Free block runs [start, length] from dumpe2fs, merged across groups. */
export function dumpe2fsFreeRuns(image: string): Array<[number, number]> {
  const r = spawnSync('dumpe2fs', [image], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const runs: Array<[number, number]> = [];
  for (const m of r.stdout.matchAll(/^ {2}Free blocks: (.*)$/gm)) {
    for (const part of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [a, b] = part.split('-').map(Number);
      const start = a!;
      const len = (b ?? a!) - a! + 1;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === start) last[1] += len;
      else runs.push([start, len]);
    }
  }
  return runs;
}

/** Merges adjacent runs. */
export function mergeRuns(runs: Iterable<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const [s, l] of runs) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === s) last[1] += l;
    else out.push([s, l]);
  }
  return out;
}

/** The owning inode of each block per `debugfs icheck` (undefined: no owner); one debugfs process. */
export function debugfsOwners(image: string, blocks: readonly number[]): Map<number, number | undefined> {
  const m = new Map<number, number | undefined>();
  const commands: string[] = [];
  for (let i = 0; i < blocks.length; i += 500) commands.push(`icheck ${blocks.slice(i, i + 500).join(' ')}`);
  for (const out of debugfsBatch(image, commands)) {
    for (const line of out.split('\n').slice(1)) {
      const mm = /^(\d+)\s+(\d+|<block not found>)/.exec(line.trim());
      if (mm) m.set(Number(mm[1]), mm[2]!.startsWith('<') ? undefined : Number(mm[2]));
    }
  }
  return m;
}
