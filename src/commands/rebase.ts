/**
 * `imgdedup rebase BASE UPDATES [CLIENT...] -o DIR`: applies the update once (T, with the
 * fleet-aware allocator: blocks and inode numbers free in BASE and in every client),
 * flattens T into the new base, and rebases every client onto it (DESIGN.md): per client
 * the three-way merge of its root filesystem (dedup/mergeClient.ts), every other region
 * taken from the client (the update changes only the root filesystem, so the per-block
 * rule gives the client's blocks there), and an overlay on the new base holding only
 * what differs from it. Inputs are never modified; outputs are written into a staging
 * directory inside DIR and renamed into DIR only when all of them are complete.
 */
import { constants as fsConstants } from 'node:fs';
import { access, readdir, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { BlockDevice } from '../diskimage/BlockDevice.js';
import { CowDevice } from '../diskimage/cow/CowDevice.js';
import { detectFilesystem, isExtFilesystem } from '../diskimage/detectFilesystem.js';
import { fileIsDisk, openChain, resolveBackingPath, type ImageChain } from '../diskimage/openChain.js';
import { openImage } from '../diskimage/openImage.js';
import { readPartitionTable, type PartitionTable } from '../diskimage/partition/readPartitionTable.js';
import { SliceDevice, WritableSliceDevice } from '../diskimage/SliceDevice.js';
import { makeTempDirSync, markOutputsComplete, registerTempFile, unregisterTempDir, unregisterTempFile } from '../diskimage/tempFiles.js';
import { syncDirectory } from '../diskimage/AtomicOutput.js';
import { VmdkImage } from '../diskimage/vmdk/VmdkImage.js';
import { VmdkImageWriter } from '../diskimage/vmdk/VmdkWriter.js';
import { ConflictError, RefusedError, UnsupportedError, UsageError, wrapIoError } from '../errors.js';
import { diffDisks } from '../blockdiff/diffDisk.js';
import { BlockRuns } from '../fs/BlockRuns.js';
import { Ext4Fs, type BlockOwnership } from '../fs/ext4/Ext4Fs.js';
import { Ext4Writer } from '../fs/ext4/Ext4Writer.js';
import { mergeClient, type ConflictPolicy, type MergeDecision, type MergeResult } from '../dedup/mergeClient.js';
import { carrySuperblock, planSuperblock, type SuperblockPlan } from '../dedup/superblockMerge.js';
import { applyUpdate, checkSpace } from '../updates/applyUpdate.js';
import { checkDirectoriesOnPaths } from '../updates/directoriesOnPaths.js';
import { openUpdateSource } from '../updates/openUpdateSource.js';
import { selectRootFilesystem } from './apply.js';
import { collectGarbage, holdYoungGeneration } from './collectGarbage.js';
import { createOutputWriter, emitAndCommit, emitThenCommit, layoutOf } from './outputImage.js';
import { sideOf } from './diff.js';
import { verifyImage } from './verifyImage.js';

export interface RebaseOptions {
  readonly base: string;
  readonly updates: string;
  /** Clients to rebase; default: every qcow2/VMDK in BASE's directory whose backing file is BASE. */
  readonly clients?: readonly string[];
  /** Output directory (default ./rebased). */
  readonly outDir?: string;
  readonly conflict?: ConflictPolicy;
  readonly partition?: number;
  readonly dryRun?: boolean;
  readonly verify?: boolean;
  readonly onProgress?: (stage: string, done: number, total: number) => void;
}

export interface ClientReport {
  readonly client: string;
  readonly output: string | null;
  readonly format: 'qcow2' | 'vmdk';
  /** Paths the update changed that this client now has as the update has them. */
  readonly filesUpdated: number;
  /** Paths the client changed that keep the client's version. */
  readonly filesKept: number;
  /** `attributes`: a directory both sides have, whose mode, owner or xattrs were kept from `kept`; its entries were merged one by one. */
  readonly conflicts: ReadonlyArray<{ readonly path: string; readonly kept: 'client' | 'update'; readonly what: 'path' | 'attributes' }>;
  readonly blocksRelocated: number;
  /** Bytes the client's own layers stored before (file sizes), and its new overlay's file size (dry run: the bytes it will hold). */
  readonly overlayBytesBefore: number;
  readonly overlayBytesAfter: number;
}

export interface RebaseResult {
  readonly base: string;
  readonly updates: string;
  readonly outDir: string;
  readonly newBase: string | null;
  /** Size of the new base's file (null with dryRun: it is not made). */
  readonly newBaseBytes: number | null;
  readonly dryRun: boolean;
  readonly partition: number | null;
  /** What the update did to the base: paths added, replaced, deleted, and left alone because the base already held them as they are. */
  readonly update: { readonly added: number; readonly replaced: number; readonly deleted: number; readonly unchanged: number; readonly bytesWritten: number };
  readonly clients: readonly ClientReport[];
  readonly totals: { readonly overlayBytesBefore: number; readonly overlayBytesAfter: number; readonly conflicts: number; readonly blocksRelocated: number };
  readonly verified: boolean;
  readonly warnings: readonly string[];
  readonly seconds: number;
}

const IMAGE_NAME = /\.(qcow2|vmdk)$/i;
/** Bytes of written data each copy-on-write layer keeps in memory before spilling. */
const LAYER_BUDGET_BYTES = 4 << 20;
/** The young generation's size (new space, both semi-spaces) held during a rebase (see holdYoungGeneration). */
const YOUNG_GENERATION_BYTES = 16 << 20;
/** A client's overlay is emitted in 1 MiB chunks: it holds scattered blocks, and eight chunk buffers (the layer's and T's) are then 8 MiB, not 32. */
const OVERLAY_EMIT = { skipUnchanged: true, chunkBytes: 1 << 20 } as const;

/** Every qcow2/VMDK file in BASE's directory whose backing file is BASE itself. */
async function discoverClients(base: string, warnings: string[]): Promise<string[]> {
  const dir = dirname(resolve(base));
  const real = await realpath(base);
  /** Each image of the directory with the real path of its backing file. */
  const parents = new Map<string, string>();
  for (const name of (await readdir(dir)).sort()) {
    const p = join(dir, name);
    if (!IMAGE_NAME.test(name) || p === resolve(base)) continue;
    const img = await openImage(p).catch((err: unknown) => {
      // Not silently: it may be a client the operator expects to see rebased.
      warnings.push(`${p} skipped: it does not open (${err instanceof Error ? err.message : String(err)})`);
      return undefined;
    });
    if (img === undefined) continue;
    try {
      if (img.backing !== undefined) {
        const backing = resolveBackingPath(p, img.backing.name);
        const parent = await realpath(backing).catch(() => '');
        if (parent === '') warnings.push(`${p} skipped: its backing file ${backing} is missing`);
        parents.set(p, parent);
      }
    } finally {
      await img.close();
    }
  }
  const out = [...parents].filter(([, parent]) => parent === real).map(([p]) => p);
  // A client with images of its own on top would be left pointing at the old client: only a
  // user who names the clients explicitly has decided what to do with those.
  for (const c of out) {
    const rc = await realpath(c);
    const child = [...parents].find(([, parent]) => parent === rc)?.[0];
    if (child !== undefined) {
      throw new RefusedError('WRONG_BASE', {
        file: c,
        detail: `client ${c} has an image of its own on top of it (${child}), which rebasing it would leave on the old client; name the clients to rebase explicitly`,
      });
    }
  }
  return out;
}

function sameTable(a: PartitionTable, b: PartitionTable): boolean {
  const key = (t: PartitionTable) => JSON.stringify([t.scheme, t.partitions.map((p) => [p.index, p.startBytes, p.lengthBytes])]);
  return key(a) === key(b);
}

/**
 * Makes sure DIR is a directory, creating it and any missing parents one level at a time
 * (Node's recursive mkdir loops forever under /proc). Returns the directories it created,
 * outermost first, registered for removal if the process is interrupted. Throws USAGE (DIR
 * exists and is not a directory), IO.
 */
async function makeOutputDir(dir: string): Promise<string[]> {
  const st = await stat(dir).catch(() => undefined);
  if (st !== undefined) {
    if (!st.isDirectory()) throw new UsageError(`-o ${dir} exists and is not a directory`, { file: dir });
    // Found now, not after the new base is made: the outputs are staged and renamed inside DIR.
    await access(dir, fsConstants.W_OK | fsConstants.X_OK).catch((err: unknown) => Promise.reject(wrapIoError(err, dir, 'write in the output directory')));
    return [];
  }
  const missing: string[] = [];
  for (let d = resolve(dir); ; d = dirname(d)) {
    if ((await stat(d).catch(() => undefined)) !== undefined) break;
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  const created: string[] = [];
  try {
    for (const d of missing) {
      try {
        makeTempDirSync(d);
      } catch (err) {
        throw wrapIoError(err, dir, 'create the output directory');
      }
      created.push(d);
    }
  } catch (err) {
    await removeEmptyDirs(created);
    throw err;
  }
  return created;
}

/** Removes the directories (innermost first) that are still empty, and forgets them. */
async function removeEmptyDirs(dirs: readonly string[]): Promise<void> {
  for (const d of [...dirs].reverse()) {
    unregisterTempDir(d);
    await rmdir(d).catch(() => undefined);
  }
}

/** Clean-state check of every ext filesystem of a client: DIRTY_FILESYSTEM naming the client. */
async function requireClean(name: string, disk: BlockDevice, table: PartitionTable): Promise<void> {
  const places = table.scheme === 'none' || table.partitions.length === 0 ? [{ label: 'the disk', start: 0, length: disk.size }] : table.partitions.filter((p) => p.kind !== 'extended').map((p) => ({ label: `partition ${p.index}`, start: p.startBytes, length: p.lengthBytes }));
  for (const pl of places) {
    const dev = new SliceDevice(disk, pl.start, pl.length, { file: name });
    if (!isExtFilesystem(await detectFilesystem(dev))) continue;
    const fs = await Ext4Fs.open(dev, { file: name, location: { diskStart: pl.start, fileIsDisk: false } });
    const dirty = await fs.writeRefusal();
    if (dirty !== undefined) {
      throw new RefusedError('DIRTY_FILESYSTEM', { file: name, structure: `ext4 (${pl.label})`, state: dirty.state, detail: `${dirty.reason}: shut the VM down cleanly or fsck it` });
    }
  }
}

/** The layers of a client's chain above BASE; throws if the chain does not reach BASE. */
async function ownLayers(client: ImageChain, name: string, baseReal: string): Promise<ImageChain['layers']> {
  const reals = await Promise.all(client.layers.map((l) => realpath(l.path).catch(() => l.path)));
  const at = reals.indexOf(baseReal);
  if (at <= 0) throw new RefusedError('WRONG_BASE', { file: name, detail: `client ${name} is not an overlay on the base (its chain: ${client.layers.map((l) => l.path).join(' -> ')})` });
  return client.layers.slice(0, at);
}

/**
 * Rebases the clients. Throws USAGE, OUTPUT_EXISTS, DIRTY_FILESYSTEM (a client's or the
 * base's filesystem is not clean), SIZE_MISMATCH (a client not on BASE, a partition table
 * that differs), MERGE_CONFLICT (`fail`), NO_SPACE, BAD_UPDATE, VERIFY_FAILED (outputs left,
 * named), and what reading the images throws. Before anything is written every input is
 * validated; on failure DIR holds no new file.
 */
export async function rebase(options: RebaseOptions): Promise<RebaseResult> {
  // Few scavenges, and peak memory bounded with a margin (see holdYoungGeneration).
  holdYoungGeneration(YOUNG_GENERATION_BYTES);
  return rebaseFleet(options);
}

async function rebaseFleet(options: RebaseOptions): Promise<RebaseResult> {
  const started = performance.now();
  const conflict = options.conflict ?? 'keep-client';
  const outDir = options.outDir ?? 'rebased';
  const warnings: string[] = [];
  const baseReal = await realpath(options.base).catch((err: unknown) => Promise.reject(wrapIoError(err, options.base, 'open')));
  const clientNames = options.clients && options.clients.length > 0 ? [...options.clients] : await discoverClients(options.base, warnings);
  if (clientNames.length === 0) warnings.push(`no client found (no qcow2/VMDK in ${dirname(resolve(options.base))} has ${basename(options.base)} as its backing file): only the new base is written`);
  const outputs = [basename(options.base), ...clientNames.map((c) => basename(c))];
  const dupes = outputs.filter((n, i) => outputs.indexOf(n) !== i);
  if (dupes.length > 0) throw new UsageError(`two inputs have the same file name (${dupes[0]}): their outputs would collide in ${outDir}`);
  if (!options.dryRun) {
    for (const n of outputs) {
      const st = await stat(join(outDir, n)).catch(() => undefined);
      if (st !== undefined) throw new RefusedError('OUTPUT_EXISTS', { file: join(outDir, n), detail: 'output exists; rebase never replaces files (choose another -o DIR)' });
    }
  }
  // DIR is checked, and created, before any work: a bad DIR must not cost an update's application.
  const createdDirs = options.dryRun ? [] : await makeOutputDir(outDir);
  const source = await openUpdateSource(options.updates).catch(async (err: unknown) => {
    await removeEmptyDirs(createdDirs);
    throw err;
  });
  const base = await openChain(options.base).catch(async (err: unknown) => {
    await removeEmptyDirs(createdDirs);
    throw err;
  });
  const clients: Array<{ name: string; chain: ImageChain; own: ImageChain['layers'] }> = [];
  const staging = join(outDir, `.imgdedup-rebase-${process.pid}`);
  const staged: string[] = [];
  /** Every output name in the staging directory (registered for removal on interrupt before it exists). */
  const namedInStaging: string[] = [];
  try {
    // 1. Validate every input before writing anything.
    const baseTable = await readPartitionTable(base.device, { file: options.base });
    const target = await selectRootFilesystem(base.device, options.base, options.partition);
    const rootName = (n: string) => (target.partition === null ? n : `${n}:${target.partition}`);
    /** Where the root lies, so that errors give the disk byte and the filesystem byte (and the file byte of a raw image). */
    const rootAt = (chain: ImageChain | null) => ({ diskStart: target.start, fileIsDisk: chain !== null && fileIsDisk(chain) });
    const baseRoot = new SliceDevice(base.device, target.start, target.length, { file: options.base });
    await requireClean(options.base, base.device, baseTable);
    // BASE's root as it is (T is a layer above it): its superblock for the clients' plans, its files for the merges.
    const baseFs = await Ext4Fs.open(baseRoot, { file: rootName(options.base), location: rootAt(base) });
    const baseSb = baseFs.superblock;
    /** Each client's own superblock settings (label, UUID, error behaviour, ...), carried into its M. */
    const superblockPlans = new Map<string, SuperblockPlan>();
    for (const name of clientNames) {
      const chain = await openChain(name, { below: base });
      clients.push({ name, chain, own: [] });
      const own = await ownLayers(chain, name, baseReal);
      clients[clients.length - 1] = { name, chain, own };
      // A rebased client is a new overlay: internal snapshots could not come along, and must not vanish unannounced.
      for (const l of own) {
        const snapshots = l.details['snapshots'];
        if (typeof snapshots === 'number' && snapshots > 0) {
          throw new UnsupportedError('UNSUPPORTED_FEATURE', {
            file: l.path,
            structure: 'qcow2.nb_snapshots',
            feature: 'internal snapshots',
            detail: `client ${name} has ${snapshots} internal snapshot(s) in ${l.path} (qemu-img snapshot -l), which a rebased client cannot keep: delete them (qemu-img snapshot -d) or copy what you need first, then rebase`,
          });
        }
      }
      if (chain.device.size !== base.device.size) throw new RefusedError('SIZE_MISMATCH', { file: name, detail: `client ${name} is ${chain.device.size} bytes, the base ${base.device.size}` });
      const table = await readPartitionTable(chain.device, { file: name });
      if (!sameTable(table, baseTable)) throw new RefusedError('SIZE_MISMATCH', { file: name, detail: `the partition table of client ${name} differs from the base's` });
      await requireClean(name, chain.device, table);
      superblockPlans.set(name, await planSuperblock(baseRoot, new SliceDevice(chain.device, target.start, target.length, { file: name }), baseSb, name));
    }
    // 2. T: the update applied once, avoiding every block and inode any client uses.
    options.onProgress?.('apply', 0, 1);
    let avoidBlocks = new BlockRuns();
    let avoidInodes = new BlockRuns();
    // Each client's filesystem is opened for this and let go: memory follows one client at a time.
    const openClientRoot = (c: (typeof clients)[number]): Promise<Ext4Fs> => Ext4Fs.open(new SliceDevice(c.chain.device, target.start, target.length, { file: c.name }), { file: rootName(c.name), location: rootAt(c.chain) });
    for (const c of clients) {
      const fs = await openClientRoot(c);
      avoidBlocks = avoidBlocks.union(await fs.layout.usedBlocks());
      avoidInodes = avoidInodes.union(await fs.layout.usedInodes());
    }
    // One memory budget for the two layers alive at a time (T and one client's M); past it they spill to temp files.
    /**
     * Outputs still being written or committed while the work goes on (the new base while the
     * clients are merged, each overlay's fsync while the next client is): all must succeed
     * before the outputs are placed, and all settle before the staging directory goes.
     */
    const background: Promise<void>[] = [];
    let backgroundFailed = false;
    const inBackground = (p: Promise<void>): void => {
      background.push(p);
      p.catch(() => {
        backgroundFailed = true;
      });
    };
    const cowT = new CowDevice(base.device, { memoryBudgetBytes: LAYER_BUDGET_BYTES });
    try {
      const tRoot = new WritableSliceDevice(cowT, target.start, target.length, { file: options.base });
      // T's writer lives only in here: its caches and report go once the update is applied.
      const { summary, updateChanged, updateOpaque } = await (async () => {
        try {
          // T is read through its writer alone until it is committed: small writes are held and each block written once.
          const tWriter = await Ext4Writer.open(tRoot, { file: rootName(options.base), location: rootAt(null), constraints: { avoidBlocks, avoidInodes }, writeBack: true });
          const space = await checkSpace(tWriter, source, rootName(options.base));
          // Damage beside what the update touches would be carried into the new base, and so into every client.
          await checkDirectoriesOnPaths(tWriter, space.dirsOnPaths);
          // What the base already holds as the update has it is left alone (the new base shares it as it is).
          const applied = await applyUpdate(tWriter, source, { skipUnchanged: true, estimate: space });
          return { summary: applied.summary, updateChanged: applied.report.changes.map((c) => c.path), updateOpaque: applied.summary.opaqueDirs };
        } catch (err) {
          // Say why the space may be short although the base has room: T avoids every block the clients use.
          if (err instanceof RefusedError && err.code === 'NO_SPACE' && clients.length > 0) {
            throw new RefusedError('NO_SPACE', {
              ...err.data,
              detail: `${String(err.data['detail'] ?? 'not enough free space')}; counted are only the blocks and inodes free in the base and in every client (${clients.length}), so that the update's files land on no client's own data (the room the whole fleet leaves free is what the update can use)`,
            });
          }
          throw err;
        }
      })();
      // What every client avoided is no longer needed.
      avoidBlocks = new BlockRuns();
      avoidInodes = new BlockRuns();
      warnings.push(...summary.warnings);
      const tFs = await Ext4Fs.open(tRoot, { file: `${rootName(options.base)} (updated)`, location: rootAt(null) });
      options.onProgress?.('apply', 1, 1);
      // 3. The new base: T, complete, in BASE's format.
      const baseTop = base.layers[0]!;
      const baseFormat = baseTop instanceof VmdkImage ? 'vmdk' : (baseTop.format as 'qcow2' | 'raw');
      let newBaseBytes = 0;
      let newBaseCid: number | undefined;
      const newBasePath = join(staging, basename(options.base));
      if (!options.dryRun) {
        try {
          makeTempDirSync(staging);
        } catch (err) {
          throw wrapIoError(err, outDir, 'create a staging directory in the output directory');
        }
        options.onProgress?.('new base', 0, 1);
        // Registered before the writer renames its temporary file to this name: an interrupt at any moment removes it.
        registerTempFile(newBasePath);
        namedInStaging.push(newBasePath);
        const w = await createOutputWriter(baseFormat, newBasePath, base.device.size, layoutOf(baseTop));
        if (w instanceof VmdkImageWriter) newBaseCid = w.cid;
        // Written while the clients are merged: the copy waits on the disk, the merges on the CPU.
        // T is not written again, and the outputs are placed only once it is complete.
        inBackground(emitAndCommit(cowT, w).then((bytes) => {
          newBaseBytes = bytes;
          staged.push(newBasePath);
          options.onProgress?.('new base', 1, 1);
        }));
      }
      const updateChangedCount = summary.added + summary.replaced + summary.deleted;
      let tOwners: Promise<BlockOwnership> | undefined;
      const updatedOwnership = (): Promise<BlockOwnership> => (tOwners ??= tFs.blockOwnership());
      /** T-against-B verdicts by path, shared by the clients (bounded by the paths the clients changed). */
      const updateSame = new Map<string, boolean>();
      // 4. Each client, one at a time (memory follows one client, whatever the fleet's size).
      const reports: ClientReport[] = [];
      /** Under --conflict fail: the clients with conflicts and their paths. */
      const conflictsFound: Array<{ client: string; paths: string[] }> = [];
      let k = 0;
      for (const c of clients) {
        options.onProgress?.('clients', k++, clients.length);
        if (backgroundFailed) await Promise.all(background); // throws the failure
        // What the previous client left behind, freed before this one's work.
        if (k > 1) collectGarbage(); // not before the first: little is left to free then
        // The client's root is opened once for its diff and its merge; the base's is the one open for all.
        const cFs = await openClientRoot(c);
        const side = await diffDisks(await sideOf(options.base, base), await sideOf(c.name, c.chain), {
          openFilesystems: [
            { side: 'a', start: target.start, length: target.length, fs: baseFs },
            { side: 'b', start: target.start, length: target.length, fs: cFs },
          ],
        });
        const fsDiff = side.filesystems.find((f) => f.startBytes === target.start);
        const cowM = new CowDevice(cowT, { memoryBudgetBytes: LAYER_BUDGET_BYTES });
        try {
          const mRoot = new WritableSliceDevice(cowM, target.start, target.length, { file: c.name });
          const clientUsedBlocks = await cFs.layout.usedBlocks();
          const clientUsedInodes = await cFs.layout.usedInodes();
          const mWriter = await Ext4Writer.open(mRoot, { file: rootName(c.name), location: rootAt(null), constraints: { avoidBlocks: clientUsedBlocks, avoidInodes: clientUsedInodes } });
          let merge: MergeResult;
          try {
            merge = await mergeClient({
              base: baseFs,
              updated: tFs,
              client: cFs,
              clientDiff: fsDiff ?? { added: [], removed: [], modified: [] },
              merged: mWriter,
              // The client's data is read from its own chain when the overlay is written: never copied into M.
              linkClientBytes: (offset, length) => cowM.link(target.start + offset, length, c.chain.device),
              conflict,
              updatedOwnership,
              updateChanged,
              updateOpaque,
              updateSame,
              name: c.name,
              decideOnly: conflictsFound.length > 0,
            });
          } catch (err) {
            // --conflict fail: every client's conflicts are found and reported together, and nothing is written.
            if (!(err instanceof ConflictError) || conflict !== 'fail') throw err;
            conflictsFound.push({ client: c.name, paths: (err.data['paths'] as string[] | undefined) ?? [] });
            continue;
          }
          // A conflict in an earlier client: this one was only checked for its own.
          if (conflictsFound.length > 0) continue;
          await mWriter.commit();
          await carrySuperblock(superblockPlans.get(c.name)!, mRoot, baseSb);
          // Every other region: the client's own blocks (the update changed only the root
          // filesystem), the partition's bytes past the filesystem's last block included.
          const fsEnd = target.start + Math.min(target.length, baseSb.s_blocks_count * baseSb.blockSize);
          for (const layer of c.own) {
            for await (const e of layer.allocation()) {
              const s = e.offset;
              const end = e.offset + e.length;
              const pieces: Array<[number, number]> = [];
              if (s < target.start) pieces.push([s, Math.min(end, target.start)]);
              if (end > fsEnd) pieces.push([Math.max(s, fsEnd), end]);
              for (const [a, b] of pieces) for (let off = a; off < b; off += 1 << 20) await cowM.write(off, await c.chain.device.read(off, Math.min(1 << 20, b - off)));
            }
          }
          const conflicts = merge.decisions.filter((d) => d.conflict).map((d: MergeDecision) => ({ path: new TextDecoder().decode(d.path), kept: d.result, what: d.attributesOnly ? ('attributes' as const) : ('path' as const) }));
          const before = c.own.reduce((n, l) => n + l.fileSize, 0);
          const format = c.chain.layers[0] instanceof VmdkImage ? 'vmdk' : 'qcow2';
          const report: { -readonly [K in keyof ClientReport]: ClientReport[K] } = {
            client: c.name,
            output: null,
            format,
            filesUpdated: Math.max(0, updateChangedCount - conflicts.filter((x) => x.kept === 'client').length),
            filesKept: merge.decisions.filter((d) => d.result === 'client').length,
            conflicts,
            blocksRelocated: merge.relocatedBlocks,
            overlayBytesBefore: before,
            overlayBytesAfter: 0,
          };
          reports.push(report);
          const overlayOptions = {
            backing: { name: basename(options.base), format: baseFormat, ...(newBaseCid !== undefined ? { cid: newBaseCid } : {}) },
            clusterSize: Math.max(4096, cFs.blockSize),
          };
          if (options.dryRun) {
            // The overlay's file as the writer would lay it out (data, tables, header), written nowhere.
            const sizing = await createOutputWriter(format, join(outDir, basename(c.name)), c.chain.device.size, { ...overlayOptions, sizeOnly: true });
            await cowM.emitTo(sizing, OVERLAY_EMIT);
            report.overlayBytesAfter = (await sizing.commit()).fileSize;
          } else {
            const outPath = join(staging, basename(c.name));
            registerTempFile(outPath);
            namedInStaging.push(outPath);
            const w = await createOutputWriter(format, outPath, c.chain.device.size, overlayOptions);
            // Committed (fsync, rename into the staging directory) while the next client is merged.
            const { committed } = await emitThenCommit(cowM, w, OVERLAY_EMIT);
            inBackground(
              committed.then((bytes) => {
                report.overlayBytesAfter = bytes;
                staged.push(outPath);
              }),
            );
            report.output = join(outDir, basename(c.name));
          }
        } finally {
          await cowM.close();
        }
      }
      options.onProgress?.('clients', clients.length, clients.length);
      if (conflictsFound.length > 0) {
        const total = conflictsFound.reduce((n, x) => n + x.paths.length, 0);
        const distinct = [...new Set(conflictsFound.flatMap((x) => x.paths))];
        throw new ConflictError({
          file: conflictsFound[0]!.client,
          detail: `${total} conflict(s) (${distinct.length} distinct path(s) changed by both a client and the update, differently) in ${conflictsFound.length} client(s): ${conflictsFound.map((x) => `${x.client} (${x.paths.length}: ${x.paths.slice(0, 3).join(', ')}${x.paths.length > 3 ? ', ...' : ''})`).join('; ')}; nothing was written`,
          clients: conflictsFound,
          paths: distinct,
        });
      }
      await Promise.all(background);
      // 5. All complete: into DIR.
      if (!options.dryRun) {
        // All or none: an output already moved stays registered (removed on SIGINT/SIGTERM) until every one is in DIR.
        const placed: string[] = [];
        // The new base first: a client is never in DIR without the base it names.
        for (const p of [...staged].sort((x, y) => Number(y === newBasePath) - Number(x === newBasePath))) {
          const dest = join(outDir, basename(p));
          registerTempFile(dest);
          placed.push(dest);
          await rename(p, dest);
          unregisterTempFile(p);
        }
        await syncDirectory(outDir).catch((err: unknown) => Promise.reject(wrapIoError(err, outDir, 'sync the output directory')));
        for (const d of placed) unregisterTempFile(d);
        markOutputsComplete();
        await rm(staging, { recursive: true, force: true });
        unregisterTempDir(staging);
        for (const d of createdDirs) unregisterTempDir(d);
      }
      let verified = false;
      if (options.verify && !options.dryRun) {
        await verifyOutputs(join(outDir, basename(options.base)), reports.map((r) => r.output!), target);
        verified = true;
      }
      return {
        base: options.base,
        updates: options.updates,
        outDir,
        newBase: options.dryRun ? null : join(outDir, basename(options.base)),
        newBaseBytes: options.dryRun ? null : newBaseBytes,
        dryRun: options.dryRun ?? false,
        partition: target.partition,
        update: { added: summary.added, replaced: summary.replaced, deleted: summary.deleted, unchanged: summary.unchanged, bytesWritten: summary.bytesWritten },
        clients: reports,
        totals: {
          overlayBytesBefore: reports.reduce((n, r) => n + r.overlayBytesBefore, 0),
          overlayBytesAfter: reports.reduce((n, r) => n + r.overlayBytesAfter, 0),
          conflicts: reports.reduce((n, r) => n + r.conflicts.length, 0),
          blocksRelocated: reports.reduce((n, r) => n + r.blocksRelocated, 0),
        },
        verified,
        warnings: [...base.warnings, ...warnings],
        seconds: Math.round(performance.now() - started) / 1000,
      };
    } finally {
      // A failure while the new base is being written: it finishes (or fails) before T and the staging directory go.
      await Promise.allSettled(background);
      await cowT.close();
    }
  } catch (err) {
    for (const p of namedInStaging) unregisterTempFile(p);
    await rm(staging, { recursive: true, force: true });
    unregisterTempDir(staging);
    await removeEmptyDirs(createdDirs);
    throw err;
  } finally {
    for (const c of clients) await c.chain.close();
    await base.close();
  }
}

/**
 * Reads every output back through its new chain and checks its root filesystem
 * (verifyImage). Throws VERIFY_FAILED naming the output.
 */
async function verifyOutputs(newBase: string, clients: readonly string[], target: { start: number; length: number; partition: number | null }): Promise<void> {
  for (const out of [newBase, ...clients]) await verifyImage(out, target);
}

/** The result as JSON (already plain data). */
export function rebaseJson(r: RebaseResult): unknown {
  return r;
}

/** Human summary, like a deduplicating backup tool's statistics. */
export function formatRebase(r: RebaseResult): string {
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  const lines: string[] = [];
  lines.push(`${r.dryRun ? 'plan' : 'rebased'}: update ${r.updates} (${r.update.added} added, ${r.update.replaced} replaced, ${r.update.deleted} deleted${r.update.unchanged > 0 ? `, ${r.update.unchanged} unchanged` : ''})`);
  if (r.newBase !== null && r.newBaseBytes !== null) lines.push(`new base: ${r.newBase} (${mib(r.newBaseBytes)})`);
  for (const c of r.clients) {
    lines.push(
      `  ${c.client}: ${c.filesUpdated} updated, ${c.filesKept} kept as the client's, ${c.conflicts.length} conflict(s), ${c.blocksRelocated} block(s) relocated; overlay ${mib(c.overlayBytesBefore)} -> ${mib(c.overlayBytesAfter)}${r.dryRun ? ' (predicted)' : ''}`,
    );
    for (const x of c.conflicts) lines.push(x.what === 'attributes' ? `    conflict ${x.path}: kept the ${x.kept}'s mode, owner and xattrs (the directory's entries were merged one by one)` : `    conflict ${x.path}: kept the ${x.kept}'s version`);
  }
  lines.push(`total stored in overlays: ${mib(r.totals.overlayBytesBefore)} -> ${mib(r.totals.overlayBytesAfter)}${r.verified ? '; outputs verified' : ''} (${r.seconds.toFixed(1)} s)`);
  return lines.join('\n');
}
