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
 * Written text is joined into one Buffer per this many characters: the many small strings
 * of a long listing then die young instead of being kept (and copied by every garbage
 * collection) until commit.
 */
const FLATTEN_CHARS = 64 * 1024;

export class DeferredStdout {
  /** Held text, flattened. */
  private chunks: Buffer[] = [];
  /** Held text not flattened yet, and its length. */
  private pending: string[] = [];
  private pendingChars = 0;
  private held = 0;
  private spill: { path: string; fd: number } | undefined;
  private finished = false;

  constructor(
    private readonly limitBytes = DEFAULT_LIMIT_BYTES,
    /** Where commit() writes: stdout, or a test's stream. */
    private readonly stream: NodeJS.WritableStream = process.stdout,
  ) {}

  /** Holds `text` (a newline is not added). */
  write(text: string): void {
    this.pending.push(text);
    this.pendingChars += text.length;
    this.held += text.length;
    if (this.pendingChars >= FLATTEN_CHARS) this.flatten();
    if (this.held >= this.limitBytes) this.spillHeld();
  }

  private flatten(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(Buffer.from(this.pending.join(''), 'utf8'));
    this.pending = [];
    this.pendingChars = 0;
  }

  /** Holds `line` plus a newline. */
  line(line: string): void {
    this.write(`${line}\n`);
  }

  /** Throws IO (naming the spill file) when the temporary directory is full or unwritable. */
  private spillHeld(): void {
    const path = this.spill?.path ?? join(tmpdir(), `.imgdedup-stdout-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      if (this.spill === undefined) {
        registerTempFile(path);
        this.spill = { path, fd: openSync(path, 'wx', 0o600) };
      }
      this.flatten();
      for (const c of this.chunks) writeSync(this.spill.fd, c);
    } catch (err) {
      throw wrapIoError(err, path, 'hold back the output in');
    }
    this.chunks = [];
    this.held = 0;
  }

  /** Writes everything held to the stream, in order. */
  async commit(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.flatten();
    const rest = Buffer.concat(this.chunks);
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
    if (rest.length > 0 && !this.stream.write(rest)) await once(this.stream, 'drain');
  }

  /** Drops everything held (the command failed). Safe to call after commit. */
  discard(): void {
    if (this.finished) return;
    this.finished = true;
    this.chunks = [];
    this.pending = [];
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
