/**
 * `imgdedup apply BASE UPDATES -o OUT`: applies an update (a directory tree with OCI
 * whiteouts, or tar layers) to the root ext4 filesystem of BASE and writes OUT, a
 * complete image in BASE's format or, with `overlay`, an overlay on BASE holding only
 * the blocks that changed. BASE is never written: the writer works in a copy-on-write
 * layer over it, and OUT is emitted from that layer, atomically.
 */
import { basename, dirname, relative, resolve } from 'node:path';
import { checkOutputPath } from '../diskimage/AtomicOutput.js';
import type { BlockDevice } from '../diskimage/BlockDevice.js';
import { CowDevice } from '../diskimage/cow/CowDevice.js';
import { detectFilesystem, isExtFilesystem } from '../diskimage/detectFilesystem.js';
import type { ImageWriter } from '../diskimage/ImageWriter.js';
import { fileIsDisk, layerAtPath, openChain, type ImageChain } from '../diskimage/openChain.js';
import { readPartitionTable } from '../diskimage/partition/readPartitionTable.js';
import { SliceDevice, WritableSliceDevice } from '../diskimage/SliceDevice.js';
import { VmdkImage } from '../diskimage/vmdk/VmdkImage.js';
import { UnsupportedError, UsageError } from '../errors.js';
import { Ext4Fs } from '../fs/ext4/Ext4Fs.js';
import { Ext4Writer, type PathChange } from '../fs/ext4/Ext4Writer.js';
import type { AllocConstraints } from '../fs/ext4/allocator.js';
import { applyUpdate, checkSpace } from '../updates/applyUpdate.js';
import { checkDirectoriesOnPaths } from '../updates/directoriesOnPaths.js';
import { createOutputWriter, emitThenCommit, formatNamedBy, layoutOf, type OutputFormat } from './outputImage.js';
import { bytesEqual, compareBytes } from '../fs/ext4/names.js';
import { nameFields, quoteName, quoteSpaced } from '../ui/quoteName.js';
import { openUpdateSource } from '../updates/openUpdateSource.js';
import { markOutputsComplete } from '../diskimage/tempFiles.js';
import { verifyImage } from './verifyImage.js';

export interface ApplyOptions {
  readonly base: string;
  readonly updates: string;
  /** OUT (may be omitted with dryRun). */
  readonly output?: string;
  /** Write OUT as an overlay on BASE (relative backing name) instead of a complete image. */
  readonly overlay?: boolean;
  /** The partition (Linux numbering) holding the filesystem to update. */
  readonly partition?: number;
  /** Do everything but write OUT. */
  readonly dryRun?: boolean;
  readonly force?: boolean;
  /** Blocks and inode numbers the writer must not allocate (the rebase's fleet-aware allocation). */
  readonly constraints?: AllocConstraints;
  /** Time given to changed objects that the update gives none (default now). */
  readonly now?: { sec: number; nsec: number };
  readonly onProgress?: (stage: 'apply' | 'write' | 'verify', done: number, total: number) => void;
  /** Read OUT back through its chain and check its filesystem, e2fsck included (verifyImage.ts): VERIFY_FAILED if it fails. */
  readonly verify?: boolean;
}

export interface ApplyResult {
  readonly base: string;
  readonly updates: string;
  readonly updateKind: 'tree' | 'tar-layers';
  readonly output: string | null;
  readonly format: 'qcow2' | 'vmdk' | 'raw';
  readonly overlay: boolean;
  readonly dryRun: boolean;
  readonly partition: number | null;
  readonly blockSize: number;
  readonly added: number;
  readonly replaced: number;
  readonly deleted: number;
  /** Entries of the update the filesystem already held as they are (left alone, not rewritten). */
  readonly unchanged: number;
  readonly bytesWritten: number;
  /** Blocks the update needs (estimate before writing) and blocks free before it. */
  readonly spaceNeededBytes: number;
  readonly spaceFreeBytes: number;
  /** Blocks and inodes allocated and freed (each operation counted: a block freed and taken again counts in both). */
  readonly blocksAllocated: number;
  readonly blocksFreed: number;
  readonly inodesAllocated: number;
  readonly inodesFreed: number;
  /** Guest bytes of the disk that differ from BASE, in filesystem blocks (an overlay: its units, 4 KiB grains for a VMDK delta), new blocks over free space counted: what an overlay stores. */
  readonly changedBytes: number;
  /** Size of OUT on the host (null with dryRun). */
  readonly fileSize: number | null;
  /** OUT was read back and checked (--verify). */
  readonly verified: boolean;
  readonly changes: readonly PathChange[];
  readonly warnings: readonly string[];
  readonly seconds: number;
}

