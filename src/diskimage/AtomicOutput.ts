/**
 * Atomic output files (DESIGN.md invariants): written under a temporary name in the
 * destination's directory, fsynced, then renamed over the destination, and the
 * directory fsynced. A crash leaves either the old file or the new one, never half.
 * The temporary name is registered in tempFiles.ts, so an interrupted process can
 * remove it.
 */
import { access, constants, lstat, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { closeSync, openSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { IoError, RefusedError, UsageError, describeOsError, wrapIoError } from '../errors.js';
import { registerTempFile, unregisterTempFile } from './tempFiles.js';

export interface AtomicOutputOptions {
  /** Replace an existing regular file at the destination. Default: refuse with OUTPUT_EXISTS. */
  readonly overwrite?: boolean;
}

/** What an existing non-regular path is, for the refusal message. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

async function lstatOrUndefined(path: string, operation: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrapIoError(err, path, operation);
  }
}

/** Refuses an existing destination that is not a regular file: renaming over it would replace a device, directory or link. */
function refuseNonRegular(path: string, st: Stats): void {
  if (!st.isFile()) {
    throw new RefusedError('OUTPUT_EXISTS', {
      file: path,
      detail: `output exists and is ${kindOf(st)}; only a regular file is ever replaced (even with --force)`,
      kind: kindOf(st),
    });
  }
}

/**
 * Checks that an output can be created at `path`, before any work is done: the name is
 * not empty and does not end in '/', an existing file there is a regular file and
 * `overwrite` is set, and the directory exists and is writable.
 * Throws USAGE (empty name, directory name), OUTPUT_EXISTS, IO (missing or unwritable directory).
 */
export async function checkOutputPath(path: string, options: AtomicOutputOptions = {}): Promise<void> {
  if (path === '') throw new UsageError('the output file name is empty');
  if (path.endsWith('/')) throw new UsageError(`the output "${path}" names a directory, not a file`, { file: path });
  const st = await lstatOrUndefined(path, 'create');
  if (st !== undefined) {
    refuseNonRegular(path, st);
    if (!options.overwrite) throw new RefusedError('OUTPUT_EXISTS', { file: path, detail: 'output file exists (use --force to replace it)' });
    return;
  }
  const dir = dirname(path);
  let dirStat: Stats;
  try {
    dirStat = await stat(dir);
  } catch (err) {
    throw new IoError({ file: path, detail: `cannot create: directory ${dir} ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `is not usable (${describeOsError(err)})`}`, ...errnoOf(err) });
  }
  if (!dirStat.isDirectory()) throw new IoError({ file: path, detail: `cannot create: ${dir} is not a directory`, errno: 'ENOTDIR' });
  try {
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new IoError({ file: path, detail: `cannot create in directory ${dir}: ${describeOsError(err)}`, ...errnoOf(err) });
  }
}

/** fsyncs directory `dir`, so the names renamed into it survive a crash. Throws what open/fsync throw. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function errnoOf(err: unknown): { errno?: string } {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? { errno: code } : {};
}

/**
 * Bytes written between background data syncs. The kernel starts writeback only when
 * dirty pages reach a share of RAM, so without these a large output is written to
 * disk all at once by commit's fsync; with them, writeback overlaps the copy.
 */
const EARLY_SYNC_BYTES = 64 * 1024 * 1024;

/** Where an image writer puts its file: AtomicOutput, or SizingOutput to learn the size only. */
export interface OutputFile {
  readonly path: string;
  write(offset: number, data: Uint8Array): Promise<void>;
  truncate(length: number): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * An output that stores nothing: a writer run through it reports the file it would make
 * (its size is the writer's own layout), without the I/O or the space. A dry run's
 * predicted overlay sizes come from it.
 */
export class SizingOutput implements OutputFile {
  constructor(readonly path: string) {}
  async write(): Promise<void> {}
  async truncate(): Promise<void> {}
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
}

export class AtomicOutput implements OutputFile {
  private closed = false;
  private unsyncedBytes = 0;
  /** The background datasync in flight, if any (at most one). */
  private earlySync: Promise<void> | undefined;
  private earlySyncError: unknown;

  private constructor(
    /** The final path. */
    readonly path: string,
    /** The temporary path being written. */
    readonly tempPath: string,
    private readonly handle: FileHandle,
  ) {}

  /**
   * Creates the temporary file next to `path`. Throws what checkOutputPath throws
   * (USAGE, OUTPUT_EXISTS, IO), and IO naming `path` if the file cannot be created.
   */
  static async create(path: string, options: AtomicOutputOptions = {}): Promise<AtomicOutput> {
    await checkOutputPath(path, options);
    const tempPath = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(4).toString('hex')}`);
    // Registered before it exists, and created synchronously: a signal handler (which removes
    // what is registered) must never run while a creation is still under way on another thread.
    registerTempFile(tempPath);
    try {
      closeSync(openSync(tempPath, 'wx', 0o644));
      // Opened again without O_CREAT: removed by an interrupt meanwhile, this fails rather than recreating it.
      const handle = await open(tempPath, 'r+');
      return new AtomicOutput(path, tempPath, handle);
    } catch (err) {
      unregisterTempFile(tempPath);
      // checkOutputPath found the directory and may write there: ENOENT on creating a new
      // name then means the filesystem makes no files (procfs, sysfs), not a missing path.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new IoError({ file: path, detail: `cannot create: the filesystem holding ${dirname(path)} does not allow creating files there`, errno: 'ENOENT' });
      }
      throw wrapIoError(err, path, 'create (writing its temporary file in the same directory)');
    }
  }

  /** Writes all of `data` at byte `offset` of the temporary file. Throws IO. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < data.byteLength) {
        const { bytesWritten } = await this.handle.write(data, done, data.byteLength - done, offset + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw wrapIoError(err, this.path, 'write');
    }
    this.unsyncedBytes += done;
    if (this.unsyncedBytes >= EARLY_SYNC_BYTES && this.earlySync === undefined && !this.closed) {
      this.unsyncedBytes = 0;
      this.earlySync = this.handle.datasync().then(
        () => {
          this.earlySync = undefined;
        },
        (err: unknown) => {
          this.earlySyncError ??= err; // reported by commit
          this.earlySync = undefined;
        },
      );
    }
  }

  /** Sets the temporary file's length (sparse extension or truncation). Throws IO. */
  async truncate(length: number): Promise<void> {
    try {
      await this.handle.truncate(length);
    } catch (err) {
      throw wrapIoError(err, this.path, 'truncate');
    }
  }

  /**
   * fsyncs the data, renames it over the destination and fsyncs the directory.
   * Throws OUTPUT_EXISTS if something other than a regular file appeared at the
   * destination meanwhile, IO otherwise.
   */
  async commit(): Promise<void> {
    let operation = 'write';
    try {
      await this.earlySync;
      if (this.earlySyncError !== undefined) throw this.earlySyncError;
      await this.handle.sync();
      await this.handle.close();
      this.closed = true;
      // Checked again: a directory or device created there since create() must not be replaced.
      const st = await lstatOrUndefined(this.path, 'replace');
      if (st !== undefined) refuseNonRegular(this.path, st);
      operation = 'rename the finished output to its name';
      await rename(this.tempPath, this.path);
      unregisterTempFile(this.tempPath);
      operation = 'sync the directory';
      await syncDirectory(dirname(this.path));
    } catch (err) {
      await this.abort();
      throw wrapIoError(err, this.path, operation);
    }
  }

  /** Removes the temporary file; the destination is untouched. Never throws. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.earlySync;
      await this.handle.close().catch(() => undefined);
    }
    await unlink(this.tempPath).catch(() => undefined);
    unregisterTempFile(this.tempPath);
  }
}
