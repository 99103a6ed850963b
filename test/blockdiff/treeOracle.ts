/**
 * The oracle for `diff`: both filesystems dumped with `debugfs rdump` and compared path by
 * path (type, content bytes, symlink target), with mode, uid, gid, links and xattrs from
 * `debugfs stat` (rdump does not keep owners). Independent of our ext4 reader.
 */
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../helpers/run.js';
import { debugfsBatch, parseStat } from '../fs/ext4/debugfsOracle.js';

export interface ExpectedDiff {
  added: string[];
  removed: string[];
  /** path -> sorted change kinds */
  modified: Record<string, string[]>;
}

interface Node {
  type: 'file' | 'dir' | 'symlink' | 'other';
  content?: Buffer;
  target?: string;
}

function walk(root: string, rel = '', out = new Map<string, Node>()): Map<string, Node> {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = `${rel}/${name}`;
    const st = lstatSync(join(root, p));
    if (st.isDirectory()) {
      out.set(p, { type: 'dir' });
      walk(root, p, out);
    } else if (st.isSymbolicLink()) out.set(p, { type: 'symlink', target: readlinkSync(join(root, p)) });
    else if (st.isFile()) out.set(p, { type: 'file', content: readFileSync(join(root, p)) });
    else out.set(p, { type: 'other' });
  }
  return out;
}

/** rdump of a raw ext4 image into `dir`; returns path -> node ('/' excluded). */
export function dumpTree(image: string, dir: string): Map<string, Node> {
  mkdirSync(dir, { recursive: true });
  sh('debugfs', ['-R', `rdump / ${dir}`, image]);
  return walk(dir);
}

function stats(image: string, paths: readonly string[]): Map<string, ReturnType<typeof parseStat>> {
  const outs = debugfsBatch(image, paths.map((p) => `stat "${p}"`));
  return new Map(paths.map((p, i) => [p, parseStat(outs[i]!)]));
}

/**
 * The expected file-level diff of two raw ext4 images (the root directory itself and
 * directory sizes/link counts excluded, as documented for `diff`). `workDir` receives the dumps.
 */
export function expectedDiff(imageA: string, imageB: string, workDir: string): ExpectedDiff {
  const ta = dumpTree(imageA, join(workDir, 'dumpA'));
  const tb = dumpTree(imageB, join(workDir, 'dumpB'));
  const added = [...tb.keys()].filter((p) => !ta.has(p)).sort();
  const removed = [...ta.keys()].filter((p) => !tb.has(p)).sort();
  const common = [...ta.keys()].filter((p) => tb.has(p)).sort();
  const sa = stats(imageA, common);
  const sb = stats(imageB, common);
  const modified: Record<string, string[]> = {};
  for (const p of common) {
    const a = ta.get(p)!;
    const b = tb.get(p)!;
    const x = sa.get(p)!;
    const y = sb.get(p)!;
    const kinds: string[] = [];
    if (a.type !== b.type) kinds.push('type');
    if ((x.mode & 0o7777) !== (y.mode & 0o7777)) kinds.push('mode');
    if (x.uid !== y.uid) kinds.push('uid');
    if (x.gid !== y.gid) kinds.push('gid');
    // chattr's flags (Linux ext4.h: secrm, unrm, sync, immutable, append, nodump, noatime, dirsync, topdir).
    if ((x.flags & 0x300fb) !== (y.flags & 0x300fb)) kinds.push('flags');
    if (a.type === b.type && a.type !== 'dir') {
      if (a.type === 'file' && a.content!.length !== b.content!.length) kinds.push('size');
      if (x.links !== y.links) kinds.push('links');
    }
    const xs = (s: typeof x): string => JSON.stringify(s.xattrs.filter((e) => e.name !== 'system.data').map((e) => `${e.name}=${e.value}`).sort());
    if (xs(x) !== xs(y)) kinds.push('xattrs');
    if (a.type === 'symlink' && b.type === 'symlink' && a.target !== b.target) kinds.push('target');
    if (a.type === 'file' && b.type === 'file' && !a.content!.equals(b.content!)) kinds.push('content');
    if (kinds.length > 0) modified[p] = kinds.sort();
  }
  return { added, removed, modified };
}
