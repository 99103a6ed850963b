/**
 * The one abstraction everything stands on (DESIGN.md, "Architecture"): a virtual
 * disk of `size` bytes that can be read, and that tells which ranges its own layer
 * stores without reading data. Every format (raw, qcow2, vmdk) and every adapter
 * (chains, partition slices) implements it; nothing above diskimage/ knows which.
 */

/** What a layer stores for a guest byte range. Ranges not listed are not stored by the layer. */
export type ExtentKind = 'data' | 'zero';

export interface Extent {
  /** Guest byte offset. */
  readonly offset: number;
  readonly length: number;
  readonly kind: ExtentKind;
  /**
   * Where the data sits in the layer's file, when it sits there contiguously and
   * uncompressed (as `qemu-img map` reports `offset`).
   */
  readonly hostOffset?: number;
  /** The data is stored compressed. */
  readonly compressed?: boolean;
  /** Which layer of a chain stores it (0 = top). Set by ChainDevice. */
  readonly depth?: number;
}

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes at guest `offset`. Ranges this layer does not store read
   * as zeros (a ChainDevice is what falls through to backing layers).
   * Throws CORRUPT_IMAGE/TRUNCATED on malformed metadata, IO on OS errors.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: reads `target.length` bytes at guest `offset` into `target`, setting
   * every byte of it (zeros included), so a caller can reuse one buffer for many
   * reads. Devices that have it save an allocation and a copy per read; callers go
   * through readInto() in readInto.ts, which falls back to `read`.
   */
  readInto?(target: Uint8Array, offset: number): Promise<void>;
  /**
   * The ranges this layer stores, in ascending order, merged where adjacent and
   * alike, without reading data. With `range`, only extents within it (clipped).
   * Costs O(stored ranges), never O(virtual size).
   */
  allocation(range?: ByteRange): AsyncIterable<Extent>;
}

/** A BlockDevice backed by open resources. Whoever opens it closes it. */
export interface ClosableDevice extends BlockDevice {
  close(): Promise<void>;
}

/**
 * A BlockDevice that takes writes of any size and alignment (a CowDevice layer over a
 * base, or a SliceDevice of one). The ext4 writer writes through this and nothing else.
 */
export interface WritableDevice extends BlockDevice {
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Says that nothing will read `[offset, offset + length)` for what was written there (the
   * ext4 writer's freed blocks): a device may forget it, and the range then reads as what
   * lies below, or anything. A layer stores nothing for it, so freed data is neither kept
   * nor shipped in an output. Optional: a device without it keeps the bytes.
   */
  discard?(offset: number, length: number): Promise<void>;
}
