/**
 * `imgdedup diff A B`: the files added, removed and modified between two disk images,
 * filesystem by filesystem, with the changed blocks of each; other regions as changed
 * byte ranges. When B is an overlay on A, only B's own layers' allocation is examined.
 */
import { realpath } from 'node:fs/promises';
import { fileIsDisk, openChain, type ImageChain } from '../diskimage/openChain.js';
import { diffDisks, type DiskDiff } from '../blockdiff/diffDisk.js';
import type { DiffSide } from '../blockdiff/changedRanges.js';
import type { PathEntry } from '../blockdiff/diffExt4.js';
import { compareBytes } from '../fs/ext4/names.js';
import { nameFields, quoteName, quoteSpaced } from '../ui/quoteName.js';
import { wrapIoError } from '../errors.js';

export interface DiffOptions {
  readonly a: string;
  readonly b: string;
  /** Compare whole trees even when B is an overlay on A. */
  readonly fullTree?: boolean;
}

export type DiffResult = DiskDiff;

/** A chain as one side of a diff (its layers identified by their real paths). */
export async function sideOf(name: string, chain: ImageChain): Promise<DiffSide> {
  const layers = await Promise.all(
    chain.layers.map(async (l) => ({ id: await realpath(l.path).catch((err: unknown) => Promise.reject(wrapIoError(err, l.path, 'open'))), device: l })),
  );
  return { name, device: chain.device, layers, fileIsDisk: fileIsDisk(chain) };
}

/**
 * Opens both chains and diffs them. Throws what openChain, the partition and ext4 readers
 * throw (exit code 2 for bad input, 5 for I/O).
 */
export async function diff(options: DiffOptions): Promise<DiffResult> {
  const ca = await openChain(options.a);
  try {
    const cb = await openChain(options.b);
    try {
      const r = await diffDisks(await sideOf(options.a, ca), await sideOf(options.b, cb), options.fullTree ? { fullTree: true } : {});
      return { ...r, warnings: [...r.warnings, ...dirLinkWarnings(r)] };
    } finally {
      await cb.close();
    }
  } finally {
    await ca.close();
  }
}

/** A warning per directory hard link or loop (FsDiff.dirLinks), worded as ls -R words them. */
function dirLinkWarnings(r: DiskDiff): string[] {
  const out: string[] = [];
  for (const fs of r.filesystems) {
    for (const l of fs.dirLinks) {
      const name = l.side === 'a' ? r.a : r.b;
      const file = fs.partition !== null ? `${name}:${fs.partition}` : name;
      const dir = l.dirPath !== null ? quoteName(l.dirPath) : "a directory its '..' entries do not lead to from the root";
      out.push(`${file}: ${quoteName(l.path)} is directory inode ${l.ino}, which is ${dir} (a directory hard link or loop: corrupt); not descended into`);
    }
  }
  return out;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * The result as JSON: every path in display form (`path`: its UTF-8 text, or quoted with
 * escapes), with `pathBytes` (base64 of the exact bytes) exactly when `path` is quoted.
 */
export function diffJson(r: DiffResult): unknown {
  const entry = <T extends PathEntry>(e: T): Omit<T, 'path'> & { path: string; pathBytes?: string } => ({ ...e, ...nameFields('path', e.path) });
  return {
    ...r,
    filesystems: r.filesystems.map((fs) => ({
      ...fs,
      added: fs.added.map(entry),
      removed: fs.removed.map(entry),
      modified: fs.modified.map(entry),
      dirLinks: fs.dirLinks.map((l) => ({ ...l, ...nameFields('path', l.path), ...(l.dirPath !== null ? nameFields('dirPath', l.dirPath) : { dirPath: null }) })),
    })),
  };
}

/**
 * `A path`, `D path`, `M path (kinds)` lines per filesystem in path byte order (paths quoted
 * as ls quotes names), then other changed regions and a summary. Warnings (`r.warnings`)
 * are not part of it: the CLI prints them on stderr.
 */
export function formatDiff(r: DiffResult): string {
  const lines: string[] = [];
  const multi = r.filesystems.length + r.raw.length > 1 || r.scheme !== 'none';
  for (const fs of r.filesystems) {
    if (multi) lines.push(`# partition ${fs.partition ?? '-'} (${fs.fsType}): ${fs.added.length} added, ${fs.removed.length} removed, ${fs.modified.length} modified; ${fs.changedBytes} bytes changed`);
    const all = [
      ...fs.added.map((e) => ({ path: e.path, line: `A ${quoteSpaced(quoteName(e.path))}` })),
      ...fs.removed.map((e) => ({ path: e.path, line: `D ${quoteSpaced(quoteName(e.path))}` })),
      ...fs.modified.map((e) => ({ path: e.path, line: `M ${quoteSpaced(quoteName(e.path))} (${e.changes.join(', ')})` })),
    ].sort((x, y) => compareBytes(x.path, y.path) || (x.line < y.line ? -1 : 1));
    for (const e of all) lines.push(e.line);
    // Changed bytes in no listed path: say where they are, so that the parts add up to the total.
    const runs = (rs: ReadonlyArray<readonly [number, number]>): string => rs.map(([s, c]) => `${s}+${c}`).join(' ');
    const kinds = [
      ['group metadata or journal', fs.changedBytesIn.metadata, fs.metadataBlocks],
      ['free blocks', fs.changedBytesIn.free, fs.freeBlocks],
      ['other blocks in use (entries of a changed directory, unwritten extents, unowned)', fs.changedBytesIn.other, fs.otherBlocks],
    ] as const;
    for (const [what, bytes, blocks] of kinds) if (bytes > 0) lines.push(`~ ${bytes} bytes changed in ${what}: blocks ${runs(blocks)}`);
    if (fs.unattributedBlocks.length > 0) lines.push(`! ${fs.unattributedBlocks.length} changed block run(s) owned by no inode: ${fs.unattributedBlocks.map(([s, c]) => `${s}+${c}`).join(' ')}`);
  }
  for (const raw of r.raw) {
    if (raw.changedRanges.length === 0) continue;
    const where = raw.partition !== null ? `partition ${raw.partition}` : `bytes ${hex(raw.startBytes)}..${hex(raw.startBytes + raw.lengthBytes)}`;
    lines.push(`# ${where} (${raw.reason}): ${raw.changedBytes} bytes changed in ${raw.changedRanges.length} range(s)`);
    for (const [o, l] of raw.changedRanges) lines.push(`R ${hex(o)} +${hex(l)}`);
  }
  const files = r.filesystems.reduce((n, f) => n + f.added.length + f.removed.length + f.modified.length, 0);
  const read = r.mode === 'overlay' ? `${r.bytesCompared} bytes stored in B's own layers compared` : `${r.bytesCompared} bytes compared`;
  lines.push(`${files} path(s) differ; ${r.changedBytes} bytes differ (${r.mode}: ${read}), ${r.seconds.toFixed(2)} s`);
  return lines.join('\n');
}
