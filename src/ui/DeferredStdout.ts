/**
 * Output held back until the command has succeeded, so that a command that fails
 * half-way prints nothing on stdout (no half table, no unterminated JSON array).
 * Memory stays bounded: past `limitBytes` the text is spilled to a temporary file
 * (registered for removal on SIGINT/SIGTERM), copied to stdout on commit.
 */
import { closeSync, createReadStream, openSync, unlinkSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { registerTempFile, unregisterTempFile } from '../diskimage/tempFiles.js';
import { wrapIoError } from '../errors.js';

/** Held in memory before spilling to a file: a few MiB keeps ordinary outputs off the disk. */
const DEFAULT_LIMIT_BYTES = 8 * 1024 * 1024;
/**
 * Bytes per held chunk: text is written straight into it (no string per line kept until
 * commit, nothing joined), and a listing's line formatter writes its bytes there itself
 * (ByteSink).
 */
const CHUNK_BYTES = 64 * 1024;

/**
 * Where a formatter writes bytes without making strings: after room(n), bytes
 * buf[pos, pos + n) may be written, then pos advanced past those written.
 */
export interface ByteSink {
  buf: Buffer;
  pos: number;
  /** Makes room for `n` more bytes at buf[pos] (buf and pos may change). */
  room(n: number): void;
  /** Holds `text` (UTF-8). */
  write(text: string): void;
}

const NO_CHUNK = Buffer.alloc(0);

export class DeferredStdout implements ByteSink {
  /** Full chunks held, in order. */
  private chunks: Buffer[] = [];
  /** Bytes in `chunks`. */
  private chunkBytes = 0;
  /** The chunk being filled, and its bytes used. */
  buf: Buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  pos = 0;
  private spill: { path: string; fd: number } | undefined;
  private finished = false;

  constructor(
    private readonly limitBytes = DEFAULT_LIMIT_BYTES,
    /** Where commit() writes: stdout, or a test's stream. */
    private readonly stream: NodeJS.WritableStream = process.stdout,
  ) {}

  /** Holds `text` (UTF-8; a newline is not added). Throws IO as spilling does. */
  write(text: string): void {
    // At most 3 bytes per UTF-16 unit.
    const most = text.length * 3;
    if (most > CHUNK_BYTES) {
      this.room(0);
      this.endChunk();
      this.chunks.push(Buffer.from(text, 'utf8'));
      this.chunkBytes += this.chunks[this.chunks.length - 1]!.length;
      this.room(0);
      return;
    }
    this.room(most);
    this.pos += this.buf.write(text, this.pos, 'utf8');
  }

  /** Holds `line` plus a newline. */
  line(line: string): void {
    this.write(`${line}\n`);
  }

  /** See ByteSink. Past the memory limit, what is held goes to the spill file first. Throws IO as spilling does. */
  room(n: number): void {
    if (this.chunkBytes + this.pos >= this.limitBytes) this.spillHeld();
    if (this.pos + n <= this.buf.length) return;
    this.endChunk();
    this.buf = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, n));
  }

  /** Moves the filled part of the current chunk to `chunks` (the chunk is not written to again; room() makes the next). */
  private endChunk(): void {
    if (this.pos === 0) return;
    this.chunks.push(this.buf.subarray(0, this.pos));
    this.chunkBytes += this.pos;
    this.buf = NO_CHUNK;
    this.pos = 0;
  }

  /** Throws IO (naming the spill file) when the temporary directory is full or unwritable. */
  private spillHeld(): void {
    const path = this.spill?.path ?? join(tmpdir(), `.imgdedup-stdout-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      if (this.spill === undefined) {
        registerTempFile(path);
        this.spill = { path, fd: openSync(path, 'wx', 0o600) };
      }
      for (const c of this.chunks) writeSync(this.spill.fd, c);
      if (this.pos > 0) writeSync(this.spill.fd, this.buf, 0, this.pos);
    } catch (err) {
      throw wrapIoError(err, path, 'hold back the output in');
    }
    this.chunks = [];
    this.chunkBytes = 0;
    this.pos = 0;
  }

  /** Writes everything held to the stream, in order. */
  async commit(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.endChunk();
    // Chunk by chunk, not joined first (a copy of the whole output for nothing).
    const rest = this.chunks;
    this.chunks = [];
    if (this.spill !== undefined) {
      const { path, fd } = this.spill;
      closeSync(fd);
      try {
        for await (const chunk of createReadStream(path)) {
          if (!this.stream.write(chunk as Buffer)) await once(this.stream, 'drain');
        }
      } finally {
        this.removeSpill(path);
      }
    }
    for (const chunk of rest) if (!this.stream.write(chunk)) await once(this.stream, 'drain');
  }

  /** Drops everything held (the command failed). Safe to call after commit. */
  discard(): void {
    if (this.finished) return;
    this.finished = true;
    this.chunks = [];
    this.pos = 0;
    if (this.spill !== undefined) {
      closeSync(this.spill.fd);
      this.removeSpill(this.spill.path);
    }
  }

  private removeSpill(path: string): void {
    try {
      unlinkSync(path);
    } catch {
      // Already gone: nothing is left behind either way.
    }
    unregisterTempFile(path);
    this.spill = undefined;
  }
}
