/**
 * Atomic output files (DESIGN.md invariants): written under a temporary name in the
 * destination's directory, fsynced, then renamed over the destination, and the
 * directory fsynced. A crash leaves either the old file or the new one, never half.
 */
import { open, rename, unlink, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RefusedError, wrapIoError } from '../errors.js';

export interface AtomicOutputOptions {
  /** Replace an existing destination. Default: refuse with OUTPUT_EXISTS. */
  readonly overwrite?: boolean;
}

/**
 * Bytes written between background data syncs. The kernel starts writeback only when
 * dirty pages reach a share of RAM, so without these a large output is written to
 * disk all at once by commit's fsync; with them, writeback overlaps the copy.
 */
const EARLY_SYNC_BYTES = 64 * 1024 * 1024;

export class AtomicOutput {
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
   * Creates the temporary file next to `path`. Throws OUTPUT_EXISTS if `path` exists
   * and `overwrite` is not set, IO otherwise.
   */
  static async create(path: string, options: AtomicOutputOptions = {}): Promise<AtomicOutput> {
    if (!options.overwrite) {
      const exists = await stat(path).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw wrapIoError(err, path, 'stat');
        },
      );
      if (exists) throw new RefusedError('OUTPUT_EXISTS', { file: path, detail: 'output file exists (use --force to replace it)' });
    }
    const tempPath = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(4).toString('hex')}`);
    try {
      const handle = await open(tempPath, 'wx', 0o644);
      return new AtomicOutput(path, tempPath, handle);
    } catch (err) {
      throw wrapIoError(err, tempPath, 'create');
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

  /** fsyncs the data, renames it over the destination and fsyncs the directory. Throws IO. */
  async commit(): Promise<void> {
    try {
      await this.earlySync;
      if (this.earlySyncError !== undefined) throw this.earlySyncError;
      await this.handle.sync();
      await this.handle.close();
      this.closed = true;
      await rename(this.tempPath, this.path);
      const dir = await open(dirname(this.path), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (err) {
      await this.abort();
      throw wrapIoError(err, this.path, 'commit');
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
  }
}
