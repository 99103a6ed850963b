/**
 * What every image writer (qcow2, raw) offers to code that copies guest data into
 * a new image: writes at the writer's allocation unit, explicit zero ranges, and an
 * atomic commit. Writers own a temporary output file until commit or abort.
 */

/** What a committed writer reports. */
export interface ImageWriterSummary {
  /** The final output path. */
  readonly path: string;
  /** Size of the output file on the host, in bytes. */
  readonly fileSize: number;
  /** Guest data bytes written (zero ranges excluded). */
  readonly bytesWritten: number;
  /** Host clusters allocated for guest data (raw: units written). */
  readonly clustersWritten: number;
}

export interface ImageWriter {
  /** Virtual size in bytes. */
  readonly size: number;
  /** The granularity of write/writeZeros: the cluster, or the subcluster with extended L2. */
  readonly unitSize: number;
  /** Cluster size of the output (raw: the unit size). */
  readonly clusterSize: number;
  /** True if the image has a backing file, so unwritten ranges do not read as zeros. */
  readonly hasBacking: boolean;
  /**
   * Writes `data` at guest byte `guestOffset`. Both must be aligned to `unitSize`
   * (the length may instead end at the virtual size). Any order; rewrites allowed.
   * The writer does not keep `data` once the promise resolves: callers reuse buffers.
   * Throws INTERNAL on misaligned or out-of-range writes, IO.
   */
  write(guestOffset: number, data: Uint8Array): Promise<void>;
  /** Records that `[offset, offset+length)` reads as zeros (same alignment rules). Throws INTERNAL, IO. */
  writeZeros(offset: number, length: number): Promise<void>;
  /** Lays out the metadata, fsyncs and renames the output into place. Throws INTERNAL, IO. */
  commit(): Promise<ImageWriterSummary>;
  /** Removes the temporary output. Never throws. */
  abort(): Promise<void>;
}
