/**
 * A disk image file of some format: one layer of a backing chain. As a
 * BlockDevice it answers for its own layer only (unstored ranges read as zeros);
 * ChainDevice composes layers. Formats register an opener in openImage.ts.
 */
import type { ClosableDevice } from './BlockDevice.js';

export type ImageFormat = 'raw' | 'qcow2' | 'vmdk';

/** A reference to a backing (parent) image, as stored in the child. */
export interface BackingRef {
  /** The name as stored in the image (may be relative to the child's directory). */
  readonly name: string;
  /** The format recorded for the backing file, if any (qcow2 backing-format extension). */
  readonly format?: ImageFormat | string;
  /** Where the reference is stored in the child, for error messages. */
  readonly structure: string;
  readonly offset: number;
}

/** Format-specific facts for `info`; plain data so it renders as text or JSON. */
export type FormatDetails = Readonly<Record<string, string | number | boolean | readonly string[] | null>>;

export interface DiskImage extends ClosableDevice {
  readonly format: ImageFormat;
  /** The path it was opened from. */
  readonly path: string;
  /** Size of the image file(s) on the host, in bytes. */
  readonly fileSize: number;
  /** Allocation granularity (qcow2 cluster, vmdk grain); 512 for raw. */
  readonly clusterSize: number;
  readonly backing: BackingRef | undefined;
  readonly details: FormatDetails;
  /** Non-fatal findings made while opening (e.g. "used the backup GPT"). */
  readonly warnings: readonly string[];
  /**
   * Checks that a parent opened for `backing` is acceptable (e.g. VMDK parentCID).
   * Throws a typed error if not. Optional: formats without such a link omit it.
   */
  verifyParent?(parent: DiskImage): void;
}
