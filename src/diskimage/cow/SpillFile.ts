/**
 * Where a copy-on-write layer puts data past its memory budget: a sparse temporary
 * file in which guest byte X is stored at file byte X, so an overwrite replaces
 * bytes in place and the file never holds more than one copy of a guest range.
 *
 * The file is unlinked as soon as it is open (synchronously, in the same tick), so it
 * disappears on every exit path, a SIGKILL included. The file system must allow a sparse
 * file as large as the highest guest byte spilled (ext4 with 4 KiB blocks: 16 TiB).
 *
 * Reads and writes are synchronous: each is a page-cache copy, which costs less than
 * the thread-pool round trip and event-loop wake-up of an asynchronous call, and the
 * layer's callers wait for each one anyway.
 */
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { InternalError, wrapIoError } from '../../errors.js';

export class SpillFile {
  private fd: number | undefined;
  private closed = false;
  /** The name the file had before it was unlinked (for error messages). */
  readonly path: string;

  constructor(dir: string = tmpdir()) {
    this.path = join(dir, `.imgdedup-cow-${randomBytes(8).toString('hex')}.tmp`);
  }

  /** True once the file exists (something was spilled). */
  get isOpen(): boolean {
    return this.fd !== undefined;
  }

  /**
   * The file, created and unlinked at once, synchronously: no signal handler can run
   * between the two (an asynchronous open let SIGINT's cleanup run before the file existed,
   * and a 0-byte file stayed behind).
   */
  private file(): number {
    if (this.closed) throw new InternalError('SpillFile used after close', { file: this.path });
    if (this.fd !== undefined) return this.fd;
    let fd: number;
    try {
      fd = openSync(this.path, 'wx+', 0o600);
    } catch (err) {
      throw wrapIoError(err, this.path, 'create the copy-on-write spill file');
    }
    try {
      unlinkSync(this.path);
    } catch (err) {
      closeSync(fd);
      throw wrapIoError(err, this.path, 'unlink the copy-on-write spill file');
    }
    this.fd = fd;
    return fd;
  }

  /** Stores `data` for guest bytes starting at `guestOffset`. Throws IO. */
  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    const fd = this.file();
    try {
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, data.length - done, guestOffset + done);
    } catch (err) {
      throw wrapIoError(err, this.path, 'write the copy-on-write spill file');
    }
  }

  /** Reads the bytes stored for `[guestOffset, guestOffset + into.length)` into `into`. Throws IO, INTERNAL if short. */
  async readInto(into: Uint8Array, guestOffset: number): Promise<void> {
    const fd = this.file();
    let done = 0;
    try {
      while (done < into.length) {
        const bytesRead = readSync(fd, into, done, into.length - done, guestOffset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (err) {
      throw wrapIoError(err, this.path, 'read the copy-on-write spill file');
    }
    // Every spilled range was written before it is read; a short read is our bug.
    if (done !== into.length) throw new InternalError('copy-on-write spill file is shorter than a spilled range', { file: this.path, guestOffset, length: into.length });
  }

  /** Closes (and so frees) the file. Idempotent; never throws. */
  async close(): Promise<void> {
    this.closed = true;
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // Already gone: nothing to free.
      }
    }
  }
}
