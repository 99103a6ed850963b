/**
 * Sparse raw image writer: the output is extended to the virtual size with
 * truncate (a hole), and only the ranges written get host blocks. Output is atomic
 * (AtomicOutput: temp name, fsync, rename).
 */
import { AtomicOutput } from '../AtomicOutput.js';
import type { ImageWriter, ImageWriterSummary } from '../ImageWriter.js';
import { InternalError, UsageError } from '../../errors.js';

export interface RawWriterOptions {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Write granularity in bytes (a power of two, at least 512). Default 64 KiB. */
  readonly unitSize?: number;
  /** Replace an existing output. Default: refuse with OUTPUT_EXISTS. */
  readonly overwrite?: boolean;
}

/** Largest zero buffer writeZeros writes at once. */
const ZERO_CHUNK = 1024 * 1024;

export class RawWriter implements ImageWriter {
  readonly hasBacking = false;
  private bytesWritten = 0;
  private unitsWritten = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(
    private readonly out: AtomicOutput,
    readonly size: number,
    readonly unitSize: number,
  ) {}

  /** Creates the temporary output, already `size` bytes long (sparse). Throws USAGE, OUTPUT_EXISTS, IO. */
  static async create(path: string, options: RawWriterOptions): Promise<RawWriter> {
    const unitSize = options.unitSize ?? 65536;
    if (!Number.isSafeInteger(options.size) || options.size < 0) throw new UsageError(`virtual size must be a non-negative integer (got ${options.size})`, { file: path });
    if (!Number.isInteger(Math.log2(unitSize)) || unitSize < 512) throw new UsageError(`unit size must be a power of two of at least 512 (got ${unitSize})`, { file: path });
    const out = await AtomicOutput.create(path, options.overwrite ? { overwrite: true } : {});
    try {
      await out.truncate(options.size);
    } catch (err) {
      await out.abort();
      throw err;
    }
    return new RawWriter(out, options.size, unitSize);
  }

  get clusterSize(): number {
    return this.unitSize;
  }

  get path(): string {
    return this.out.path;
  }

  private checkRange(op: string, offset: number, length: number): void {
    if (this.state !== 'open') throw new InternalError(`RawWriter.${op} after ${this.state === 'committed' ? 'commit' : 'abort'}`, { file: this.path });
    const end = offset + length;
    if (!(Number.isSafeInteger(offset) && offset >= 0 && length > 0 && end <= this.size && offset % this.unitSize === 0 && (length % this.unitSize === 0 || end === this.size))) {
      throw new InternalError(`RawWriter.${op}: range must lie within the disk and be aligned to ${this.unitSize} bytes`, { file: this.path, guestOffset: offset, length });
    }
  }

  async write(guestOffset: number, data: Uint8Array): Promise<void> {
    this.checkRange('write', guestOffset, data.length);
    await this.out.write(guestOffset, data);
    this.bytesWritten += data.length;
    this.unitsWritten += Math.ceil(data.length / this.unitSize);
  }

  /** Writes zeros explicitly (the range may hold data from an earlier write). */
  async writeZeros(offset: number, length: number): Promise<void> {
    this.checkRange('writeZeros', offset, length);
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, length));
    for (let pos = offset; pos < offset + length; pos += zeros.length) {
      await this.out.write(pos, zeros.subarray(0, Math.min(zeros.length, offset + length - pos)));
    }
  }

  async commit(): Promise<ImageWriterSummary> {
    if (this.state !== 'open') throw new InternalError('RawWriter.commit twice or after abort', { file: this.path });
    await this.out.commit();
    this.state = 'committed';
    return { path: this.path, fileSize: this.size, bytesWritten: this.bytesWritten, clustersWritten: this.unitsWritten };
  }

  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    await this.out.abort();
  }
}