/** The filesystem to update: where it lies on the disk. */
interface Target {
  readonly partition: number | null;
  readonly start: number;
  readonly length: number;
}

const OS_RELEASE = new TextEncoder().encode('/etc/os-release');

/**
 * The root ext4 filesystem of `disk`: the partition asked for, the only ext filesystem,
 * or the one holding /etc/os-release. Throws USAGE (no such partition, several
 * candidates and none or many hold /etc/os-release), UNSUPPORTED_FORMAT (no ext4).
 */
export async function selectRootFilesystem(disk: BlockDevice, file: string, partition: number | undefined): Promise<Target> {
  const table = await readPartitionTable(disk, { file });
  if (partition !== undefined) {
    const p = table.partitions.find((x) => x.index === partition);
    if (p === undefined) throw new UsageError(`no partition ${partition} (partitions: ${table.partitions.map((x) => x.index).join(', ') || 'none'})`, { file });
    const fs = await detectFilesystem(p.device());
    if (!isExtFilesystem(fs)) throw new UnsupportedError('UNSUPPORTED_FORMAT', { file, deviceOffset: p.startBytes, detail: `partition ${p.index} holds ${fs ?? 'no recognised filesystem'}; apply writes ext4 filesystems only` });
    return { partition: p.index, start: p.startBytes, length: p.lengthBytes };
  }
  if (table.scheme === 'none' || table.partitions.length === 0) {
    const fs = await detectFilesystem(disk);
    if (!isExtFilesystem(fs)) throw new UnsupportedError('UNSUPPORTED_FORMAT', { file, detail: `the disk holds ${fs ?? 'no recognised filesystem'}; apply writes ext4 filesystems only` });
    return { partition: null, start: 0, length: disk.size };
  }
  const candidates: Target[] = [];
  for (const p of table.partitions) {
    if (p.kind === 'extended') continue;
    if (isExtFilesystem(await detectFilesystem(p.device()))) candidates.push({ partition: p.index, start: p.startBytes, length: p.lengthBytes });
  }
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length === 0) throw new UnsupportedError('UNSUPPORTED_FORMAT', { file, detail: 'no partition holds an ext4 filesystem, which is what apply writes' });
  const roots: Target[] = [];
  for (const c of candidates) {
    const fs = await Ext4Fs.open(new SliceDevice(disk, c.start, c.length, { file }), { file: `${file}:${c.partition}` });
    if ((await fs.lookup(OS_RELEASE)) !== undefined) roots.push(c);
  }
  if (roots.length === 1) return roots[0]!;
  throw new UsageError(
    `several partitions hold ext filesystems (${candidates.map((c) => c.partition).join(', ')}) and ${roots.length === 0 ? 'none' : 'more than one'} holds /etc/os-release; name one with --partition N`,
    { file },
  );
}

/** OUT's format: BASE's, except that an overlay on a raw BASE is a qcow2 (raw has no backing file). */
function outputFormat(chain: ImageChain, overlay: boolean): OutputFormat {
  const top = chain.layers[0]!;
  return top instanceof VmdkImage ? 'vmdk' : top.format === 'raw' && !overlay ? 'raw' : 'qcow2';
}

/** The writer for OUT: complete, or an overlay on BASE at filesystem-block granularity (qcow2 clusters of one block, 4 KiB VMDK grains). */
async function outputWriter(chain: ImageChain, base: string, output: string, overlay: boolean, blockSize: number, force: boolean): Promise<ImageWriter> {
  const top = chain.layers[0]!;
  const backingName = relative(dirname(resolve(output)), resolve(base)) || basename(base);
  return createOutputWriter(outputFormat(chain, overlay), output, chain.device.size, {
    ...(overlay ? { backing: { name: backingName, format: top.format, ...(top instanceof VmdkImage ? { cid: top.cid } : {}) }, clusterSize: Math.max(512, blockSize) } : layoutOf(top)),
    ...(force ? { overwrite: true } : {}),
  });
}

/**
 * Bytes of changed blocks kept in memory before the layer spills to a temp file (the
 * page cache holds it there just as well): peak RSS stays bounded whatever the update's size.
 */
const LAYER_BUDGET_BYTES = 16 << 20;

/**
 * Applies UPDATES to BASE and writes OUT. Throws USAGE, UNSUPPORTED_FORMAT, OUTPUT_EXISTS,
 * DIRTY_FILESYSTEM / WRITE_REFUSED (a filesystem the writer must not touch), NO_SPACE,
 * BAD_UPDATE, and what reading the images throws. On failure nothing is left behind.
 */
