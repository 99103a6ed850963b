/**
 * A read-only open file with positioned, bounds-checked reads. OS errors become
 * IoError naming the file; reads past the end become TRUNCATED naming the structure.
 */
import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CorruptImageError, wrapIoError } from '../errors.js';

/** Size of the concurrent pieces of a large read. */
const PARALLEL_READ_PIECE = 1024 * 1024;
/**
 * Reads up to this size are done with a synchronous pread: metadata walks issue
 * thousands of small dependent reads, and a thread-pool round trip each (tens of
 * microseconds, event-loop wake-ups, a promise) costs far more than the read itself.
 */
const SYNC_READ_MAX = 256 * 1024;

export class ImageFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    /** File size in bytes at open time. */
    readonly size: number,
  ) {}

  /** Opens `path` read-only. Throws IO (ENOENT, EACCES, ...). */
  static async open(path: string): Promise<ImageFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      throw wrapIoError(err, path, 'open');
    }
    try {
      const st = await handle.stat();
      if (st.isDirectory()) {
        throw wrapIoError(Object.assign(new Error('is a directory'), { code: 'EISDIR' }), path, 'open');
      }
      return new ImageFile(path, handle, st.size);
    } catch (err) {
      await handle.close();
      throw wrapIoError(err, path, 'stat');
    }
  }

  /**
   * Reads exactly `length` bytes at `offset`. Throws TRUNCATED (naming `structure`)
   * if the file ends first, so a corrupt length never drives an allocation past EOF.
   */
  async readExact(offset: number, length: number, structure: string): Promise<Uint8Array> {
    this.checkWithin(offset, length, structure);
    const buf = new Uint8Array(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Like readExact, into all of `buf` (a caller's reused buffer). Throws TRUNCATED, IO. */
  async readExactInto(buf: Uint8Array, offset: number, structure: string): Promise<void> {
    this.checkWithin(offset, buf.byteLength, structure);
    await this.readInto(buf, offset);
  }

  private checkWithin(offset: number, length: number, structure: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new CorruptImageError('TRUNCATED', {
        file: this.path,
        structure,
        offset,
        detail: `${length} bytes at byte ${offset} lie beyond the end of the file (${this.size} bytes)`,
      });
    }
  }

  /** Reads up to `length` bytes at `offset`; bytes past EOF are left zero. */
  async readUpTo(offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    const avail = Math.max(0, Math.min(length, this.size - offset));
    if (avail > 0) await this.readInto(buf.subarray(0, avail), offset);
    return buf;
  }

  /**
   * Fills `buf` from `offset` (which the caller has bounds-checked). Large reads are
   * split into pieces read concurrently, so the thread pool keeps several preads in
   * flight (a single large pread leaves the other cores idle).
   */
  async readInto(buf: Uint8Array, offset: number): Promise<void> {
    if (buf.byteLength <= PARALLEL_READ_PIECE * 2) return this.readPiece(buf, offset);
    const pieces: Promise<void>[] = [];
    for (let at = 0; at < buf.byteLength; at += PARALLEL_READ_PIECE) {
      const end = Math.min(buf.byteLength, at + PARALLEL_READ_PIECE);
      pieces.push(this.readPiece(buf.subarray(at, end), offset + at));
    }
    await Promise.all(pieces);
  }

  private async readPiece(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    try {
      if (buf.byteLength <= SYNC_READ_MAX) {
        while (done < buf.byteLength) {
          const bytesRead = readSync(this.handle.fd, buf, done, buf.byteLength - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
      } else {
        while (done < buf.byteLength) {
          const { bytesRead } = await this.handle.read(buf, done, buf.byteLength - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
      }
    } catch (err) {
      throw wrapIoError(err, this.path, 'read');
    }
    if (done < buf.byteLength) {
      throw new CorruptImageError('TRUNCATED', {
        file: this.path,
        offset: offset + done,
        detail: 'the file ended while reading (it shrank after it was opened?)',
      });
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