export async function apply(options: ApplyOptions): Promise<ApplyResult> {
  const started = performance.now();
  if (!options.dryRun) {
    if (options.output === undefined) throw new UsageError('give the output with -o OUT (or use --dry-run)');
    if (resolve(options.output) === resolve(options.base)) throw new UsageError('the output cannot be BASE itself (BASE is never modified)', { file: options.output });
    await checkOutputPath(options.output, options.force ? { overwrite: true } : {});
  }
  const source = await openUpdateSource(options.updates);
  const chain = await openChain(options.base);
  if (!options.dryRun) {
    // OUT must not be any file BASE reads: replacing a backing file would change BASE itself.
    const l = await layerAtPath(chain, options.output!);
    if (l !== undefined) {
      await chain.close();
      throw new UsageError(`the output ${options.output} is ${l === chain.layers[0] ? 'BASE itself' : `in BASE's backing chain (${l.path})`}; BASE and its chain are never modified`, { file: options.output });
    }
  }
  let cow: CowDevice | undefined;
  try {
    const target = await selectRootFilesystem(chain.device, options.base, options.partition);
    cow = new CowDevice(chain.device, { memoryBudgetBytes: LAYER_BUDGET_BYTES });
    const slice = new WritableSliceDevice(cow, target.start, target.length, { file: options.base });
    const fileName = target.partition === null ? options.base : `${options.base}:${target.partition}`;
    const fsWriter = await Ext4Writer.open(slice, {
      file: fileName,
      location: { diskStart: target.start, fileIsDisk: fileIsDisk(chain) },
      ...(options.constraints ? { constraints: options.constraints } : {}),
      ...(options.now ? { now: options.now } : {}),
      writeBack: true,
    });
    const space = await checkSpace(fsWriter, source, fileName);
    await checkDirectoriesOnPaths(fsWriter, space.dirsOnPaths);
    const { summary, report } = await applyUpdate(fsWriter, source, { skipUnchanged: true, estimate: space, onProgress: (n) => options.onProgress?.('apply', n, space.entries) });
    // Blocks the writer took from free space hold new content over whatever BASE left there:
    // BASE is not read to compare them. Others (metadata rewritten, perhaps with the same bytes) are.
    const fresh = report.blocksAllocated;
    const bs = fsWriter.blockSize;
    const baseMayEqual = (offset: number, length: number): boolean => {
      if (offset < target.start || offset + length > target.start + target.length) return true;
      const first = Math.floor((offset - target.start) / bs);
      const end = Math.ceil((offset + length - target.start) / bs);
      return fresh.countIn(first, end - first) < end - first;
    };
    // An overlay counts them as it compares its units with BASE (below); otherwise they are compared here.
    let changedBytes = options.overlay && !options.dryRun ? 0 : await differingBytes(cow, chain.device, bs, baseMayEqual);
    let fileSize: number | null = null;
    const format = outputFormat(chain, options.overlay ?? false);
    if (!options.dryRun) {
      options.onProgress?.('write', 0, 1);
      const out = await outputWriter(chain, options.base, options.output!, options.overlay ?? false, fsWriter.blockSize, options.force ?? false);
      // An overlay stores only the units whose bytes changed: it compares them with BASE as it goes, and says how many.
      const { committed, stats } = await emitThenCommit(cow, out, { skipUnchanged: out.hasBacking, baseMayEqual });
      fileSize = await committed;
      if (out.hasBacking) changedBytes = (stats.unitsWritten + stats.zeroUnitsWritten) * out.unitSize;
      markOutputsComplete();
      options.onProgress?.('write', 1, 1);
      if (options.verify) {
        options.onProgress?.('verify', 0, 1);
        await verifyImage(options.output!, target);
        options.onProgress?.('verify', 1, 1);
      }
    }
    return {
      base: options.base,
      updates: options.updates,
      updateKind: source.kind,
      output: options.dryRun ? null : options.output!,
      format,
      overlay: options.overlay ?? false,
      dryRun: options.dryRun ?? false,
      partition: target.partition,
      blockSize: fsWriter.blockSize,
      added: summary.added,
      replaced: summary.replaced,
      deleted: summary.deleted,
      unchanged: summary.unchanged,
      bytesWritten: summary.bytesWritten,
      spaceNeededBytes: space.neededBytes,
      spaceFreeBytes: space.freeBytes,
      blocksAllocated: report.blockOperations.allocated,
      blocksFreed: report.blockOperations.freed,
      inodesAllocated: report.inodeOperations.allocated,
      inodesFreed: report.inodeOperations.freed,
      changedBytes,
      fileSize,
      verified: options.verify === true && options.dryRun !== true,
      changes: report.changes,
      warnings: [...summary.warnings, ...outputNameNote(options.output, format, options.overlay ?? false)],
      seconds: Math.round(performance.now() - started) / 1000,
    };
  } finally {
    await cow?.close();
    await chain.close();
  }
}

/**
 * Bytes of the written disk that differ from BASE, in `unit`-byte pieces of the ranges the
 * writer wrote: a piece `baseMayEqual` rules out counts without a read (new content over
 * free space), others are compared with BASE (a block rewritten with its own bytes is not
 * a change). What an overlay on BASE stores.
 */
async function differingBytes(cow: CowDevice, base: BlockDevice, unit: number, baseMayEqual: (offset: number, length: number) => boolean): Promise<number> {
  let changed = 0;
  /** Pieces to compare, read together while they are adjacent (a read per piece costs more than the compare). */
  let run: { offset: number; length: number } | undefined;
  const compare = async (): Promise<void> => {
    if (run === undefined) return;
    const [ours, theirs] = await Promise.all([cow.read(run.offset, run.length), base.read(run.offset, run.length)]);
    for (let at = 0; at < run.length; at += unit) {
      const n = Math.min(unit, run.length - at);
      if (!bytesEqual(ours.subarray(at, at + n), theirs.subarray(at, at + n))) changed += n;
    }
    run = undefined;
  };
  for await (const r of cow.dirtyRanges()) {
    for (let off = r.offset; off < r.offset + r.length; off += unit) {
      const n = Math.min(unit, r.offset + r.length - off);
      if (!baseMayEqual(off, n)) {
        changed += n;
        continue;
      }
      if (run !== undefined && (run.offset + run.length !== off || run.length >= COMPARE_RUN_BYTES)) await compare();
      if (run === undefined) run = { offset: off, length: n };
      else run.length += n;
    }
  }
  await compare();
  return changed;
}

/** Bytes differingBytes reads from each side at once. */
const COMPARE_RUN_BYTES = 1 << 20;

/** A note when OUT's extension names another format than the one written (an overlay on a raw BASE is a qcow2). */
function outputNameNote(output: string | undefined, format: OutputFormat, overlay: boolean): string[] {
  const named = output === undefined ? undefined : formatNamedBy(output);
  if (named === undefined || named === format) return [];
  return [`${output} is written as ${format}${overlay ? ` (an overlay${format === 'qcow2' ? ': a raw image has no backing file' : ''})` : " (BASE's format)"}, although its extension names ${named}`];
}

/** One line per path changed: its first state against its last ("A", "M", "D"), in path byte order. */
function netChanges(changes: readonly PathChange[]): Array<{ path: Uint8Array; status: 'A' | 'M' | 'D'; kind: string }> {
  const first = new Map<string, PathChange>();
  const last = new Map<string, PathChange>();
  for (const c of changes) {
    const k = Buffer.from(c.path).toString('latin1');
    if (!first.has(k)) first.set(k, c);
    last.set(k, c);
  }
  const out: Array<{ path: Uint8Array; status: 'A' | 'M' | 'D'; kind: string }> = [];
  for (const [k, f] of first) {
    const l = last.get(k)!;
    if (f.before === null && l.after === null) continue;
    const status = f.before === null ? 'A' : l.after === null ? 'D' : 'M';
    out.push({ path: f.path, status, kind: (l.after ?? f.before)!.kind });
  }
  return out.sort((a, b) => compareBytes(a.path, b.path));
}

/** The result as JSON: paths in display form (with base64 bytes where quoting was needed). */
export function applyJson(r: ApplyResult): unknown {
  const { changes, ...rest } = r;
  return { ...rest, changes: netChanges(changes).map((c) => ({ status: c.status, kind: c.kind, ...nameFields('path', c.path) })) };
}

/** Human summary: with dryRun the changed paths first, then totals and the output. */
export function formatApply(r: ApplyResult): string {
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  const lines: string[] = [];
  if (r.dryRun) for (const c of netChanges(r.changes)) lines.push(`${c.status} ${quoteSpaced(quoteName(c.path))}`);
  const where = r.partition !== null ? ` (partition ${r.partition})` : '';
  lines.push(`${r.dryRun ? 'would apply' : 'applied'} ${r.updates}${where}: ${r.added} added, ${r.replaced} replaced, ${r.deleted} deleted${r.unchanged > 0 ? `, ${r.unchanged} unchanged` : ''}; ${mib(r.bytesWritten)} of file content`);
  lines.push(`space: ${mib(r.spaceNeededBytes)} needed, ${mib(r.spaceFreeBytes)} free before; ${r.blocksAllocated} blocks allocated, ${r.blocksFreed} freed`);
  if (r.output !== null) lines.push(`output: ${r.output} (${r.overlay ? `${r.format} overlay on ${r.base}` : `complete ${r.format} image`}, ${mib(r.fileSize ?? 0)}; ${mib(r.changedBytes)} of the disk changed)${r.verified ? ', verified' : ''} in ${r.seconds.toFixed(2)} s`);
  return lines.join('\n');
}
